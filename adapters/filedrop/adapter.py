"""The generic file-drop adapter: a department system that writes JSON Lines or CSV files joins
the exchange with a config file and no code (see adapters/filedrop/README.md).

    [options.inbound]
    directory = "drop/gas"        # the inbox (same filesystem as [adapter] state_dir)
    format = "csv"                # "jsonl" (one JSON object a line) or "csv" (a header row)
    patterns = ["*.csv"]          # default: *.jsonl and *.ndjson, or *.csv
    poll_seconds = 1.0
    batch_size = 500              # records per progress checkpoint

    [options.mapping]             # adapters.mapping.JsonMapping: record -> event

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
from typing import Any

from adapters.filedrop.mapping import outbound_mapping
from adapters.framework import AdapterKind, AdapterPlan, Outbound, Subscription
from adapters.mapping import JsonMapping, MappingError
from adapters.options import AdapterConfigError, Options
from adapters.records import Record
from adapters.transports import (
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
OUT_FORMATS = ("jsonl", "csv")
INBOUND_KEYS = ("directory", "patterns", "poll_seconds", "batch_size")
OUTBOUND_KEYS = (
    "subscription",
    "families",
    "types",
    "jurisdictions",
    "from_agencies",
    "directory",
    "format",
    "fields",
)


# --- options ----------------------------------------------------------------------------------


def drop_source(
    inbound: Options,
    state_dir: Path,
    patterns: Sequence[str],
    split: Splitter,
    extra_keys: Sequence[str] = (),
) -> DirectorySource:
    """The DirectorySource every file-fed adapter here uses, its state in `<state>/drop/`."""
    inbound.check_keys((*INBOUND_KEYS, *extra_keys))
    return DirectorySource(
        inbound.path("directory"),
        state_dir / "drop",
        inbound.strings("patterns") or tuple(patterns),
        split,
        poll_seconds=inbound.number("poll_seconds", 1.0),
        batch_size=inbound.whole("batch_size", 500),
    )


def build(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = Options(values)
    options.check_keys(("inbound", "mapping", "outbound"))
    inbound, outbound = options.table("inbound"), options.table("outbound")
    if not inbound and not outbound:
        raise AdapterConfigError("[options] give [options.inbound], [options.outbound] or both")
    plan = AdapterPlan()
    if inbound:
        patterns, split = FORMATS[inbound.choice("format", tuple(FORMATS))]
        if "mapping" not in values:
            raise AdapterConfigError("[options.mapping] is required with [options.inbound]")
        try:
            plan.inbound = JsonMapping.from_options(options.table("mapping").values).to_events
        except MappingError as error:
            raise AdapterConfigError(str(error)) from None
        plan.sources.append(drop_source(inbound, state_dir, patterns, split, ("format",)))
    if outbound:
        plan.outbound.append(_outbound(outbound))
    return plan


def _outbound(outbound: Options) -> Outbound:
    where = outbound.where
    outbound.check_keys(OUTBOUND_KEYS)
    file_format = outbound.choice("format", OUT_FORMATS)
    fields = outbound.table("fields").values
    if not all(isinstance(path, str) and path for path in fields.values()):
        raise AdapterConfigError(f"{where} fields: each value must be an event field path")
    if file_format == "csv" and not fields:
        raise AdapterConfigError(f'{where} fields: required with format = "csv" (the columns)')
    families, types = outbound.strings("families"), outbound.strings("types")
    if not families and not types:
        raise AdapterConfigError(f"{where} give families, types or both")
    subscription = outbound.get("subscription", "filedrop-out")
    if not isinstance(subscription, str) or not subscription:
        raise AdapterConfigError(f"{where} subscription: must be a name")
    return Outbound(
        Subscription(
            subscription,
            families=families,
            types=types,
            jurisdiction_prefixes=outbound.strings("jurisdictions"),
        ),
        outbound_mapping(
            file_format,
            {str(k): str(v) for k, v in fields.items()},
            outbound.strings("from_agencies"),
        ),
        DirectorySink(outbound.path("directory")),
    )


KIND = AdapterKind(
    name="filedrop",
    description="Any department system: JSON Lines or CSV files in (declarative mapping), JSON or CSV files out",
    build=build,
)
