"""The example configuration and the JSON schema, generated from the settings' schema
(gateway.core.settings): every section and key with its default and its description, so the
documented file can never drift from what the gateway reads. `tools/render_deploy.py` writes it
to deploy/dutylink.example.toml (checked fresh by `bootstrap.py check`); `dutylink config
example` and `dutylink config schema` print them.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from pydantic import SecretStr, TypeAdapter
from pydantic.fields import FieldInfo

from gateway.core.settings import SECTIONS, Agency, Config, schema_fields

WIDTH = 99
HEADER = """\
# DutyLink gateway configuration: every key with its default. Any key can also be set with an
# environment variable DUTYLINK_<SECTION>_<KEY>, e.g. DUTYLINK_NATS_URL (an array as
# comma-separated words); command-line flags (--listen, --data-dir, --nats-url) win over both.
# Unknown sections, keys and DUTYLINK_* variables are errors. `dutylink config schema` prints the
# JSON schema of this file.
#
# Generated from gateway/core/settings.py by tools/render_deploy.py: edit the schema, not this.
"""
# The agencies of the example: one with an agency's rights, one with the command role.
EXAMPLE_AGENCIES = (
    Agency("fire", "Fire and Rescue (119)", SecretStr("replace-with-a-long-random-secret")),
    Agency(
        "command",
        "Joint Command Centre",
        SecretStr("replace-with-another-long-random-secret"),
        ("command",),
    ),
)
AGENCIES_NOTE = (
    "Agencies and their API tokens (tokens only without [tls]). Without any [[agencies]] the "
    "gateway serves the sample agencies of gateway/sample_agencies.toml with public "
    "development tokens."
)


def _comment(text: str) -> list[str]:
    """`text` as comment lines, its paragraphs' words rewrapped."""
    return [f"# {line}" for line in textwrap.wrap(" ".join(text.split()), WIDTH - 2)]


def toml_value(value: Any) -> str:
    """A default as TOML writes it."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _default_lines(name: str, field: FieldInfo) -> list[str]:
    """A key of a declared table with its default; a required key, one without a default
    (None) and a sub-table (a dict) as comments, since TOML has no value that says so."""
    if field.is_required():
        return [f"# {name} = ...  (required)"]
    default = field.get_default(call_default_factory=True)
    if default is None:
        return [f"# {name} = ...  (optional)"]
    if isinstance(default, dict | list):
        return []  # sub-tables: their own [table] or [[table]], or free-form
    return [f"{name} = {toml_value(default)}"]


def render_table(name: str, cls: type[Any]) -> list[str]:
    """One declared table as example TOML: `[name]`, what it is, then each key with what it
    does and its default."""
    lines = [f"[{name}]", *_comment(cls.__doc__ or ""), ""]
    for key, field in schema_fields(cls).items():
        lines.extend(_comment(field.description or ""))
        lines.extend([*_default_lines(key, field), ""])
    return lines


def render_example() -> str:
    """deploy/dutylink.example.toml as it should read."""
    lines = [HEADER]
    for name, cls in SECTIONS.items():
        lines.extend(render_table(name, cls))
    lines.extend(_comment(AGENCIES_NOTE))
    for index, agency in enumerate(EXAMPLE_AGENCIES):
        lines.append("[[agencies]]")
        for key, field in schema_fields(Agency).items():
            described = index == 0  # the keys' descriptions once, spaced as in the tables
            lines.extend(_comment(field.description or "") if described else [])
            lines.extend([f"{key} = {toml_value(getattr(agency, key))}", *([""] if described else [])])  # fmt: skip
        if index:
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def render_schema() -> str:
    """The configuration file's JSON schema (secrets marked writeOnly, format password)."""
    schema = TypeAdapter(Config).json_schema()
    schema["properties"].pop("agencies_source", None)  # where they came from, not a key
    schema["title"] = "DutyLink gateway configuration"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
