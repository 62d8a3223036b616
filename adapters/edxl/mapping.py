"""The EDXL mappings, pure: EDXL-RM messages and EDXL-DE envelopes (with CAP and RM content)
to events, and events back to EDXL-RM and EDXL-DE (the rules: adapters/edxl/adapter.py and
adapters/edxl/README.md).

Long because it follows EDXL-RM and EDXL-DE element by element, both ways: each message type
and each envelope part has its mapping here, beside its inverse, so a change to one is seen with
the other."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, timedelta, timezone
from typing import Any

from lxml import etree

from dutylink.adapters.cap.codec import CapError, parse_cap, to_cap_xml
from dutylink.adapters.cap.mapping import warning_event
from dutylink.adapters.edxl.de import (
    DEFAULT_CONFIDENTIALITY,
    ContentObject,
    DeError,
    Distribution,
    DistributionStatus,
    DistributionType,
    ExplicitAddress,
    TargetArea,
    ValueList,
    content_object_xml,
    unwrap_de,
    wrap_de,
)
from dutylink.adapters.edxl.rm import RmError, parse_rm, to_rm_xml
from dutylink.adapters.edxl.xml import XmlError, local_name, parse_xml
from dutylink.adapters.options import AdapterConfigError
from dutylink.adapters.records import (
    InboundMapping,
    OutboundMapping,
    OutboundRecord,
    Part,
    Parts,
    Record,
    Rejected,
    event_id_for,
)
from dutylink.v1 import common_pb2, distribution_pb2, event_pb2, resource_pb2

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
PbDistribution = distribution_pb2.Distribution

# EDXL-DE distributionStatus ⇄ Distribution.Status ⇄ the event's plane.
_STATUSES: dict[DistributionStatus, PbDistribution.Status.ValueType] = {
    "Actual": PbDistribution.STATUS_ACTUAL,
    "Exercise": PbDistribution.STATUS_EXERCISE,
    "System": PbDistribution.STATUS_SYSTEM,
    "Test": PbDistribution.STATUS_TEST,
}
_PLANES: dict[DistributionStatus, event_pb2.Plane.ValueType] = {
    "Actual": event_pb2.PLANE_ACTUAL,
    "Exercise": event_pb2.PLANE_EXERCISE,
}
_STATUS_OF_PLANE: dict[event_pb2.Plane.ValueType, DistributionStatus] = {
    event_pb2.PLANE_ACTUAL: "Actual",
    event_pb2.PLANE_EXERCISE: "Exercise",
    event_pb2.PLANE_TEST: "Test",
}
# EDXL-DE distributionType ⇄ Distribution.Kind: "SensorStatus" ⇄ KIND_SENSOR_STATUS.
_KINDS: dict[DistributionType, PbDistribution.Kind.ValueType] = {
    name: PbDistribution.Kind.Value("KIND_" + re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper())
    for name in (
        "Report", "Update", "Cancel", "Request", "Response", "Dispatch", "Ack", "Error",
        "SensorConfiguration", "SensorControl", "SensorStatus", "SensorDetection",
    )
}  # fmt: skip
# distributionType of an envelope derived from an event without one, by the event type's name.
_KIND_OF_TYPE: dict[str, DistributionType] = {
    "warning.alert": "Report",
    "warning.update": "Update",
    "warning.cancel": "Cancel",
    "resource.request": "Request",
    "resource.request_information": "Request",
    "resource.request_return": "Request",
    "resource.request_status": "Request",
    "resource.requisition": "Request",
    "resource.response": "Response",
    "resource.information": "Response",
    "resource.return_response": "Response",
    "resource.commit": "Dispatch",
    "resource.request_quote": "Request",
    "resource.quote": "Response",
    "resource.request_extension": "Request",
    "resource.extension_response": "Response",
}
AGENCY_LIST = "urn:dutylink:agency"  # the value list naming DutyLink agencies
EVENT_TYPE_LIST = "urn:dutylink:event-type"  # the value list of DutyLink event types


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


# --- EDXL-DE metadata ⇄ Event.distribution -----------------------------------------------------


def _value_lists(lists: Sequence[ValueList]) -> list[common_pb2.ValueList]:
    return [common_pb2.ValueList(urn=v.urn, values=v.values) for v in lists]


def distribution_message(envelope: Distribution, content: ContentObject) -> PbDistribution:
    """What an event keeps of the envelope it came in: the envelope's fields and its own
    content object's metadata."""
    message = PbDistribution(
        distribution_id=envelope.distribution_id,
        sender_id=envelope.sender_id,
        status=_STATUSES[envelope.status],
        kind=_KINDS[envelope.distribution_type],
        combined_confidentiality=envelope.combined_confidentiality,
        language=envelope.language,
        sender_roles=_value_lists(envelope.sender_roles),
        recipient_roles=_value_lists(envelope.recipient_roles),
        keywords=_value_lists(envelope.keywords),
        distribution_references=envelope.distribution_references,
        explicit_addresses=[
            PbDistribution.ExplicitAddress(scheme=a.scheme, values=a.values)
            for a in envelope.explicit_addresses
        ],
        target_areas=[
            PbDistribution.TargetArea(
                circles=a.circles, polygons=a.polygons, countries=a.countries,
                subdivisions=a.subdivisions, loc_codes_un=a.loc_codes_un,
            )
            for a in envelope.target_areas
        ],
        content=PbDistribution.Content(
            position=content.position,
            description=content.description,
            keywords=_value_lists(content.keywords),
            incident_id=content.incident_id,
            incident_description=content.incident_description,
            originator_roles=_value_lists(content.originator_roles),
            consumer_roles=_value_lists(content.consumer_roles),
            confidentiality=content.confidentiality,
        ),
    )  # fmt: skip
    message.sent_at.FromDatetime(envelope.sent_at)
    offset = envelope.sent_at.utcoffset() or timedelta()
    message.sent_utc_offset_minutes = int(offset.total_seconds()) // 60
    return message


