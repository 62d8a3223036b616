"""EDXL-RM 1.0 and EDXL-DE 1.0 codecs: samples, round trips, refusals (adapters/edxl)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from dutylink.adapters.edxl.de import (
    ContentObject,
    DeError,
    ExplicitAddress,
    TargetArea,
    ValueList,
    unwrap_de,
    wrap_de,
)
from dutylink.adapters.edxl.mapping import RM_EVENT_TYPES, resource_event, utc_offset_minutes
from dutylink.adapters.edxl.rm import SUPPORTED_TYPES, RmError, parse_rm, to_rm_xml
from dutylink.adapters.edxl.rmdiff import rm_differences
from dutylink.adapters.edxl.xml import (
    MAX_XML_BYTES,
    XmlError,
    _LocalOnly,
    format_datetime,
    load_schema,
    parse_datetime,
    parse_xml,
)
from dutylink.adapters.options import AdapterConfigError
from dutylink.v1 import common_pb2, event_pb2, resource_pb2
from gateway.core.validation import Validator

SAMPLES = Path(__file__).resolve().parents[1] / "adapters" / "edxl" / "samples"
RM_SAMPLES = sorted(SAMPLES.glob("[0-9][0-9]-*.xml"))
DE_SAMPLE = SAMPLES / "de-envelope-cap-and-request-resource.xml"
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
RM_MSG_NS = "urn:oasis:names:tc:emergency:EDXL:RM:1.0:msg"


def sample(kind: str) -> bytes:
    """The sample file of a `ResourceMessage.kind` field, e.g. "commit_resource"."""
    name = kind.replace("_", "-")
    (path,) = (p for p in RM_SAMPLES if p.stem[3:] == name)
    return path.read_bytes()


def line_of(data: bytes, needle: str) -> int:
    """1-based line of the first occurrence of `needle`."""
    return data.decode()[: data.decode().index(needle)].count("\n") + 1


# --------------------------------------------------------------------------------------------
# Golden tests over the samples

_DATETIMES = {"SentDateTime", "DateTime", "InventoryRefreshDateTime"}


def canonical(element: etree._Element) -> tuple[object, ...]:
    """An element tree for semantic comparison: Clark names, whitespace-normalised text,
    dateTimes as instants, no comments; prefixes and layout do not matter."""
    local = etree.QName(element).localname
    value: object = " ".join((element.text or "").split())
    if local in _DATETIMES:
        moment, nanos = parse_datetime(str(value))
        value = (moment.astimezone(UTC), nanos)
    children = tuple(canonical(child) for child in element if isinstance(child.tag, str))
    return (element.tag, value, tuple(sorted(element.attrib.items())), children)


def test_there_is_one_sample_per_supported_message_type() -> None:
    roots = [etree.QName(etree.parse(str(path)).getroot()).localname for path in RM_SAMPLES]
    assert sorted(roots) == sorted(SUPPORTED_TYPES)
    assert len(SUPPORTED_TYPES) == 16


@pytest.mark.parametrize("path", RM_SAMPLES, ids=lambda p: p.stem)
def test_sample_parses_to_a_valid_message_of_its_type(path: Path) -> None:
    message = parse_rm(path.read_bytes())
    root = etree.QName(etree.parse(str(path)).getroot()).localname
    kind = message.WhichOneof("kind")
    assert kind is not None and kind.replace("_", "") == root.lower()
    assert Validator().problems(message) == []


@pytest.mark.parametrize("path", RM_SAMPLES, ids=lambda p: p.stem)
def test_sample_written_back_is_the_same_document(path: Path) -> None:
    original = path.read_bytes()
    written = to_rm_xml(parse_rm(original))
    assert canonical(etree.fromstring(written)) == canonical(etree.fromstring(original))
    assert written.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")


def test_samples_form_one_exchange_each_message_following_an_earlier_one() -> None:
    # 13-16 (quote, extended deployment) are a side exchange during 06-12: order by time.
    messages = sorted(
        (parse_rm(path.read_bytes()) for path in RM_SAMPLES), key=lambda m: m.sent_at.seconds
    )
    first = messages[0]
    assert first.WhichOneof("kind") == "request_resource"
    assert first.originating_message_id == first.message_id
    seen = set()
    for message in messages:
        assert message.originating_message_id == first.message_id
        assert message.incident_id == "INC-2026-0815-001"
        assert not message.preceding_message_id or message.preceding_message_id in seen
        seen.add(message.message_id)


def test_request_resource_sample_maps_every_field() -> None:
    message = parse_rm(sample("request_resource"))
    assert message.message_id == "fire:RM:2026-0815-001"
    assert message.sent_at.ToDatetime(UTC) == datetime(2026, 8, 15, 6, 6, 30, tzinfo=UTC)
    sender, requester = message.contacts
    assert sender.role == resource_pb2.CONTACT_ROLE_SENDER
    assert (sender.agency, sender.phone) == ("fire", "+86 21 5888 0119")
    assert (sender.radios[0].radio_type, sender.radios[0].channel) == ("PDT", "TG 31001 联合指挥")
    assert requester.person_name == "Chen Jianguo"
    assert requester.email == "chen.jianguo@fire.sh.example"
    assert requester.location.point.latitude == pytest.approx(31.2405)
    request = message.request_resource
    # The RequestedArrival every line shares becomes the message's needed_by and deliver_to.
    assert request.needed_by.ToDatetime(UTC) == datetime(2026, 8, 15, 6, 45, tzinfo=UTC)
    assert request.deliver_to.address.startswith("Staging area B")
    assert request.deliver_to.jurisdiction == common_pb2.Jurisdiction(
        division_code="310115", street_code="005"
    )
    foam, hazmat = request.resource_infos
    assert foam.resource.kind == resource_pb2.RESOURCE_KIND_VEHICLE
    assert foam.resource.type_info == "foam tender"
    assert (foam.assignment.quantity.value, foam.assignment.quantity.unit) == (4, "vehicles")
    assert list(foam.schedules) == []
    assert [s.type for s in hazmat.schedules] == [resource_pb2.SCHEDULE_TYPE_REPORT_TO]


def test_reply_samples_map_responses_status_and_orders() -> None:
    response = parse_rm(sample("response_to_request_resource"))
    line = response.response_to_request_resource.resource_infos[0]
    assert line.response.type == resource_pb2.RESPONSE_TYPE_PROVISIONAL
    assert (line.response.preceding_resource_info_element_id, line.response.reason_code) == (
        "1",
        "PARTIAL",
    )
    assert line.resource.status.deployment_status == resource_pb2.DEPLOYMENT_STATUS_AVAILABLE
    assert line.resource.responsible_agency == "emergency"
    commit = parse_rm(sample("commit_resource")).commit_resource
    assert [i.assignment.order_id for i in commit.resource_infos] == [
        "YJ-DL-2026-0815-042",
        "YJ-DL-2026-0815-043",
    ]
    report = parse_rm(sample("report_resource_deployment_status"))
    current = report.report_resource_deployment_status.resource_infos[0].schedules[0]
    assert current.type == resource_pb2.SCHEDULE_TYPE_CURRENT
    assert current.location.jurisdiction.grid_id == "PD-0312-07"
    funding = parse_rm(sample("requisition_resource")).funding[0]
    assert funding.fund_code == "PD-YJ-2026-017"


# --------------------------------------------------------------------------------------------
# Round-trip properties: valid messages of every type -> XML -> the same message


@dataclass(frozen=True)
class Caps:
    """What one message type's OASIS schema lets a message carry, read off the XSDs by hand:
    an oracle independent of rm.py, which asks the schemas itself."""

    schedules: frozenset[int]
    preceding: Literal["no", "optional", "required"] = "optional"
    funding: Literal["no", "optional", "required"] = "optional"
    response: Literal["no", "optional", "required"] = "no"
    resource_required: bool = True
    owner: bool = True
    status: frozenset[str] = frozenset(
        {"inventory_refresh_time", "deployment_status", "availability"}
    )
    status_required: bool = False
    order_id: bool = True
    instructions: bool = True
    assignment_required: bool = False
    quantity_required: bool = False
    min_lines: int = 1
    description_required: bool = False
    price_quote_required: bool = False  # ResponseToRequestQuote: with every assignment


ALL_SCHEDULES = frozenset(range(1, 19))
NO_STATUS: frozenset[str] = frozenset()
STATUS_NO_REFRESH = frozenset({"deployment_status", "availability"})
CAPS: dict[str, Caps] = {
    # RequestedArrival (1) is left to needed_by/deliver_to, which travel as that schedule.
    "request_resource": Caps(
        frozenset({4, 7, 8, 17, 18}),
        preceding="no",
        owner=False,
        status=NO_STATUS,
        order_id=False,
        instructions=False,
    ),
    "response_to_request_resource": Caps(
        frozenset({1, 2, 4, 5, 7, 10, 11, 13, 14, 17, 18}),
        preceding="required",
        response="required",
        resource_required=False,
        order_id=False,
    ),
    "requisition_resource": Caps(
        frozenset({1, 2, 4, 5, 7, 8, 17, 18}),
        funding="required",
        status=NO_STATUS,
        order_id=False,
        assignment_required=True,
        quantity_required=True,
    ),
    "commit_resource": Caps(
        ALL_SCHEDULES - {3, 9, 12},
        preceding="required",
        response="required",
        resource_required=False,
        status=frozenset({"inventory_refresh_time", "deployment_status"}),
        quantity_required=True,
    ),
    "request_information": Caps(
        ALL_SCHEDULES, resource_required=False, min_lines=0, description_required=True
    ),
    "response_to_request_information": Caps(
        ALL_SCHEDULES,
        preceding="required",
        response="optional",
        resource_required=False,
        min_lines=0,
    ),
    "offer_unsolicited_resource": Caps(
        frozenset({2, 5, 10, 11, 13, 14, 18}), preceding="no", funding="no", order_id=False
    ),
    "release_resource": Caps(
        ALL_SCHEDULES - {9}, response="optional", status=STATUS_NO_REFRESH, quantity_required=True
    ),
    "request_return": Caps(ALL_SCHEDULES - {7, 8, 9, 12, 16}, status=STATUS_NO_REFRESH),
    "response_to_request_return": Caps(
        ALL_SCHEDULES - {9},
        preceding="required",
        response="required",
        resource_required=False,
        status=STATUS_NO_REFRESH,
        status_required=True,
    ),
    "request_resource_deployment_status": Caps(ALL_SCHEDULES - {16}, status=NO_STATUS),
    "report_resource_deployment_status": Caps(ALL_SCHEDULES, response="optional"),
    "request_quote": Caps(
        frozenset({1, 4, 7, 8, 17, 18}), response="optional", status=NO_STATUS, order_id=False
    ),
    "response_to_request_quote": Caps(
        frozenset({1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 17, 18}),
        preceding="required",
        response="required",
        resource_required=False,
        order_id=False,
        price_quote_required=True,
    ),
    "request_extended_deployment_duration": Caps(
        ALL_SCHEDULES - {9, 12, 13, 14, 16}, status=STATUS_NO_REFRESH, instructions=False
    ),
    "response_to_request_extended_deployment_duration": Caps(
        ALL_SCHEDULES - {9, 12, 13, 16},
        preceding="required",
        response="required",
        resource_required=False,
        status=STATUS_NO_REFRESH,
    ),
}
XML_SPACE = re.compile(r"[ \t\n\r]+")

texts = st.text(
    st.characters(
        codec="utf-8", categories=("L", "N", "P", "S", "Zs"), include_characters="\t\n\r"
    ),
    min_size=1,
    max_size=24,
)
# CIQ names, phones and e-mail are whitespace-collapsed by their schema type.
collapsed = texts.map(lambda s: XML_SPACE.sub(" ", s).strip(" ")).filter(bool)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,15}", fullmatch=True)
agencies = st.from_regex(r"[a-z][a-z0-9-]{1,12}", fullmatch=True)
timestamps = st.builds(
    Timestamp,
    seconds=st.integers(-62_135_596_800, 253_402_300_799),
    nanos=st.integers(0, 999_999_999),
)


def optional(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), strategy)


@st.composite
def locations(draw: st.DrawFn) -> common_pb2.Location:
    location = common_pb2.Location(address=draw(optional(texts)))
    if draw(st.booleans()):
        location.point.SetInParent()
        location.point.latitude = draw(st.floats(-90, 90))
        location.point.longitude = draw(st.floats(-180, 180))
    if draw(st.booleans()):
        location.jurisdiction.division_code = draw(st.from_regex(r"[1-8][0-9]{5}", fullmatch=True))
        location.jurisdiction.street_code = draw(st.sampled_from(["", "005", "114"]))
        location.jurisdiction.grid_id = draw(
            optional(st.from_regex(r"[A-Za-z0-9-]{1,32}", fullmatch=True))
        )
    return location


@st.composite
def contacts(draw: st.DrawFn) -> resource_pb2.ContactInformation:
    contact = resource_pb2.ContactInformation(
        description=draw(optional(texts)),
        role=draw(st.sampled_from(resource_pb2.ContactRole.values())),
        agency=draw(optional(agencies)),
        person_name=draw(optional(collapsed)),
        phone=draw(
            optional(st.from_regex(r"\+?[0-9]{2,4}( [0-9()*#-]{1,6}){0,3}", fullmatch=True))
        ),
        email=draw(
            optional(st.from_regex(r"[a-z0-9.]{1,8}@[a-z0-9]{1,8}\.[a-z]{2,4}", fullmatch=True))
        ),
    )
    for _ in range(draw(st.integers(0, 2))):
        contact.radios.add(radio_type=draw(texts), channel=draw(texts))
    if draw(st.booleans()):
        contact.location.CopyFrom(draw(locations()))
    return contact


@st.composite
def lines(draw: st.DrawFn, caps: Caps, element_id: str) -> resource_pb2.ResourceInfo:
    info = resource_pb2.ResourceInfo(resource_info_element_id=element_id)
    if caps.response == "required" or (caps.response == "optional" and draw(st.booleans())):
        info.response.preceding_resource_info_element_id = draw(ids)
        info.response.type = draw(
            st.sampled_from(
                [
                    resource_pb2.RESPONSE_TYPE_ACCEPT,
                    resource_pb2.RESPONSE_TYPE_DECLINE,
                    resource_pb2.RESPONSE_TYPE_PROVISIONAL,
                ]
            )
        )
        info.response.reason_code = draw(optional(st.from_regex(r"[A-Z_]{1,12}", fullmatch=True)))
        info.response.reason = draw(optional(texts))
    if caps.resource_required or draw(st.booleans()):
        resource = info.resource
        resource.SetInParent()
        resource.resource_id = draw(optional(texts))
        resource.name = draw(optional(texts))
        resource.type_info = draw(optional(texts))
        resource.kind = draw(st.sampled_from(resource_pb2.ResourceKind.values()))
        resource.description = draw(optional(texts))
        resource.special_requirements = draw(optional(texts))
        if caps.owner:
            resource.responsible_agency = draw(optional(agencies))
        if caps.status_required:
            resource.status.deployment_status = draw(
                st.sampled_from(resource_pb2.DeploymentStatus.values()[1:])
            )
            resource.status.availability = draw(texts)
        elif len(caps.status) > 0 and draw(st.booleans()):
            resource.status.SetInParent()
            if "inventory_refresh_time" in caps.status and draw(st.booleans()):
                resource.status.inventory_refresh_time.CopyFrom(draw(timestamps))
            resource.status.deployment_status = draw(
                st.sampled_from(resource_pb2.DeploymentStatus.values())
            )
            if "availability" in caps.status:
                resource.status.availability = draw(optional(texts))
    if caps.assignment_required or draw(st.booleans()):
        assignment = info.assignment
        assignment.SetInParent()
        if caps.quantity_required or draw(st.booleans()):
            assignment.quantity.value = draw(
                st.floats(min_value=0, exclude_min=True, allow_infinity=False)
            )
            assignment.quantity.unit = draw(optional(texts))
        elif draw(st.booleans()):  # EDXL-RM's other choice: free-text quantities
            assignment.quantity_texts.extend(draw(st.lists(texts, min_size=1, max_size=2)))
        if caps.price_quote_required:
            assignment.price_quote.texts.extend(draw(st.lists(texts, min_size=1, max_size=2)))
        assignment.restrictions = draw(optional(texts))
        assignment.anticipated_function = draw(optional(texts))
        if caps.order_id:
            assignment.order_id = draw(optional(texts))
        if caps.instructions and draw(st.booleans()):
            assignment.instructions.SetInParent()
            assignment.instructions.mode_of_transportation = draw(optional(texts))
            assignment.instructions.navigation_instructions = draw(optional(texts))
            assignment.instructions.reporting_instructions = draw(optional(texts))
    for _ in range(draw(st.integers(0, 3))):
        schedule = info.schedules.add(type=draw(st.sampled_from(sorted(caps.schedules))))
        if draw(st.booleans()):
            schedule.time.CopyFrom(draw(timestamps))
        if draw(st.booleans()):
            schedule.location.CopyFrom(draw(locations()))
    return info


@st.composite
def messages(draw: st.DrawFn, kind: str) -> resource_pb2.ResourceMessage:
    caps = CAPS[kind]
    message = resource_pb2.ResourceMessage(
        message_id=draw(ids),
        originating_message_id=draw(ids),
        message_description=draw(texts if caps.description_required else optional(texts)),
        incident_id=draw(optional(ids)),
        incident_description=draw(optional(texts)),
    )
    message.sent_at.CopyFrom(draw(timestamps))
    if caps.preceding == "required" or (caps.preceding == "optional" and draw(st.booleans())):
        message.preceding_message_id = draw(ids)
    if draw(st.booleans()):
        message.recall.recall_message_id = draw(ids)
        message.recall.type = draw(
            st.sampled_from([resource_pb2.RECALL_TYPE_UPDATE, resource_pb2.RECALL_TYPE_CANCEL])
        )
    if caps.funding != "no":
        for _ in range(draw(st.integers(1 if caps.funding == "required" else 0, 2))):
            message.funding.add(fund_code=draw(optional(texts)), funding_info=draw(optional(texts)))
    message.contacts.extend(draw(st.lists(contacts(), min_size=1, max_size=3)))
    body = getattr(message, kind)
    body.SetInParent()
    for i in range(draw(st.integers(caps.min_lines, 3))):
        body.resource_infos.append(draw(lines(caps, str(i + 1))))
    if isinstance(body, resource_pb2.RequestResource):
        body.deliver_to.CopyFrom(draw(locations()))
        if draw(st.booleans()):
            body.needed_by.CopyFrom(draw(timestamps))
    return message


@pytest.mark.parametrize("kind", sorted(CAPS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_message_the_schema_can_carry_survives_xml_unchanged(
    kind: str, data: st.DataObject
) -> None:
    message = data.draw(messages(kind))
    assert views(parse_rm(to_rm_xml(message))) == views(message)


# Fields that hold the received form beside DutyLink's views (set by parse_rm, not by a
# message built from the views): the views alone must survive a round trip.
_RECEIVED_FORM = frozenset(
    {
        "rm_xml", "sent_at_zone", "radio_type_list", "reason_code_list", "type_structure",
        "keywords", "ownership", "deployment_status_list", "inventory_refresh_zone",
        "unit_of_measure", "time_zone", "needed_by_zone", "schedules_as_sent", "party_xml",
        "location_xml",
    }
)  # fmt: skip


def views(message: resource_pb2.ResourceMessage) -> resource_pb2.ResourceMessage:
    """A copy of `message` without the received-form fields."""
    copy = resource_pb2.ResourceMessage()
    copy.CopyFrom(message)
    _strip(copy)
    return copy


def _strip(message: Message) -> None:
    for field, value in message.ListFields():
        if field.name in _RECEIVED_FORM:
            message.ClearField(field.name)
        elif field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                _strip(item)


# --------------------------------------------------------------------------------------------
# Writing: what the message type cannot carry is refused, by field


def _line0(message: resource_pb2.ResourceMessage) -> resource_pb2.ResourceInfo:
    kind = message.WhichOneof("kind")
    assert kind is not None
    info: resource_pb2.ResourceInfo = getattr(message, kind).resource_infos[0]
    return info


REFUSED: list[tuple[str, Callable[[resource_pb2.ResourceMessage], object], str, str]] = [
    (
        "request_resource",
        lambda m: setattr(m, "preceding_message_id", "x"),
        "preceding_message_id",
        "<PrecedingMessageID>",
    ),
    (
        "offer_unsolicited_resource",
        lambda m: m.funding.add(fund_code="F1"),
        "funding[0]",
        "<Funding>",
    ),
    (
        "request_resource",
        lambda m: setattr(_line0(m).resource, "responsible_agency", "fire"),
        "request_resource.resource_infos[0].resource.responsible_agency",
        "<OwnershipInformation>",
    ),
    (
        "request_resource",
        lambda m: setattr(_line0(m).resource.status, "availability", "now"),
        "request_resource.resource_infos[0].resource.status",
        "<ResourceStatus>",
    ),
    (
        "request_resource_deployment_status",
        lambda m: setattr(_line0(m).resource.status, "deployment_status", 1),
        "resource_infos[0].resource.status",
        "<ResourceStatus>",
    ),
    (
        "requisition_resource",
        lambda m: setattr(_line0(m).assignment, "order_id", "YJ-1"),
        "requisition_resource.resource_infos[0].assignment.order_id",
        "<OrderID>",
    ),
    (
        "response_to_request_resource",
        lambda m: setattr(_line0(m).assignment, "order_id", "YJ-1"),
        "assignment.order_id",
        "<OrderID>",
    ),
    (
        "request_resource",
        lambda m: setattr(_line0(m).assignment.instructions, "mode_of_transportation", "rail"),
        "assignment.instructions",
        "<AssignmentInstructions>",
    ),
    (
        "commit_resource",
        lambda m: setattr(_line0(m).resource.status, "availability", "now"),
        "commit_resource.resource_infos[0].resource.status.availability",
        "<Availability>",
    ),
    (
        "release_resource",
        lambda m: _line0(m).resource.status.inventory_refresh_time.FromSeconds(1),
        "resource.status.inventory_refresh_time",
        "<InventoryRefreshDateTime>",
    ),
    (
        "request_return",
        lambda m: _line0(m).response.SetInParent(),
        "request_return.resource_infos[0].response",
        "<ResponseInformation>",
    ),
    (
        "response_to_request_return",
        lambda m: _line0(m).resource.ClearField("status"),
        "response_to_request_return.resource_infos[0].resource.status",
        "DeploymentStatus and Availability",
    ),
]


@pytest.mark.parametrize(("kind", "change", "field", "detail"), REFUSED)
def test_a_field_the_message_type_cannot_carry_is_refused_by_name(
    kind: str,
    change: Callable[[resource_pb2.ResourceMessage], object],
    field: str,
    detail: str,
) -> None:
    message = parse_rm(sample(kind))
    to_rm_xml(message)  # the sample itself is fine
    change(message)
    with pytest.raises(RmError) as caught:
        to_rm_xml(message)
    assert field in str(caught.value) and detail in str(caught.value)


def test_a_message_the_schema_rejects_is_refused_with_the_element_path() -> None:
    message = parse_rm(sample("requisition_resource"))
    del message.funding[:]  # RequisitionResource needs Funding
    with pytest.raises(RmError, match=r"schema-invalid: .*ContactInformation.*Funding"):
        to_rm_xml(message)
    message = parse_rm(sample("request_resource"))
    _line0(message).schedules.add(type=resource_pb2.SCHEDULE_TYPE_ACTUAL_ARRIVAL).time.FromSeconds(
        0
    )
    with pytest.raises(
        RmError,
        match=r"^schema-invalid: /RequestResource/ResourceInformation\[1\]/ScheduleInformation\[2\]"
        r"/ScheduleType: <ScheduleType>: .*'ActualArrival' is not an element of the set",
    ):
        to_rm_xml(message)


def test_a_message_without_kind_or_time_is_refused() -> None:
    with pytest.raises(RmError, match="no kind"):
        to_rm_xml(resource_pb2.ResourceMessage(message_id="a"))
    message = parse_rm(sample("request_information"))
    message.ClearField("sent_at")
    with pytest.raises(RmError, match="sent_at"):
        to_rm_xml(message)
    sent = datetime(2026, 8, 15, 15, 20, tzinfo=timezone(timedelta(hours=8)))
    assert b"<SentDateTime>2026-08-15T15:20:00+08:00<" in to_rm_xml(message, default_sent_at=sent)


def test_conditional_response_is_written_as_provisional_and_reads_back_provisional() -> None:
    message = parse_rm(sample("response_to_request_resource"))
    _line0(message).response.type = resource_pb2.RESPONSE_TYPE_CONDITIONAL
    written = to_rm_xml(message)
    assert b"<rm:ResponseType>Provisional</rm:ResponseType>" in written
    line = _line0(parse_rm(written))
    assert line.response.type == resource_pb2.RESPONSE_TYPE_PROVISIONAL
    assert line.response.reason.startswith("3 of 4 foam tenders")


def test_a_line_with_its_own_requested_arrival_keeps_it_and_gets_deliver_to_filled_in() -> None:
    message = parse_rm(sample("request_resource"))
    request = message.request_resource
    own = request.resource_infos[1].schedules.add(type=resource_pb2.SCHEDULE_TYPE_REQUESTED_ARRIVAL)
    own.time.FromDatetime(datetime(2026, 8, 15, 7, 30, tzinfo=UTC))
    back = parse_rm(to_rm_xml(message)).request_resource
    # Each line's effective arrival is kept; the shared default no longer exists as such.
    foam, hazmat = back.resource_infos
    (foam_arrival,) = [s for s in foam.schedules if s.type == own.type]
    (hazmat_arrival,) = [s for s in hazmat.schedules if s.type == own.type]
    assert foam_arrival.time == request.needed_by
    assert foam_arrival.location == request.deliver_to
    assert hazmat_arrival.time == own.time
    assert hazmat_arrival.location == request.deliver_to
    assert back.deliver_to == request.deliver_to


# --------------------------------------------------------------------------------------------
# Reading: what is tolerated, what is refused, and where


def _replace(data: bytes, old: str, new: str) -> bytes:
    text = data.decode()
    assert old in text
    return text.replace(old, new, 1).encode()


def test_elements_beyond_the_views_are_carried_and_leave_the_views_alone() -> None:
    original = sample("requisition_resource")
    extended = _replace(
        original,
        "</rmsg:TypeStructure>\n      <rmsg:OwnershipInformation>",
        "</rmsg:TypeStructure>\n"
        "      <rmsg:TypeInfo><any xmlns='urn:x'>Type 1</any></rmsg:TypeInfo>\n"
        "      <rmsg:Credentials>CN-ERT</rmsg:Credentials>\n"
        "      <rmsg:OwnershipInformation>",
    )
    extended = _replace(
        extended,
        "<rm:Owner>emergency</rm:Owner>",
        "<rm:Owner>emergency</rm:Owner><rm:HomeUnit>GQ</rm:HomeUnit>",
    )
    message = parse_rm(extended)
    resource = message.requisition_resource.resource_infos[0].resource
    assert resource.credentials == "CN-ERT" and resource.ownership.home_unit == "GQ"
    assert '<any xmlns="urn:x">Type 1</any>' in resource.type_info_xml
    assert rm_differences(extended, to_rm_xml(message)) == []
    for field in ("credentials", "type_info_xml"):
        resource.ClearField(field)
    assert views(message) == views(parse_rm(original))


def test_values_from_foreign_value_lists_are_carried_with_their_list() -> None:
    data = _replace(
        sample("request_resource"),
        "urn:dutylink:valuelist:resource-type",
        "urn:x-nims:resource-typing",
    )
    resource = parse_rm(data).request_resource.resource_infos[0].resource
    # The DutyLink view is only for DutyLink's own list; the foreign list is kept as is.
    assert resource.type_info == ""
    assert resource.type_structure == common_pb2.ValueList(
        urn="urn:x-nims:resource-typing", values=["foam tender"]
    )
    assert b"urn:x-nims:resource-typing" in to_rm_xml(parse_rm(data))


def test_an_organisation_that_is_not_a_dutylink_agency_is_not_taken_as_one() -> None:
    data = _replace(
        sample("request_resource"),
        "<xnl:NameElement>fire</xnl:NameElement>",
        "<xnl:NameElement>Pudong Fire and Rescue</xnl:NameElement>",
    )
    assert parse_rm(data).contacts[0].agency == ""


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rmsg:RequestResource xmlns:rmsg="urn:oasis:names:tc:emergency:EDXL:RM:1.0:msg">&lol9;</rmsg:RequestResource>
"""


