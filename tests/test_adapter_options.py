"""Adapters' [options] read against their declared schemas: values with their types and
defaults, errors naming table and key, and every adapter's keys described."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field
from pydantic.dataclasses import dataclass
from typer.testing import CliRunner

from dutylink.adapters.options import (
    OPTIONS,
    AdapterConfigError,
    Count,
    FilePath,
    Flag,
    Names,
    Positive,
    Table,
    Text,
    read,
)
from dutylink.adapters.registry import adapter_kinds
from gateway.cli.main import app


@dataclass(frozen=True, config=OPTIONS)
class Example:
    directory: FilePath
    name: Text = "x"
    poll_seconds: Positive = 1.0
    batch_size: Count = 500
    patterns: Names = ()
    allow_remote: Flag = False
    format: Literal["jsonl", "csv"] = "jsonl"
    fields: Table = Field(default_factory=dict)


def test_values_are_read_with_their_types_and_defaults() -> None:
    read_back = read(Example, {"directory": "d", "poll_seconds": 2, "patterns": ["*.csv"]})
    assert read_back == Example(Path("d"), poll_seconds=2.0, patterns=("*.csv",))
    assert read_back.batch_size == 500 and read_back.format == "jsonl"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"directory": "d", "x": 1}, "[options] unknown key 'x' (expected one of allow_remote, batch_size, directory, fields, format, name, patterns, poll_seconds)"),
        ({"directory": "d", "fields": 1}, "[options] fields: must be a table"),
        ({}, "[options] directory: required, a path"),
        ({"directory": ""}, "[options] directory: must be a path"),
        ({"directory": "d", "name": ""}, "[options] name: must be a non-empty string"),
        ({"directory": "d", "poll_seconds": 0}, "[options] poll_seconds: must be a number greater than 0"),
        ({"directory": "d", "batch_size": True}, "[options] batch_size: must be a whole number of at least 1"),
        ({"directory": "d", "batch_size": 2.5}, "[options] batch_size: must be a whole number of at least 1"),
        ({"directory": "d", "patterns": [""]}, "[options] patterns: must be a list of non-empty strings"),
        ({"directory": "d", "allow_remote": "yes"}, "[options] allow_remote: must be true or false"),
        ({"directory": "d", "format": "xml"}, "[options] format: 'xml' is not one of jsonl, csv"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_table_and_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(AdapterConfigError) as refused:
        read(Example, values)
    assert str(refused.value) == message


def test_terse_wording_states_what_is_expected_without_must_be() -> None:
    with pytest.raises(AdapterConfigError, match=r"^\[options.inbound\]: unknown key 'tolerance'"):
        read(Example, {"directory": "d", "tolerance": 5}, "[options.inbound]", terse=True)
    with pytest.raises(
        AdapterConfigError, match=r"^\[options.inbound\] batch_size: a whole number"
    ):
        read(Example, {"directory": "d", "batch_size": 0}, "[options.inbound]", terse=True)
    with pytest.raises(AdapterConfigError, match=r"^\[options.inbound\]: must be a table"):
        read(Example, ["d"], "[options.inbound]")


SCHEMAS = [
    ("dutylink.adapters.cap.adapter", ("CapOptions", "CapInbound", "CapOutbound")),
    (
        "dutylink.adapters.filedrop.adapter",
        ("FiledropOptions", "FiledropInbound", "FiledropOutbound"),
    ),
    (
        "dutylink.adapters.dispatch.adapter",
        ("Cad110Options", "Dispatch119Options", "DispatchOutbound"),
    ),
    ("dutylink.adapters.edxl.adapter", ("EdxlOptions", "EdxlInbound", "EdxlOutbound")),
    (
        "dutylink.adapters.webhook.options",
        ("WebhookOptions", "InboundSettings", "OutboundOptions", "RetryOptions"),
    ),
    ("dutylink.adapters.mapping", ("MappingOptions",)),
    ("dutylink.adapters.runner", ("AdapterSection", "AdapterTls")),
]


@pytest.mark.parametrize(("module", "names"), SCHEMAS)
def test_every_adapter_key_is_declared_with_a_description(
    module: str, names: tuple[str, ...]
) -> None:
    """The schema is the adapter's reference: a key nobody described is a key nobody can use."""
    for name in names:
        fields = getattr(importlib.import_module(module), name).__pydantic_fields__
        undescribed = [key for key, field in fields.items() if not field.description]
        assert not undescribed, f"{module}.{name}: {undescribed}"


def test_every_adapter_kind_refuses_an_unknown_key_naming_it() -> None:
    for kind in adapter_kinds().values():
        with pytest.raises(AdapterConfigError, match="unknown key 'colour'"):
            kind.build({"colour": "red"}, Path("state"))


def test_adapter_options_prints_each_adapters_file_with_every_key() -> None:
    runner = CliRunner()
    for name, kind in adapter_kinds().items():
        printed = runner.invoke(app, ["adapter", "options", name])
        assert printed.exit_code == 0, printed.output
        tomllib.loads(printed.output)  # a file to start from: valid TOML
        for _, schema in kind.tables:
            for key, field in schema.__pydantic_fields__.items():
                if not isinstance(field.get_default(call_default_factory=True), dict | list):
                    assert f"{key} = " in printed.output, (name, key)  # sub-tables aside
        assert "[adapter]" in printed.output and "state_dir" in printed.output
    unknown = runner.invoke(app, ["adapter", "options", "nope"])
    assert unknown.exit_code == 2 and "no adapter named 'nope'" in unknown.stderr
