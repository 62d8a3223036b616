"""The configuration's one schema: every value checked at load (before anything connects), the
example file and the JSON schema generated from it."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import config
from gateway.cli.main import app
from gateway.core.settings import SECTIONS, ConfigError, NatsSettings, schema_fields
from gateway.core.settings_docs import render_example


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DUTYLINK_NATS_DURABILITY", "maybe", "expected one of refuse, warn, got 'maybe'"),
        ("DUTYLINK_AUDIT_STORE_MISMATCH", "ignore", "expected one of refuse, read-only"),
        ("DUTYLINK_TLS_CRL_UNUSABLE", "skip", "expected one of refuse, last_good"),
        ("DUTYLINK_TELEMETRY_TRACES", "jaeger", "expected one of off, otlp"),
        ("DUTYLINK_TELEMETRY_TRACE_SAMPLE_RATIO", "2", "must be at most 1"),
        ("DUTYLINK_TELEMETRY_OTLP_ENDPOINT", "127.0.0.1:4317", "expected http://HOST:PORT"),
        ("DUTYLINK_NATS_STREAM_REPLICAS", "0", "must be at least 1"),
        ("DUTYLINK_GATEWAY_REFLECTION", "perhaps", "expected bool"),
        ("DUTYLINK_GATEWAY_WORKERS", "-1", "must be at least 0"),
    ],
)
def test_a_choice_or_bound_is_checked_at_load_naming_the_variable(
    variable: str, value: str, message: str
) -> None:
    """`nats.durability` used to be checked only once connected to NATS."""
    with pytest.raises(ConfigError, match=rf"^{variable}: {message}"):
        config.load(None, environ={variable: value})


def test_the_same_checks_hold_for_values_made_in_code() -> None:
    """Layers that build settings themselves (tests, the bench) get the same checks."""
    with pytest.raises(ValueError, match="durability"):
        NatsSettings(durability="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stream_replicas"):
        dataclasses.replace(NatsSettings(), stream_replicas=0)


def test_an_unknown_agency_key_or_a_missing_name_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text('[[agencies]]\nid = "fire"\nname = "Fire"\ntoken = "t"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match=r"dutylink\.toml: agencies\[0\]: unknown key 'colour'"):
        config.load(path, environ={})
    path.write_text('[[agencies]]\nid = "fire"\ntoken = "t"\n')
    with pytest.raises(ConfigError, match=r"agencies\[0\]: 'name' is required"):
        config.load(path, environ={})


def test_the_example_file_is_the_schema_rendered_and_loads_as_the_defaults() -> None:
    example = render_example()
    assert (config.SAMPLE_AGENCIES.parents[1] / "deploy" / "dutylink.example.toml").read_text(
        encoding="utf-8"
    ) == example, "stale: run python tools/render_deploy.py"
    raw = tomllib.loads(example)
    for name, cls in SECTIONS.items():
        fields = schema_fields(cls)
        assert set(raw[name]) == set(fields), name
        described = [key for key, field in fields.items() if field.description]
        assert described == list(fields), f"{name}: a key without a description"


def test_config_example_and_schema_print_what_editors_and_operators_use() -> None:
    runner = CliRunner()
    example = runner.invoke(app, ["config", "example"])
    assert example.exit_code == 0 and example.output == render_example()
    printed = runner.invoke(app, ["config", "schema"])
    assert printed.exit_code == 0
    schema = json.loads(printed.output)
    assert set(schema["properties"]) == {*SECTIONS, "agencies"}
    assert schema["additionalProperties"] is False
    nats = schema["$defs"]["NatsSettings"]
    assert nats["additionalProperties"] is False
    assert nats["properties"]["url"]["writeOnly"] is True
    assert nats["properties"]["durability"]["enum"] == ["refuse", "warn"]