def _lists(lists: Sequence[common_pb2.ValueList]) -> tuple[ValueList, ...]:
    return tuple(ValueList(v.urn, tuple(v.values)) for v in lists)


def _status_name(status: PbDistribution.Status.ValueType) -> DistributionStatus:
    return next(name for name, value in _STATUSES.items() if value == status)


def _kind_name(kind: PbDistribution.Kind.ValueType) -> DistributionType:
    return next(name for name, value in _KINDS.items() if value == kind)


# --- inbound -------------------------------------------------------------------------------------


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

    def content_event(content: ContentObject, envelope: Distribution) -> event_pb2.Event | None:
        if content.xml is None or content.kind == "other":
            what = content.mime_type or "key-XML-only"
            if content.xml is not None:
                root = etree.QName(parse_xml(content.xml))
                what = f"<{root.localname}> (namespace {root.namespace or 'none'})"
            raise Rejected(f"{what} content is neither CAP 1.2 nor EDXL-RM 1.0")
        if content.kind == "cap":
            try:
                event = warning_event(parse_cap(content.xml), system, division_code)
            except CapError as error:
                raise Rejected(f"CAP: {error}") from None
            if event is None:  # CAP Error stays local, as in the CAP adapter
                return None
        else:
            event = bare(content.xml)
            event.plane = _PLANES.get(envelope.status, event_pb2.PLANE_TEST)
        event.distribution.CopyFrom(distribution_message(envelope, content))
        return event

    def to_events(record: Record) -> list[event_pb2.Event] | Parts:
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
        if not envelope.contents:
            raise Rejected(f"EDXL-DE {envelope.distribution_id}: no content object")
        events: list[tuple[Part, event_pb2.Event]] = []
        rejected: list[tuple[Part, str]] = []
        for content in envelope.contents:
            part = _part(envelope, content)
            try:
                event = content_event(content, envelope)
            except Rejected as verdict:
                rejected.append((part, str(verdict)))
                continue
            if event is not None:
                events.append((part, event))
        return Parts(events, rejected)

    return to_events


def _part(envelope: Distribution, content: ContentObject) -> Part:
    """A content object as a part of its envelope's record: its embedded document as bytes (so
    the line numbers of a codec's reason point into it), or, for non-XML content, the whole
    contentObject element; related to the envelope by distributionID and position."""
    sharing = [c for c in envelope.contents if c.position == content.position]
    label = f"contentObject[{content.position + 1}]"
    if len(sharing) > 1:  # several embedded documents in one contentObject
        label += f" document {next(i for i, c in enumerate(sharing) if c is content) + 1}"
    try:
        body = content.xml if content.xml is not None else content_object_xml(content)
    except DeError as error:  # cannot happen for an unwrapped envelope; never crash a batch
        body = f"<!-- content object not kept: {error} -->".encode()
    relation: dict[str, str | int] = {
        "distribution_id": envelope.distribution_id,
        "sender_id": envelope.sender_id,
        "date_time_sent": envelope.sent_at.isoformat(),
        "content_position": content.position,
        "content_kind": content.kind,
    }
    if content.description:
        relation["content_description"] = content.description
    return Part(label, body, relation)


# --- outbound ------------------------------------------------------------------------------------


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120] + ".xml"


def outbound_mapping() -> OutboundMapping:
    """Resource messages as bare EDXL-RM documents."""

    def to_record(event: event_pb2.Event) -> OutboundRecord | None:
        if not event.HasField("resource"):
            return None
        try:
            body = to_rm_xml(event.resource, default_sent_at=event.time.ToDatetime(UTC))
        except RmError as error:
            raise Rejected(f"cannot write EDXL-RM: {error}") from None
        return OutboundRecord(_file_name(event.resource.message_id), body, "application/xml")

    return to_record


def payload_xml(event: event_pb2.Event, *, forward_original: bool = False) -> bytes | None:
    """The event's content as a CAP or EDXL-RM document; None for other payloads. Raises
    Rejected when it cannot be written."""
    if event.HasField("warning"):
        warning = event.warning
        if forward_original and warning.cap_xml:
            return warning.cap_xml
        try:
            return to_cap_xml(warning)
        except CapError as error:
            raise Rejected(f"cannot write CAP: {error}") from None
    if event.HasField("resource"):
        try:
            return to_rm_xml(event.resource, default_sent_at=event.time.ToDatetime(UTC))
        except RmError as error:
            raise Rejected(f"cannot write EDXL-RM: {error}") from None
    return None


