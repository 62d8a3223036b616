"""The generic file-drop adapter: a department system that writes JSON Lines or CSV files joins
the exchange with a config file and no code (see adapters/filedrop/README.md).

    [options.inbound]
    directory = "drop/gas"        # the inbox (same filesystem as [adapter] state_dir)
    format = "csv"                # "jsonl" (one JSON object a line) or "csv" (a header row)
    patterns = ["*.csv"]          # default: *.jsonl and *.ndjson, or *.csv
    poll_seconds = 1.0
    batch_size = 500              # records per progress checkpoint

    [options.mapping]             # dutylink.adapters.mapping.JsonMapping: record -> event

    [options.outbound]            # optional: events out as files
    subscription = "gas-out"
    families = ["incident"]       # and/or exact types = ["warning.alert"]
    jurisdictions = ["3101"]      # division-code prefixes; default all
    from_agencies = ["police"]    # only these publishers; default all (your own events too)
    directory = "outbox/gas"
    format = "jsonl"              # one <source>.<event id>.json each, or "csv": one .csv each
    [options.outbound.fields]     # column or key = event field path; required for csv
    incident_id = "incident.incident_id"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, Strict
from pydantic.dataclasses import dataclass

from dutylink.adapters.filedrop.mapping import outbound_mapping
from dutylink.adapters.framework import AdapterKind, AdapterPlan, Outbound, Subscription
from dutylink.adapters.mapping import JsonMapping, MappingError, MappingOptions
from dutylink.adapters.options import (
    OPTIONS,
    AdapterConfigError,
    Count,
    Expect,
    FilePath,
    Names,
    Positive,
    Table,
    Text,
    read,
)
from dutylink.adapters.records import Record
from dutylink.adapters.transports import (
    DirectorySink,
    DirectorySource,
    Splitter,
    UnreadableFileError,
    split_csv,
    split_json_lines,
)


def split_utf8_json_lines(name: str, data: bytes) -> list[Record]:
    """JSON Lines (RFC 8259 JSON is UTF-8): a file in another encoding, say a GBK export, is
    refused whole rather than line by line, so it is never half published."""
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnreadableFileError(f"not UTF-8 text: {error}") from None
    return split_json_lines(name, data)


FORMATS: dict[str, tuple[tuple[str, ...], Splitter]] = {
    "jsonl": (("*.jsonl", "*.ndjson"), split_utf8_json_lines),
    "csv": (("*.csv",), split_csv),
}


# --- options ----------------------------------------------------------------------------------


@dataclass(frozen=True, config=OPTIONS)
class FiledropOptions:
    """Give [options.inbound] (with [options.mapping]), [options.outbound] or both."""

    inbound: Table = Field(default_factory=dict)
    """[options.inbound]: files in."""
    mapping: Table = Field(default_factory=dict)
    """[options.mapping]: record -> event (dutylink.adapters.mapping.JsonMapping); required with inbound."""
    outbound: Table = Field(default_factory=dict)
    """[options.outbound]: events out as files."""


@dataclass(frozen=True, config=OPTIONS)
class DropInbound:
    """[options.inbound] of every file-fed adapter: an inbox directory polled for files."""

    # Descriptions as Field arguments, not strings under the keys: a subclass's schema (the
    # file-drop adapter's own) reads only its own class's strings.
    directory: FilePath = Field(
        description="The inbox (on the same filesystem as [adapter] state_dir)."
    )
    patterns: Names = Field((), description="File name patterns taken; default: the format's own.")  # fmt: skip
    poll_seconds: Positive = Field(1.0, description="How often the inbox is looked at.")
    batch_size: Count = Field(500, description="Records per progress checkpoint.")


@dataclass(frozen=True, config=OPTIONS)
class FiledropInbound(DropInbound):
    format: Literal["jsonl", "csv"] = "jsonl"
    """"jsonl": one JSON object a line (*.jsonl, *.ndjson); "csv": a header row (*.csv)."""


FieldPaths = Annotated[
    dict[str, Annotated[str, Strict(), Field(min_length=1)]],
    Expect("a table of event field paths"),
]


@dataclass(frozen=True, config=OPTIONS)
class FiledropOutbound:
    """Events out as files, one per event."""

    directory: FilePath
    """The outbox: one file per event, written atomically."""
    subscription: Text = "filedrop-out"
    """The durable subscription's name: delivery resumes where it stopped."""
    families: Names = ()
    """Event families: "incident", "resource", "warning" (a union with types)."""
    types: Names = ()
    """Exact event types, e.g. "warning.alert"."""
    jurisdictions: Names = ()
    """Division-code prefixes; empty: all."""
    from_agencies: Names = ()
    """Only events these agencies published; empty: all (your own events too)."""
    format: Literal["jsonl", "csv"] = "jsonl"
    """"jsonl": one <source>.<event id>.json each; "csv": one .csv each."""
    fields: FieldPaths = Field(default_factory=dict)
    """[options.outbound.fields]: key or column = event field path; required for csv."""


def drop_source(
    inbound: DropInbound, state_dir: Path, patterns: Sequence[str], split: Splitter
) -> DirectorySource:
    """The DirectorySource every file-fed adapter here uses, its state in `<state>/drop/`."""
    return DirectorySource(
        inbound.directory,
        state_dir / "drop",
        inbound.patterns or tuple(patterns),
        split,
        poll_seconds=inbound.poll_seconds,
        batch_size=inbound.batch_size,
    )


def build(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = read(FiledropOptions, values)
    if not options.inbound and not options.outbound:
        raise AdapterConfigError("[options] give [options.inbound], [options.outbound] or both")
    plan = AdapterPlan()
    if options.inbound:
        inbound = read(FiledropInbound, options.inbound, "[options.inbound]")
        patterns, split = FORMATS[inbound.format]
        if "mapping" not in values:
            raise AdapterConfigError("[options.mapping] is required with [options.inbound]")
        try:
            plan.inbound = JsonMapping.from_options(options.mapping).to_events
        except MappingError as error:
            raise AdapterConfigError(str(error)) from None
        plan.sources.append(drop_source(inbound, state_dir, patterns, split))
    if options.outbound:
        plan.outbound.append(_outbound(read(FiledropOutbound, options.outbound, "[options.outbound]")))  # fmt: skip
    return plan


def _outbound(outbound: FiledropOutbound) -> Outbound:
    where = "[options.outbound]"
    if outbound.format == "csv" and not outbound.fields:
        raise AdapterConfigError(f'{where} fields: required with format = "csv" (the columns)')
    if not outbound.families and not outbound.types:
        raise AdapterConfigError(f"{where} give families, types or both")
    return Outbound(
        Subscription(
            outbound.subscription,
            families=outbound.families,
            types=outbound.types,
            jurisdiction_prefixes=outbound.jurisdictions,
        ),
        outbound_mapping(outbound.format, outbound.fields, outbound.from_agencies),
        DirectorySink(outbound.directory),
    )


KIND = AdapterKind(
    name="filedrop",
    description="Any department system: JSON Lines or CSV files in (declarative mapping), JSON or CSV files out",
    build=build,
    tables=(
        ("options", FiledropOptions),
        ("options.inbound", FiledropInbound),
        ("options.mapping", MappingOptions),
        ("options.outbound", FiledropOutbound),
    ),
)
