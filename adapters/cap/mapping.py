"""The CAP 1.2 mapping, pure: a CAP alert's envelope fields (see adapters/cap/adapter.py and
adapters/cap/README.md for the rules) and a warning event back to CAP XML."""

from __future__ import annotations

import re
from typing import Any

from dutylink.adapters.cap.codec import CapError, parse_cap, to_cap_xml
from dutylink.adapters.records import OutboundRecord, Record, Rejected, event_id_for
from dutylink.v1 import common_pb2, event_pb2, warning_pb2

_GEOCODE_NAMES = {"gb/t 2260", "gb2260", "division_code"}
_PLANES = {
    warning_pb2.CAP_STATUS_ACTUAL: event_pb2.PLANE_ACTUAL,
    warning_pb2.CAP_STATUS_EXERCISE: event_pb2.PLANE_EXERCISE,
}
_CLASSIFICATIONS = {
    warning_pb2.CAP_SCOPE_PUBLIC: event_pb2.CLASSIFICATION_PUBLIC,
    warning_pb2.CAP_SCOPE_RESTRICTED: event_pb2.CLASSIFICATION_RESTRICTED,
    warning_pb2.CAP_SCOPE_PRIVATE: event_pb2.CLASSIFICATION_CONFIDENTIAL,
}
_TYPES = {
    warning_pb2.CAP_MSG_TYPE_ALERT: "warning.alert",
    warning_pb2.CAP_MSG_TYPE_UPDATE: "warning.update",
    warning_pb2.CAP_MSG_TYPE_CANCEL: "warning.cancel",
    # A recipient's Ack of the alerts it references: the exchange counts it as that agency
    # taking them (business acknowledgement, README "Acknowledgements and deadlines").
    warning_pb2.CAP_MSG_TYPE_ACK: "warning.ack",
}


def _priority(warning: warning_pb2.Warning) -> event_pb2.Priority.ValueType:
    urgent = any(i.urgency == warning_pb2.CAP_URGENCY_IMMEDIATE for i in warning.infos)
    severe = any(
        i.severity in (warning_pb2.CAP_SEVERITY_EXTREME, warning_pb2.CAP_SEVERITY_SEVERE)
        for i in warning.infos
    )
    if urgent and severe:
        return event_pb2.PRIORITY_FLASH
    if urgent or severe:
        return event_pb2.PRIORITY_URGENT
    return event_pb2.PRIORITY_ELEVATED


def _division_code(warning: warning_pb2.Warning, default: str) -> str:
    for info in warning.infos:
        for area in info.areas:
            for geocode in area.geocodes:
                value = geocode.value
                if geocode.value_name.strip().lower() in _GEOCODE_NAMES and value.isdigit():
                    # Township (9-digit) and village (12-digit) codes begin with their county's.
                    return value[:6]
    return default


def warning_event(warning: warning_pb2.Warning, system: str, division_code: str) -> event_pb2.Event | None:  # fmt: skip
    """The envelope for one CAP alert (None for Error messages, which stay local)."""
    event_type = _TYPES.get(warning.msg_type)
    if event_type is None:
        return None
    event = event_pb2.Event(
        id=event_id_for(system, warning.identifier),
        type=event_type,
        subject=warning.identifier,
        jurisdiction=common_pb2.Jurisdiction(division_code=_division_code(warning, division_code)),
        classification=_CLASSIFICATIONS.get(warning.scope, event_pb2.CLASSIFICATION_INTERNAL),
        plane=_PLANES.get(warning.status, event_pb2.PLANE_TEST),
        priority=_priority(warning),
    )
    event.time.CopyFrom(warning.sent)
    if warning.incidents:
        event.correlation_id = warning.incidents[0]
    expiries = [i.expires for i in warning.infos if i.HasField("expires")]
    if expiries:
        event.expires.CopyFrom(max(expiries, key=lambda t: t.ToNanoseconds()))
    event.warning.CopyFrom(warning)
    return event


def inbound_mapping(system: str, division_code: str) -> Any:
    def to_events(record: Record) -> list[event_pb2.Event]:
        try:
            warning = parse_cap(record.body)
        except CapError as error:
            raise Rejected(f"CAP: {error}") from None
        event = warning_event(warning, system, division_code)
        return [] if event is None else [event]

    return to_events


def _file_name(identifier: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", identifier)[:120] + ".xml"


def outbound_mapping(forward_original: bool) -> Any:
    def to_record(event: event_pb2.Event) -> OutboundRecord | None:
        if not event.HasField("warning"):
            return None
        warning = event.warning
        try:
            body = warning.cap_xml if forward_original and warning.cap_xml else to_cap_xml(warning)
        except CapError as error:
            raise Rejected(f"cannot write CAP: {error}") from None
        return OutboundRecord(_file_name(warning.identifier), body, "application/cap+xml")

    return to_record