def _with_doctype(doctype: str, body_change: tuple[str, str] | None = None) -> bytes:
    data = sample("request_resource")
    if body_change:
        data = _replace(data, *body_change)
    return _replace(data, "<!-- Chemical-park fire", doctype + "\n<!-- Chemical-park fire")


UNSAFE = {
    "billion-laughs": (BILLION_LAUGHS, 2),
    "external-entity": (
        _with_doctype(
            '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
            ("<rmsg:MessageDescription>", "<rmsg:MessageDescription>&xxe;"),
        ),
        2,
    ),
    "external-dtd": (_with_doctype('<!DOCTYPE r SYSTEM "http://127.0.0.1:9/edxl.dtd">'), 2),
}


@pytest.mark.parametrize(("data", "line"), UNSAFE.values(), ids=UNSAFE.keys())
def test_any_doctype_is_refused_before_anything_is_expanded_or_fetched(
    data: bytes, line: int
) -> None:
    with pytest.raises(RmError) as caught:
        parse_rm(data)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}: DOCTYPE is not allowed")
    assert "root:" not in str(caught.value)  # nothing of /etc/passwd
    with pytest.raises(DeError, match="DOCTYPE is not allowed"):
        unwrap_de(data)


def test_oversize_documents_are_refused_before_parsing() -> None:
    data = sample("request_resource")
    padded = data + b" " * (MAX_XML_BYTES - len(data) + 1)
    with pytest.raises(RmError, match=f"larger than the limit of {MAX_XML_BYTES} bytes"):
        parse_rm(padded)
    with pytest.raises(RmError, match="limit of 1000 bytes"):
        parse_rm(data, max_bytes=1000)
    assert parse_rm(data, max_bytes=len(data)).message_id


