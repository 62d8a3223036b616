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
from adapters.options import AdapterConfigError
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


def check_keys(section: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    if unknown := set(section) - set(known):
        raise AdapterConfigError(
            f"{where} unknown key '{sorted(unknown)[0]}' (expected one of {', '.join(sorted(known))})"
        )


def table(options: Mapping[str, Any], key: str, where: str = "[options]") -> Mapping[str, Any]:
    value = options.get(key, {})
    if not isinstance(value, Mapping):
        raise AdapterConfigError(f"{where} {key}: must be a table")
    return value


def strings(section: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = section.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AdapterConfigError(f"{where} {key}: must be a list of non-empty strings")
    return tuple(value)


def choice(section: Mapping[str, Any], key: str, where: str, allowed: Sequence[str]) -> str:
    value = section.get(key, allowed[0])
    if value not in allowed:
        raise AdapterConfigError(f"{where} {key}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def number(section: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise AdapterConfigError(f"{where} {key}: must be a number greater than 0")
    return float(value)


def whole(section: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdapterConfigError(f"{where} {key}: must be a whole number of at least 1")
    return value


def directory(section: Mapping[str, Any], where: str) -> Path:
    value = section.get("directory")
    if not isinstance(value, str) or not value:
        raise AdapterConfigError(f"{where} directory: required, a path")
    return Path(value)


def drop_source(
    inbound: Mapping[str, Any],
    state_dir: Path,
    patterns: Sequence[str],
    split: Splitter,
    extra_keys: Sequence[str] = (),
) -> DirectorySource:
    """The DirectorySource every file-fed adapter here uses, its state in `<state>/drop/`."""
    where = "[options.inbound]"
    check_keys(inbound, (*INBOUND_KEYS, *extra_keys), where)
    return DirectorySource(
        directory(inbound, where),
        state_dir / "drop",
        strings(inbound, "patterns", where) or tuple(patterns),
        split,
        poll_seconds=number(inbound, "poll_seconds", where, 1.0),
        batch_size=whole(inbound, "batch_size", where, 500),
    )


def build(options: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    check_keys(options, ("inbound", "mapping", "outbound"), "[options]")
    inbound, outbound = table(options, "inbound"), table(options, "outbound")
    if not inbound and not outbound:
        raise AdapterConfigError("[options] give [options.inbound], [options.outbound] or both")
    plan = AdapterPlan()
    if inbound:
        where = "[options.inbound]"
        patterns, split = FORMATS[choice(inbound, "format", where, tuple(FORMATS))]
        if "mapping" not in options:
            raise AdapterConfigError("[options.mapping] is required with [options.inbound]")
        try:
            plan.inbound = JsonMapping.from_options(table(options, "mapping")).to_events
        except MappingError as error:
            raise AdapterConfigError(str(error)) from None
        plan.sources.append(drop_source(inbound, state_dir, patterns, split, ("format",)))
    if outbound:
        plan.outbound.append(_outbound(outbound))
    return plan


def _outbound(outbound: Mapping[str, Any]) -> Outbound:
    where = "[options.outbound]"
    check_keys(outbound, OUTBOUND_KEYS, where)
    file_format = choice(outbound, "format", where, OUT_FORMATS)
    fields = table(outbound, "fields", where)
    if not all(isinstance(path, str) and path for path in fields.values()):
        raise AdapterConfigError(f"{where} fields: each value must be an event field path")
    if file_format == "csv" and not fields:
        raise AdapterConfigError(f'{where} fields: required with format = "csv" (the columns)')
    families, types = strings(outbound, "families", where), strings(outbound, "types", where)
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
            jurisdiction_prefixes=strings(outbound, "jurisdictions", where),
        ),
        outbound_mapping(
            file_format,
            {str(k): str(v) for k, v in fields.items()},
            strings(outbound, "from_agencies", where),
        ),
        DirectorySink(directory(outbound, where)),
    )


KIND = AdapterKind(
    name="filedrop",
    description="Any department system: JSON Lines or CSV files in (declarative mapping), JSON or CSV files out",
    build=build,
)