def _content(event: event_pb2.Event, xml: bytes) -> ContentObject:
    if event.HasField("distribution"):
        kept = event.distribution.content
        return ContentObject(
            xml=xml, position=kept.position, description=kept.description,
            keywords=_lists(kept.keywords), incident_id=kept.incident_id,
            incident_description=kept.incident_description,
            originator_roles=_lists(kept.originator_roles),
            consumer_roles=_lists(kept.consumer_roles), confidentiality=kept.confidentiality,
        )  # fmt: skip
    return ContentObject(
        xml=xml,
        keywords=(ValueList(EVENT_TYPE_LIST, (event.type,)),),
        incident_id=event.correlation_id,
    )


def envelope_of(events: Sequence[event_pb2.Event], *, forward_original: bool = False) -> bytes:
    """An EDXL-DE 1.0 envelope around the events' CAP and EDXL-RM contents, in the order of
    their kept content positions. The envelope's fields come from the first event's kept
    `distribution` when it has one; else from the event: distributionID = event id, senderID
    and senderRole = the publishing agency, dateTimeSent = event time (UTC), status from the
    plane, type from the event type (`_KIND_OF_TYPE`, else Report), combinedConfidentiality
    "UNCLASSIFIED AND NOT SENSITIVE" for PUBLIC events, else the classification's name.
    Raises Rejected when a content or the envelope cannot be written."""
    if not events:
        raise Rejected("an envelope needs at least one event")
    contents = []
    for event in events:
        xml = payload_xml(event, forward_original=forward_original)
        if xml is None:
            raise Rejected(f"event {event.id}: an {event.WhichOneof('payload')} has no EDXL form")
        contents.append(_content(event, xml))
    contents.sort(key=lambda c: c.position)
    first = events[0]
    try:
        if first.HasField("distribution"):
            return wrap_de(contents, **_kept_fields(first.distribution))
        return wrap_de(contents, **_derived_fields(first))
    except DeError as error:
        raise Rejected(f"cannot write EDXL-DE: {error}") from None


def _kept_fields(kept: PbDistribution) -> dict[str, Any]:
    offset = timezone(timedelta(minutes=kept.sent_utc_offset_minutes))
    return {
        "distribution_id": kept.distribution_id,
        "sender_id": kept.sender_id,
        "sent_at": kept.sent_at.ToDatetime(UTC).astimezone(offset),
        "status": _status_name(kept.status),
        "distribution_type": _kind_name(kept.kind),
        "combined_confidentiality": kept.combined_confidentiality,
        "language": kept.language,
        "sender_roles": _lists(kept.sender_roles),
        "recipient_roles": _lists(kept.recipient_roles),
        "keywords": _lists(kept.keywords),
        "distribution_references": tuple(kept.distribution_references),
        "explicit_addresses": tuple(
            ExplicitAddress(a.scheme, tuple(a.values)) for a in kept.explicit_addresses
        ),
        "target_areas": tuple(
            TargetArea(
                tuple(a.circles),
                tuple(a.polygons),
                tuple(a.countries),
                tuple(a.subdivisions),
                tuple(a.loc_codes_un),
            )
            for a in kept.target_areas
        ),
    }


def _derived_fields(event: event_pb2.Event) -> dict[str, Any]:
    level = event_pb2.Classification.Name(event.classification).removeprefix("CLASSIFICATION_")
    public = event.classification == event_pb2.CLASSIFICATION_PUBLIC
    return {
        "distribution_id": event.id,
        "sender_id": event.source or "dutylink",
        "sent_at": event.time.ToDatetime(UTC),
        "status": _STATUS_OF_PLANE.get(event.plane, "Test"),
        "distribution_type": _KIND_OF_TYPE.get(event.type, "Report"),
        "combined_confidentiality": DEFAULT_CONFIDENTIALITY if public else level,
        "sender_roles": (ValueList(AGENCY_LIST, (event.source,)),) if event.source else (),
    }


def de_outbound_mapping(forward_original: bool = False) -> OutboundMapping:
    """CAP alerts and resource messages, each in its own EDXL-DE envelope. An event from an
    envelope of several contents is sent in an envelope of its own content alone (with the
    original distributionID, so a receiver can group them again): DutyLink delivers and
    authorises each event on its own, so a receiver may see only some of them."""

    def to_record(event: event_pb2.Event) -> OutboundRecord | None:
        if not (event.HasField("warning") or event.HasField("resource")):
            return None
        body = envelope_of([event], forward_original=forward_original)
        if event.HasField("distribution"):
            kept = event.distribution
            name = f"{kept.distribution_id}.{kept.content.position}"
            if event.HasField("resource"):  # two documents of one contentObject: both kept
                name += f".{event.resource.message_id}"
            elif event.HasField("warning"):
                name += f".{event.warning.identifier}"
        else:
            name = event.id
        return OutboundRecord(_file_name(name), body, "application/xml")

    return to_record