def test_malformed_xml_is_refused_with_its_line() -> None:
    data = _replace(sample("request_resource"), "</rmsg:MessageID>", "</rmsg:MessageId>")
    with pytest.raises(RmError) as caught:
        parse_rm(data)
    assert caught.value.line == line_of(data, "</rmsg:MessageId>")
    assert "not well-formed" in str(caught.value)


def test_a_document_that_is_not_edxl_rm_is_refused_naming_its_root() -> None:
    cap = b'<?xml version="1.0"?>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>'
    with pytest.raises(RmError) as caught:
        parse_rm(cap)
    assert str(caught.value).startswith("line 2: <alert>: not an EDXL-RM 1.0 message")
    with pytest.raises(RmError, match=r"<EDXLDistribution>: not an EDXL-RM 1\.0 message"):
        parse_rm(DE_SAMPLE.read_bytes())


UNKNOWN_TYPE = b"""<?xml version="1.0" encoding="UTF-8"?>
<rmsg:RequestPizza xmlns:rmsg="urn:oasis:names:tc:emergency:EDXL:RM:1.0:msg"
    xmlns:rm="urn:oasis:names:tc:emergency:EDXL:RM:1.0">
  <rmsg:MessageID>fire:RM:2026-0815-099</rmsg:MessageID>
  <rmsg:SentDateTime>2026-08-15T14:06:30+08:00</rmsg:SentDateTime>
  <!-- not a type -->
  <rmsg:MessageContentType>RequestPizza</rmsg:MessageContentType>
  <rmsg:OriginatingMessageID>fire:RM:2026-0815-099</rmsg:OriginatingMessageID>
</rmsg:RequestPizza>
"""


