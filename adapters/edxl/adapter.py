"""The EDXL adapter: EDXL-RM resource messages (bare, or wrapped in EDXL-DE envelopes with CAP
alerts) in from a drop directory, resource messages out as EDXL-RM XML files.

    [options]
    system = "em-sh"                  # prefix of event ids: "<system>:<MessageID>"
    division_code = "310115"          # jurisdiction when a message names none
    classification = "INTERNAL"       # of resource events (CAP alerts: from their scope)
    default_utc_offset = "+08:00"     # zone of EDXL-RM dateTimes written without an offset

    [options.inbound]
    directory = "drop/edxl"           # *.xml: one EDXL-RM message or EDXL-DE envelope each
    poll_seconds = 1

    [options.outbound]
    subscription = "rm-out"
    directory = "outbox/edxl"         # one <MessageID>.xml per resource message
    types = []                        # e.g. ["resource.request"]; default every resource type

Event types by EDXL-RM message type are in `RM_EVENT_TYPES` (e.g. RequestResource →
"resource.request"); an EDXL-DE envelope is unwrapped and each CAP or RM content object
becomes its event, named after the envelope's distributionID and the content's position when
the content has no id of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any

from adapters.cap.adapter import warning_event
from adapters.cap.codec import CapError, parse_cap
from adapters.edxl.de import DeError, unwrap_de
from adapters.edxl.rm import RmError, parse_rm, to_rm_xml
from adapters.edxl.xml import XmlError, local_name, parse_xml
from adapters.framework import (
    AdapterConfigError,
    AdapterKind,
    AdapterPlan,
    InboundMapping,
    Outbound,
    OutboundMapping,
    OutboundRecord,
    Record,
    Rejected,
    Subscription,
    event_id_for,
)
from adapters.transports import DirectorySink, DirectorySource, split_whole
from dutylink.v1 import common_pb2, event_pb2, resource_pb2

RM_EVENT_TYPES = {
    "request_resource": "resource.request",
    "response_to_request_resource": "resource.response",
    "requisition_resource": "resource.requisition",
    "commit_resource": "resource.commit",
    "request_information": "resource.request_information",
    "response_to_request_information": "resource.information",
    "offer_unsolicited_resource": "resource.offer",
    "release_resource": "resource.release",
    "request_return": "resource.request_return",
    "response_to_request_return": "resource.return_response",
    "request_resource_deployment_status": "resource.request_status",
    "report_resource_deployment_status": "resource.status_report",
    "request_quote": "resource.request_quote",
    "response_to_request_quote": "resource.quote",
    "request_extended_deployment_duration": "resource.request_extension",
    "response_to_request_extended_deployment_duration": "resource.extension_response",
}
_DE_ROOT = "EDXLDistribution"


def resource_event(
    message: resource_pb2.ResourceMessage,
    system: str,
    division_code: str,
    classification: event_pb2.Classification.ValueType,
    plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL,
) -> event_pb2.Event:
    kind = message.WhichOneof("kind") or ""
    event = event_pb2.Event(
        id=event_id_for(system, message.message_id),
        type=RM_EVENT_TYPES.get(kind, "resource.message"),
        subject=message.incident_id or message.originating_message_id,
        jurisdiction=common_pb2.Jurisdiction(division_code=division_code),
        classification=classification,
        plane=plane,
        priority=event_pb2.PRIORITY_URGENT,
        correlation_id=message.incident_id or message.originating_message_id,
    )
    if message.HasField("sent_at"):
        event.time.CopyFrom(message.sent_at)
    else:
        event.time.GetCurrentTime()
    event.resource.CopyFrom(message)
    return event


def utc_offset_minutes(value: str) -> int:
    """Minutes east of UTC of an option like "+08:00", "-05:30" or "Z"."""
    if value in ("Z", "+00:00", "-00:00"):
        return 0
    match = re.fullmatch(r"([+-])(\d\d):([0-5]\d)", value)
    if match is None or int(match[2]) > 14:
        raise AdapterConfigError(f"default_utc_offset {value!r} is not an offset like '+08:00'")
    minutes = int(match[2]) * 60 + int(match[3])
    return -minutes if match[1] == "-" else minutes


def inbound_mapping(
    system: str, division_code: str, classification: str, default_utc_offset: str = "Z"
) -> InboundMapping:
    level = event_pb2.Classification.Value(f"CLASSIFICATION_{classification.upper()}")
    offset = utc_offset_minutes(default_utc_offset)

    def bare(data: bytes) -> event_pb2.Event:
        try:
            message = parse_rm(data, default_utc_offset_minutes=offset)
        except RmError as error:
            raise Rejected(f"EDXL-RM: {error}") from None
        return resource_event(message, system, division_code, level)

    def to_events(record: Record) -> list[event_pb2.Event]:
        try:
            root = parse_xml(record.body)
        except XmlError as error:
            raise Rejected(f"XML: {error}") from None
        if local_name(root) != _DE_ROOT:
            return [bare(record.body)]
        try:
            envelope = unwrap_de(record.body)
        except DeError as error:
            raise Rejected(f"EDXL-DE: {error}") from None
        plane = event_pb2.PLANE_ACTUAL if envelope.status == "Actual" else (
            event_pb2.PLANE_EXERCISE if envelope.status == "Exercise" else event_pb2.PLANE_TEST
        )  # fmt: skip
        events = []
        for position, content in enumerate(envelope.contents):
            where = f"EDXL-DE {envelope.distribution_id} content {position}"
            if content.xml is None or content.kind == "other":
                raise Rejected(f"{where}: {content.mime_type or 'unknown'} content is not CAP or EDXL-RM")  # fmt: skip
            try:
                if content.kind == "cap":
                    event = warning_event(parse_cap(content.xml), system, division_code)
                    if event is None:
                        continue
                else:
                    event = bare(content.xml)
                    event.plane = plane
            except CapError as error:
                raise Rejected(f"{where}: CAP: {error}") from None
            events.append(event)
        return events

    return to_events


def _file_name(message_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", message_id)[:120] + ".xml"


def outbound_mapping() -> OutboundMapping:
    def to_record(event: event_pb2.Event) -> OutboundRecord | None:
        if not event.HasField("resource"):
            return None
        try:
            body = to_rm_xml(event.resource, default_sent_at=event.time.ToDatetime(UTC))
        except RmError as error:
            raise Rejected(f"cannot write EDXL-RM: {error}") from None
        return OutboundRecord(_file_name(event.resource.message_id), body, "application/xml")

    return to_record


def build(options: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    system = str(options.get("system", "edxl"))
    inbound = dict(options.get("inbound", {}))
    outbound = dict(options.get("outbound", {}))
    plan = AdapterPlan(
        inbound=inbound_mapping(
            system,
            str(options.get("division_code", "")),
            str(options.get("classification", "INTERNAL")),
            str(options.get("default_utc_offset", "Z")),
        )
    )
    if directory := inbound.get("directory"):
        plan.sources.append(
            DirectorySource(
                Path(str(directory)), state_dir / "drop", ["*.xml"],
                split_whole("application/xml"), poll_seconds=float(inbound.get("poll_seconds", 1.0)),
            )
        )  # fmt: skip
    if outbound:
        plan.outbound.append(
            Outbound(
                Subscription(
                    str(outbound.get("subscription", "rm-out")),
                    families=("resource",),
                    types=tuple(outbound.get("types", ())),
                ),
                outbound_mapping(),
                DirectorySink(Path(str(outbound["directory"]))),
            )
        )
    return plan


KIND = AdapterKind(
    name="edxl",
    description="EDXL-RM 1.0 resource messages (and EDXL-DE envelopes with CAP) in, EDXL-RM out",
    build=build,
)
