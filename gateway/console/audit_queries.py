"""What the auditor pages' API accepts: every parameter checked here, before anything reaches
the gateway, so a bad one is a clear 400 naming it (bounded lengths, allowed characters, numbers
in range) and the gateway only ever sees well-formed requests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dutylink.v1 import audit_pb2
from gateway.console.queries import BadQuery, incident_id_of

# A gateway id names a file (<id>.pub) on the gateways: the bundle code's own pattern, bounded.
GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
AGENCY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
EVENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, as ListEntries allows
# What a <input type="datetime-local"> sends: minutes, or seconds too; read in the console zone.
LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
# A C2SP verifier key: name+8 hex+base64 of 33 bytes (44 characters, no padding); the name
# is bounded.
KEY_STRING = re.compile(r"^[\x21-\x2a\x2c-\x7e]{1,128}\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$")
MAX_INDEX = 2**63 - 1  # leaf indexes are uint64; nobody's log is past 2**63
MAX_GATEWAYS = 16  # gateway ids in one checkpoints query
MAX_VALUE_CHARS = 256
ACTIONS = tuple(
    value.name.removeprefix("AUDIT_ACTION_")
    for value in audit_pb2.AuditAction.DESCRIPTOR.values
    if value.number != audit_pb2.AUDIT_ACTION_UNSPECIFIED
)


@dataclass(frozen=True)
class EntriesQuery:
    """GET /api/audit/entries's parameters, checked."""

    gateway_id: str
    start: int
    agency: str
    event_id: str
    incident_id: str
    actions: tuple[audit_pb2.AuditAction.ValueType, ...]
    since: datetime | None
    until: datetime | None


def _value(query: Mapping[str, str], name: str, limit: int = MAX_VALUE_CHARS) -> str:
    value = query.get(name, "").strip()
    if len(value) > limit:
        raise BadQuery(f"{name}: longer than {limit} characters")
    return value


def _matching(query: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = _value(query, name)
    if value and not pattern.fullmatch(value):
        raise BadQuery(f"{name}: {what}")
    return value


def gateway_of(query: Mapping[str, str]) -> str:
    """The log's gateway id; empty means the answering gateway's own log."""
    return _matching(
        query, "gateway", GATEWAY_ID, "a gateway id: letters, digits, '.', '_', '-' (1 to 64)"
    )


def gateways_of(query: Mapping[str, str]) -> tuple[str, ...]:
    """A comma-separated list of gateway ids (at most MAX_GATEWAYS), duplicates dropped."""
    raw = _value(query, "gateways", MAX_GATEWAYS * 65)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if len(names) > MAX_GATEWAYS:
        raise BadQuery(f"gateways: at most {MAX_GATEWAYS}")
    for name in names:
        if not GATEWAY_ID.fullmatch(name):
            raise BadQuery(f"gateways: {name[:70]!r} is not a gateway id")
    return tuple(dict.fromkeys(names))


def number_of(query: Mapping[str, str], name: str, default: int = 0) -> int:
    value = _value(query, name, 20)
    if not value:
        return default
    if not value.isdigit() or int(value) > MAX_INDEX:
        raise BadQuery(f"{name}: a whole number from 0 to {MAX_INDEX}")
    return int(value)


def _actions(query: Mapping[str, str]) -> tuple[audit_pb2.AuditAction.ValueType, ...]:
    value = _value(query, "action").upper()
    if not value:
        return ()
    if value not in ACTIONS:
        raise BadQuery(f"action: one of {', '.join(ACTIONS)}")
    return (audit_pb2.AuditAction.Value(f"AUDIT_ACTION_{value}"),)


def _time(query: Mapping[str, str], name: str, zone: str) -> datetime | None:
    value = _value(query, name, 19)
    if not value:
        return None
    if not LOCAL_TIME.fullmatch(value):
        raise BadQuery(f"{name}: a time as YYYY-MM-DDTHH:MM[:SS] in the console's zone")
    try:
        return datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(zone))
    except ValueError:
        raise BadQuery(f"{name}: not a real date and time") from None


def entries_query(query: Mapping[str, str], zone: str) -> EntriesQuery:
    """gateway, start (leaf index to go on from), agency, event, incident, action, from, to."""
    incident = _value(query, "incident")
    since, until = _time(query, "from", zone), _time(query, "to", zone)
    if since is not None and until is not None and until <= since:
        raise BadQuery("to: must be after from")
    return EntriesQuery(
        gateway_id=gateway_of(query),
        start=number_of(query, "start"),
        agency=_matching(query, "agency", AGENCY, "an agency id (letters, digits, '.', '_', '-')"),
        event_id=_matching(query, "event", EVENT_ID, "1 to 128 printable characters, no spaces"),
        incident_id=incident_id_of(incident) if incident else "",
        actions=_actions(query),
        since=since,
        until=until,
    )


def key_of(query: Mapping[str, str]) -> str:
    """A verifier key string (name+keyid+base64), or empty; its signature type and key id are
    checked when it is parsed."""
    return _matching(query, "key", KEY_STRING, "a verifier key: name+<8 hex digits>+<base64>")