def test_an_unknown_message_type_is_refused_at_its_content_type() -> None:
    assert len(SUPPORTED_TYPES) == 16
    with pytest.raises(RmError, match=r"line 7: .*'RequestPizza' is not an EDXL-RM type"):
        parse_rm(UNKNOWN_TYPE)


SCHEMA_INVALID = {
    "bad-enum": (
        "request_resource",
        ("<rm:ContactRole>Sender</rm:ContactRole>", "<rm:ContactRole>Boss</rm:ContactRole>"),
        "<rm:ContactRole>Boss",
        r"<ContactRole>: .*'Boss' is not an element of the set",
    ),
    "missing-preceding-id": (
        "response_to_request_resource",
        ("<rmsg:PrecedingMessageID>fire:RM:2026-0815-001</rmsg:PrecedingMessageID>", ""),
        "<rmsg:IncidentInformation>",
        r"<IncidentInformation>: This element is not expected\. Expected is \( PrecedingMessageID \)",
    ),
    "content-type-mismatch": (
        "commit_resource",
        (">CommitResource</rmsg:MessageContentType>", ">RequestResource</rmsg:MessageContentType>"),
        ">RequestResource</rmsg:MessageContentType>",
        r"<MessageContentType>: .*\{'CommitResource'\}",
    ),
    "not-a-double": (
        "request_resource",
        ("<rm:Amount>4</rm:Amount>", "<rm:Amount>four</rm:Amount>"),
        "<rm:Amount>four",
        r"<Amount>: 'four' is not a valid value of the atomic type 'xs:double'",
    ),
}


@pytest.mark.parametrize(
    ("kind", "change", "at", "message"), SCHEMA_INVALID.values(), ids=SCHEMA_INVALID.keys()
)
def test_a_schema_invalid_document_is_refused_naming_element_and_line(
    kind: str, change: tuple[str, str], at: str, message: str
) -> None:
    data = _replace(sample(kind), *change)
    with pytest.raises(RmError) as caught:
        parse_rm(data)
    line = line_of(data, at)
    assert caught.value.line == line
    assert re.match(rf"line {line}: schema-invalid: {message}", str(caught.value)), str(
        caught.value
    )


ONCE_REFUSED = {
    "naive-datetime": (
        "request_resource",
        ("14:06:30+08:00</rmsg:SentDateTime>", "14:06:30</rmsg:SentDateTime>"),
        "14:06:30</rmsg:SentDateTime>",
        "<SentDateTime>: '2026-08-15T14:06:30' has no time-zone offset",
    ),
    "two-incidents": (
        "request_information",
        (
            "</rmsg:IncidentInformation>",
            "</rmsg:IncidentInformation>\n  <rmsg:IncidentInformation>"
            "<rm:IncidentID>INC-2</rm:IncidentID></rmsg:IncidentInformation>",
        ),
        "<rm:IncidentID>INC-2<",
        "<IncidentInformation>: a DutyLink resource message belongs to one incident",
    ),
    "quantity-text": (
        "request_information",
        (
            "<rm:MeasuredQuantity>\n"
            "          <rm:Amount>20</rm:Amount>\n"
            "          <rm:UnitOfMeasure>\n"
            "            <rm:ValueListURN>urn:dutylink:valuelist:unit-of-measure</rm:ValueListURN>\n"
            "            <rm:Value>t</rm:Value>\n"
            "          </rm:UnitOfMeasure>\n"
            "        </rm:MeasuredQuantity>",
            "<rm:QuantityText>as much as you have</rm:QuantityText>",
        ),
        "<rm:QuantityText>",
        "<QuantityText>: free-text quantities are not supported",
    ),
    "projected-point": (
        "request_resource",
        ("<gml:Point>", '<gml:Point srsName="EPSG:3857">'),
        'srsName="EPSG:3857"',
        "<Point>: srsName 'EPSG:3857' is not WGS-84",
    ),
    "polygon-area": (
        "request_resource",
        (
            "<gml:Point>\n          <gml:pos>31.2405 121.4985</gml:pos>\n        </gml:Point>",
            "<gml:Envelope><gml:lowerCorner>31 121</gml:lowerCorner>"
            "<gml:upperCorner>32 122</gml:upperCorner></gml:Envelope>",
        ),
        "<gml:Envelope>",
        "<Envelope>: only a gml:Point target area is supported",
    ),
    "unknown-deployment-status": (
        "report_resource_deployment_status",
        ("<rm:Value>EnRoute</rm:Value>", "<rm:Value>Stuck</rm:Value>"),
        "<rmsg:DeploymentStatus>",
        "<DeploymentStatus>: 'Stuck' is not one of DutyLink's values (Available, Committed, EnRoute",
    ),
    "two-values": (
        "request_resource",
        (
            "<rm:Value>foam tender</rm:Value>",
            "<rm:Value>foam tender</rm:Value><rm:Value>type 1</rm:Value>",
        ),
        "<rm:Value>type 1",
        "<TypeStructure>: DutyLink reads one <Value> here, not 2",
    ),
    "owner-not-an-agency": (
        "commit_resource",
        ("<rm:Owner>emergency</rm:Owner>", "<rm:Owner>Gaoqiao Rescue Ltd</rm:Owner>"),
        "<rm:Owner>Gaoqiao",
        "<Owner>: 'Gaoqiao Rescue Ltd' is not a DutyLink agency id",
    ),
    "request-without-delivery-place": (
        "request_resource",
        (
            "<rmsg:ScheduleType>RequestedArrival</rmsg:ScheduleType>",
            "<rmsg:ScheduleType>Route</rmsg:ScheduleType>",
        ),
        "<rmsg:ResourceInformation>",
        "<ResourceInformation>: each RequestResource line needs a RequestedArrival schedule",
    ),
}


@pytest.mark.parametrize(
    ("kind", "change", "at", "message"), ONCE_REFUSED.values(), ids=ONCE_REFUSED.keys()
)
def test_a_valid_document_once_refused_is_carried_and_exported_equal(
    kind: str, change: tuple[str, str], at: str, message: str
) -> None:
    """Each of these schema-valid variants used to be refused (with `message`, at `at`);
    now it parses, and its export is schema-valid and semantically equal."""
    data = _replace(sample(kind), *change)
    parsed = parse_rm(data, default_utc_offset_minutes=480, keep_xml=True)
    assert parsed.rm_xml == data
    assert rm_differences(data, to_rm_xml(parsed)) == []


def test_schema_imports_outside_the_vendored_folder_are_not_resolved(tmp_path: Path) -> None:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(_LocalOnly(tmp_path / "schema"))
    schema = etree.fromstring(
        b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:a">'
        b'<xs:import namespace="urn:b" schemaLocation="/etc/passwd"/></xs:schema>',
        parser,
    )
    with pytest.raises(etree.XMLSchemaParseError, match="Failed to parse"):
        etree.XMLSchema(schema)


# --------------------------------------------------------------------------------------------
# xml.py helpers


def test_datetimes_keep_their_offset_and_nanoseconds() -> None:
    moment, nanos = parse_datetime("2026-08-15T14:06:30.123456789123-08:00")
    assert moment == datetime(2026, 8, 15, 22, 6, 30, tzinfo=UTC) and nanos == 123_456_789
    assert moment.utcoffset() == timedelta(hours=-8)
    assert parse_datetime("2026-12-31T24:00:00Z")[0] == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="no time-zone offset"):
        parse_datetime("2026-08-15T14:06:30")
    assumed = parse_datetime("2026-08-15T14:06:30", default_tz=timezone(timedelta(hours=8)))
    assert assumed[0] == datetime(2026, 8, 15, 6, 6, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="year outside"):
        parse_datetime("12026-08-15T14:06:30Z")
    assert (
        format_datetime(datetime(2026, 8, 15, 6, tzinfo=UTC), 5_000)
        == "2026-08-15T06:00:00.000005Z"
    )
    local = datetime(2026, 8, 15, 14, tzinfo=timezone(timedelta(hours=8)))
    assert format_datetime(local) == "2026-08-15T14:00:00+08:00"


def test_parse_xml_raises_the_error_class_it_is_given() -> None:
    with pytest.raises(DeError):
        parse_xml(b"<a>", error=DeError)
    with pytest.raises(XmlError) as caught:
        parse_xml(b"<a>\n<b>\n</a>")
    assert caught.value.line == 3 and str(caught.value).startswith("line 3: not well-formed")


# --------------------------------------------------------------------------------------------
# EDXL-DE


def test_unwrapping_the_sample_envelope_finds_the_cap_alert_then_the_rm_request() -> None:
    distribution = unwrap_de(DE_SAMPLE.read_bytes())
    assert distribution.distribution_id == "fire:DE:2026-0815-001"
    assert distribution.sender_id == "fire@dutylink.sh.example"
    assert distribution.sent_at == datetime(2026, 8, 15, 6, 6, 45, tzinfo=UTC)
    assert distribution.sent_at.utcoffset() == timedelta(hours=8)
    assert (distribution.status, distribution.distribution_type) == ("Actual", "Request")
    assert distribution.combined_confidentiality == "SENSITIVE"
    assert distribution.explicit_addresses == (
        ExplicitAddress("urn:dutylink:agency", ("emergency", "ecology")),
    )
    assert distribution.target_areas == (
        TargetArea(circles=("31.2397,121.4998 3",), countries=("CN",), subdivisions=("CN-SH",)),
    )
    cap, rm = distribution.contents
    assert [cap.kind, rm.kind] == ["cap", "rm"]
    assert cap.description.startswith("Public alert")
    assert rm.keywords == (
        ValueList("urn:dutylink:valuelist:rm-message-type", ("RequestResource",)),
    )
    assert cap.xml is not None and rm.xml is not None
    assert etree.fromstring(cap.xml).tag == f"{{{CAP_NS}}}alert"
    assert views(parse_rm(rm.xml)) == views(parse_rm(sample("request_resource")))


CAP_XSD = Path(__file__).resolve().parents[1] / "adapters" / "cap" / "schema" / "CAP-v1.2.xsd"


@pytest.mark.skipif(not CAP_XSD.is_file(), reason="the CAP adapter's vendored CAP 1.2 schema")
def test_the_sample_envelopes_cap_alert_is_valid_cap_1_2() -> None:
    cap = unwrap_de(DE_SAMPLE.read_bytes()).contents[0]
    assert cap.xml is not None
    schema = etree.XMLSchema(etree.parse(str(CAP_XSD)))
    assert schema.validate(etree.fromstring(cap.xml)), schema.error_log


def test_wrapped_documents_unwrap_in_order_with_their_metadata() -> None:
    distribution = unwrap_de(DE_SAMPLE.read_bytes())
    cap = distribution.contents[0]
    assert cap.xml is not None
    report = to_rm_xml(parse_rm(sample("report_resource_deployment_status")))
    photo = ContentObject(
        description="Drone photo of the plume",
        mime_type="image/jpeg",
        size=4,
        uri="https://files.dutylink.example/att/2026/08/plume.jpg",
        data=b"\xff\xd8\xff\xe0",
    )
    sent = datetime(2026, 8, 15, 15, 8, 30, 250_000, tzinfo=timezone(timedelta(hours=8)))
    data = wrap_de(
        [cap, report, photo],
        distribution_id="emergency:DE:2026-0815-006",
        sender_id="emergency@dutylink.sh.example",
        sent_at=sent,
        distribution_type="Report",
        keywords=[ValueList("urn:dutylink:valuelist:incident-category", ("hazardous-chemicals",))],
        explicit_addresses=[ExplicitAddress("urn:dutylink:agency", ("fire",))],
        target_areas=[TargetArea(circles=("31.2397,121.4998 3",))],
    )
    back = unwrap_de(data)
    assert (back.distribution_id, back.sent_at, back.status) == (
        "emergency:DE:2026-0815-006",
        sent,
        "Actual",
    )
    assert back.combined_confidentiality == "UNCLASSIFIED AND NOT SENSITIVE"
    assert back.explicit_addresses == (ExplicitAddress("urn:dutylink:agency", ("fire",)),)
    assert [c.kind for c in back.contents] == ["cap", "rm", "other"]
    cap_back, rm_back, photo_back = back.contents
    assert cap_back.description == cap.description and cap_back.incident_id == cap.incident_id
    assert cap_back.xml is not None and rm_back.xml is not None
    assert canonical(etree.fromstring(cap_back.xml)) == canonical(etree.fromstring(cap.xml))
    assert views(parse_rm(rm_back.xml)) == views(parse_rm(report))
    assert photo_back == photo  # kind "other", mime type, size, URI and data as given


def test_non_xml_and_key_only_content_is_reported_not_dropped() -> None:
    data = _replace(
        DE_SAMPLE.read_bytes(),
        "  </contentObject>\n  <contentObject>",
        "  </contentObject>\n"
        "  <contentObject>\n"
        "    <contentDescription>Site plan</contentDescription>\n"
        "    <nonXMLContent>\n"
        "      <mimeType>application/pdf</mimeType>\n"
        "      <uri>https://files.dutylink.example/att/site-plan.pdf</uri>\n"
        "    </nonXMLContent>\n"
        "  </contentObject>\n"
        "  <contentObject>\n"
        "    <contentDescription>Excerpt only</contentDescription>\n"
        "    <xmlContent><keyXMLContent><k xmlns='urn:k'/></keyXMLContent></xmlContent>\n"
        "  </contentObject>\n"
        "  <contentObject>",
    )
    contents = unwrap_de(data).contents
    assert [(c.kind, c.description) for c in contents] == [
        ("cap", "Public alert: shelter in place downwind of the chemical park"),
        ("other", "Site plan"),
        ("other", "Excerpt only"),
        ("rm", "Request for 4 foam tenders and 1 hazmat team"),
    ]
    plan, excerpt = contents[1], contents[2]
    assert (plan.mime_type, plan.uri, plan.xml) == (
        "application/pdf",
        "https://files.dutylink.example/att/site-plan.pdf",
        None,
    )
    assert excerpt.xml is None and excerpt.mime_type == ""


def test_envelopes_that_are_not_edxl_de_or_schema_invalid_are_refused_with_the_line() -> None:
    rm = sample("request_resource")
    root_line = line_of(rm, 'xmlns:gml="http://www.opengis.net/gml">')  # libxml2: the tag's end
    with pytest.raises(DeError, match=rf"line {root_line}: <RequestResource>: not an EDXL-DE 1.0"):
        unwrap_de(rm)
    original = DE_SAMPLE.read_bytes()
    data = _replace(original, "<senderID>fire@dutylink.sh.example</senderID>\n", "")
    with pytest.raises(DeError) as caught:
        unwrap_de(data)
    line = line_of(data, "<dateTimeSent>")
    assert str(caught.value).startswith(
        f"line {line}: schema-invalid: <dateTimeSent>: This element is not expected. "
        "Expected is ( senderID )"
    )
    data = _replace(original, "<distributionStatus>Actual<", "<distributionStatus>Real<")
    with pytest.raises(
        DeError, match=f"line {line_of(data, 'Real')}: schema-invalid: <distributionStatus>"
    ):
        unwrap_de(data)


def test_wrapping_refuses_unsafe_unnamespaced_or_oversized_content() -> None:
    wrap = functools.partial(
        wrap_de,
        distribution_id="d1",
        sender_id="fire@dutylink.sh.example",
        sent_at=datetime(2026, 8, 15, 6, tzinfo=UTC),
    )
    with pytest.raises(DeError, match=r"contents\[0\]: line 2: DOCTYPE is not allowed"):
        wrap([BILLION_LAUGHS])
    with pytest.raises(DeError, match="schema-invalid: <note>"):
        wrap([b"<note>no namespace</note>"])
    with pytest.raises(DeError, match="at least one content object"):
        wrap([])
    content = to_rm_xml(parse_rm(sample("request_resource")))
    # The content alone is within the limit; with the envelope around it, it is not.
    with pytest.raises(DeError, match=r"the envelope is \d+ bytes, larger than the limit"):
        wrap([content], max_bytes=len(content) + 50)
    with pytest.raises(DeError, match="time zone"):
        wrap_de(
            [sample("request_resource")],
            distribution_id="d",
            sender_id="s",
            sent_at=datetime(2026, 1, 1),
        )
    with pytest.raises(DeError, match="mime_type"):
        wrap([ContentObject(description="nothing")])


# --------------------------------------------------------------------------------------------
# Golden: real-world shapes (tests/golden/edxl-rm) and the 16 samples, checked three ways

GOLDEN = sorted((Path(__file__).resolve().parent / "golden" / "edxl-rm").glob("*.xml"))


def golden(name: str) -> bytes:
    (path,) = (p for p in GOLDEN if p.name.startswith(name))
    return path.read_bytes()


@pytest.mark.parametrize("path", GOLDEN + RM_SAMPLES, ids=lambda p: p.name)
def test_golden_documents_parse_export_schema_valid_and_equal(path: Path) -> None:
    data = path.read_bytes()
    message = parse_rm(data, default_utc_offset_minutes=480)
    exported = to_rm_xml(message)
    root = etree.fromstring(exported)
    schema = load_schema(f"edxl-rm/1.0/EDXL-RM{etree.QName(root).localname}.xsd")
    assert schema.validate(root), schema.error_log
    assert rm_differences(data, exported) == []
    event = resource_event(message, "golden", "310115", event_pb2.CLASSIFICATION_INTERNAL)
    assert event.type == RM_EVENT_TYPES[message.WhichOneof("kind") or ""]
    assert Validator().problems(event) == []


def test_offset_less_times_are_read_in_the_default_zone_and_written_without_offset() -> None:
    data = golden("01")
    message = parse_rm(data, default_utc_offset_minutes=480)
    assert message.sent_at.ToDatetime(UTC) == datetime(2026, 9, 2, 22, 42, 10, tzinfo=UTC)
    assert message.sent_at_zone == resource_pb2.TimeZoneForm(
        utc_offset_minutes=480, offset_assumed=True
    )
    exported = to_rm_xml(message)
    assert b"<SentDateTime>2026-09-03T06:42:10</SentDateTime>" in exported
    assert b"<DateTime>2026-09-03T09:30:00.5</DateTime>" in exported
    in_utc = parse_rm(data)  # the default zone is UTC
    assert in_utc.sent_at.ToDatetime(UTC) == datetime(2026, 9, 3, 6, 42, 10, tzinfo=UTC)


def test_an_offset_is_kept_and_written_back() -> None:
    message = parse_rm(golden("02"))
    status = message.offer_unsolicited_resource.resource_infos[0].resource.status
    assert status.inventory_refresh_zone.utc_offset_minutes == 480
    assert b"2026-08-15T07:00:00+08:00" in to_rm_xml(message)


def test_foreign_lists_keywords_and_type_info_are_carried_as_received() -> None:
    message = parse_rm(golden("01"))
    resource = message.request_resource.resource_infos[0].resource
    assert resource.type_structure.urn == "urn:x-cn:national-resource-typing:2024"
    assert resource.type_info == ""  # no DutyLink type: the view stays empty
    assert [k.urn for k in resource.keywords] == [
        "urn:x-cn:hazard-types",
        "urn:dutylink:valuelist:resource-kind",
        "urn:x-jx:mutual-aid-tags",
    ]
    assert list(resource.keywords[0].values) == ["earthquake", "structural collapse"]
    assert resource.kind == resource_pb2.RESOURCE_KIND_TEAM
    assert "<rt:b>heavy lift</rt:b>" in resource.type_info_xml
    assert len(message.additional_incidents) == 1
    contact = message.contacts[0]
    assert (contact.agency, contact.email) == ("", "eoc-resources@jx.example.org")
    assert "CountryCode" in contact.party_xml  # the CIQ parts the views do not hold
    location = message.request_resource.resource_infos[0].schedules[0]
    assert "Polygon" in location.location_xml and not location.location.HasField("point")


def test_a_changed_view_wins_over_the_received_form() -> None:
    message = parse_rm(golden("01"))
    resource = message.request_resource.resource_infos[0].resource
    resource.kind = resource_pb2.RESOURCE_KIND_PERSONNEL
    message.contacts[0].email = "desk@jx.example.org"
    exported = to_rm_xml(message)
    differences = rm_differences(golden("01"), exported)
    assert any("Keyword" in d and "Personnel" in d for d in differences), differences
    assert b"urn:x-cn:hazard-types" in exported  # the foreign keywords stay
    assert parse_rm(exported).contacts[0].email == "desk@jx.example.org"
    assert b"CountryCode" not in exported.split(b"</ContactInformation>")[0]


def test_foreign_owner_and_deployment_status_are_carried_not_refused() -> None:
    message = parse_rm(golden("02"))
    resource = message.offer_unsolicited_resource.resource_infos[0].resource
    assert resource.responsible_agency == ""
    assert resource.ownership.owner == "Gaoqiao Industrial Rescue Ltd"
    assert resource.status.deployment_status == resource_pb2.DEPLOYMENT_STATUS_UNSPECIFIED
    assert list(resource.status.deployment_status_list.values) == ["Staged, ready in 30 min"]
    assignment = message.offer_unsolicited_resource.resource_infos[0].assignment
    assert not assignment.HasField("quantity") and len(assignment.quantity_texts) == 2
    assert list(assignment.price_quote.texts) == [
        "Per framework contract; first 12 h free of charge"
    ]


RM_DIFF_BASE = golden("03")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("<rm:Value>CNY</rm:Value>", "<rm:Value>USD</rm:Value>", "UnitOfMeasure/Value: text"),
        ("02:00:00Z", "02:00:01Z", "SentDateTime: text"),
        ("02:00:00Z", "02:00:00", "SentDateTime: text"),
        ("<rm:ContactRole>Approver</rm:ContactRole>", "", "ContactInformation"),
        ("<ScheduleType>EstimatedArrival", "<ScheduleType>BeginAvailable", "ScheduleType"),
    ],
)
def test_rm_differences_names_each_difference_by_path(old: str, new: str, expected: str) -> None:
    changed = _replace(RM_DIFF_BASE, old, new)
    differences = rm_differences(RM_DIFF_BASE, changed)
    assert len(differences) == 1 and expected in differences[0], differences


def test_rm_differences_ignores_prefixes_order_spelling_and_offsets() -> None:
    same = (
        RM_DIFF_BASE.decode()
        .replace(
            'xmlns="urn:oasis:names:tc:emergency:EDXL:RM:1.0:msg"',
            'xmlns:m="urn:oasis:names:tc:emergency:EDXL:RM:1.0:msg"',
        )
        .replace("<", "<m:")
        .replace("<m:/", "</m:")
        .replace("<m:rm:", "<rm:")
        .replace("</m:rm:", "</rm:")
        .replace("<m:?xml", "<?xml")
        .replace("<m:!--", "<!--")
        .replace("12500.50", "1.250050E4")
        .replace("02:00:00Z", "10:00:00+08:00")
    )
    contacts = re.findall(r"<m:ContactInformation>.*?</m:ContactInformation>", same, re.S)
    same = (
        same.replace(contacts[0], "@@").replace(contacts[1], contacts[0]).replace("@@", contacts[1])
    )
    assert rm_differences(RM_DIFF_BASE, same.encode()) == []
    assert (
        rm_differences(RM_DIFF_BASE, b"<x") == [rm_differences(RM_DIFF_BASE, b"<x")[0]]
        and "document b" in rm_differences(RM_DIFF_BASE, b"<x")[0]
    )


def test_the_default_utc_offset_option_is_read_strictly() -> None:
    assert utc_offset_minutes("+08:00") == 480
    assert utc_offset_minutes("-05:30") == -330
    assert utc_offset_minutes("Z") == 0
    for bad in ("8", "+8:00", "+15:00", "UTC+8"):
        with pytest.raises(AdapterConfigError):
            utc_offset_minutes(bad)


def test_dutylink_id_wishes_are_advice_not_refusals() -> None:
    message = parse_rm(golden("01"))  # MessageID "JX-EOC/RM/2026/00417": a '/' is no DutyLink id
    event = resource_event(message, "golden", "310115", event_pb2.CLASSIFICATION_INTERNAL)
    checked = Validator().check(event)
    assert list(checked.problems) == []
    advised = {(a.field, a.rule_id) for a in checked.advisories}
    assert ("resource.message_id", "advice.pattern") in advised
    assert ("resource.originating_message_id", "advice.pattern") in advised


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    offset=st.integers(-48, 56).map(lambda quarters: quarters * 15),
    assumed=st.booleans(),
    keyword=st.lists(texts, min_size=1, max_size=3),
)
def test_received_forms_survive_a_second_trip(
    data: st.DataObject, offset: int, assumed: bool, keyword: list[str]
) -> None:
    """A message carrying foreign forms (a sender's offset or none, a foreign keyword list, a
    foreign deployment status) exports, re-reads and exports again to an equal document."""
    message = data.draw(messages(data.draw(st.sampled_from(sorted(CAPS)))))
    # Away from years 1 and 9999, where a local time in another offset leaves the range.
    message.sent_at.seconds = data.draw(st.integers(0, 4_000_000_000))
    message.sent_at_zone.utc_offset_minutes = offset
    message.sent_at_zone.offset_assumed = assumed
    body = getattr(message, message.WhichOneof("kind") or "")
    for info in body.resource_infos:
        if info.HasField("resource"):
            info.resource.keywords.add(urn="urn:x-test:tags", values=keyword)
            if info.resource.status.deployment_status:
                info.resource.status.deployment_status = 0
                info.resource.status.deployment_status_list.urn = "urn:x-test:status"
                info.resource.status.deployment_status_list.values.append(keyword[0])
    first = to_rm_xml(message)
    again = to_rm_xml(parse_rm(first, default_utc_offset_minutes=offset))
    assert rm_differences(first, again) == []
    assert (b"urn:x-test:tags" in again) == (b"urn:x-test:tags" in first)
