"""EDXL-RM 1.0 XML <-> `dutylink.v1.ResourceMessage`. Pure: bytes in, messages out, and back.

`parse_rm` refuses unsafe XML (see `xml.py`), checks the message type, validates against that
type's OASIS schema, then maps every element the proto models; `to_rm_xml` writes the same
elements in schema order and validates its own output before returning it. README.md beside
this file has the mapping tables.

The 12 message schemas differ in small ways (RequestResource has no OwnershipInformation,
CommitResource no Availability, …). Rather than a second copy of those differences, the
writer asks the message's own schema which elements it declares (`_shape`), and a proto field
the type cannot carry is refused with its path instead of being dropped.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree

from adapters.edxl.xml import (
    MAX_XML_BYTES,
    SCHEMA_DIR,
    XmlError,
    format_datetime,
    load_schema,
    local_name,
    parse_datetime,
    parse_xml,
    text,
    validate,
)
from dutylink.v1 import common_pb2, resource_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

MSG_NS = "urn:oasis:names:tc:emergency:EDXL:RM:1.0:msg"
RM_NS = "urn:oasis:names:tc:emergency:EDXL:RM:1.0"
XPIL_NS = "urn:oasis:names:tc:ciq:xpil:3"
XNL_NS = "urn:oasis:names:tc:ciq:xnl:3"
XAL_NS = "urn:oasis:names:tc:ciq:xal:3"
GML_NS = "http://www.opengis.net/gml"
_XS_NS = "http://www.w3.org/2001/XMLSchema"
_NSMAP = {None: MSG_NS, "rm": RM_NS, "xpil": XPIL_NS, "xnl": XNL_NS, "xal": XAL_NS, "gml": GML_NS}

# DutyLink's value lists (EDXL-RM ValueListType): what DutyLink writes as ValueListURN.
RESOURCE_TYPE_LIST = "urn:dutylink:valuelist:resource-type"
RESOURCE_KIND_LIST = "urn:dutylink:valuelist:resource-kind"
DEPLOYMENT_STATUS_LIST = "urn:dutylink:valuelist:deployment-status"
RADIO_TYPE_LIST = "urn:dutylink:valuelist:radio-type"
REASON_CODE_LIST = "urn:dutylink:valuelist:reason-code"
UNIT_LIST = "urn:dutylink:valuelist:unit-of-measure"
# xAL NameCodeType values marking a Jurisdiction's codes inside a Location's xal Address.
DIVISION_CODE_TYPE = "GB/T 2260"
STREET_CODE_TYPE = "urn:dutylink:street-code"
GRID_ID_TYPE = "urn:dutylink:grid-id"
# srsName spellings of WGS-84 lat/lon accepted on a gml:Point (none at all means WGS-84 too).
_WGS84 = frozenset(
    {
        "EPSG:4326",
        "urn:ogc:def:crs:EPSG::4326",
        "urn:ogc:def:crs:EPSG:6.6:4326",
        "http://www.opengis.net/gml/srs/epsg.xml#4326",
        "http://www.opengis.net/def/crs/EPSG/0/4326",
    }
)
_AGENCY = re.compile(r"[a-z][a-z0-9-]{1,31}")  # ContactInformation.agency's pattern

# `ResourceMessage.kind` field -> EDXL-RM MessageContentType (and root element).
_KINDS: dict[str, str] = {
    "request_resource": "RequestResource",
    "response_to_request_resource": "ResponseToRequestResource",
    "requisition_resource": "RequisitionResource",
    "commit_resource": "CommitResource",
    "request_information": "RequestInformation",
    "response_to_request_information": "ResponseToRequestInformation",
    "offer_unsolicited_resource": "OfferUnsolicitedResource",
    "release_resource": "ReleaseResource",
    "request_return": "RequestReturn",
    "response_to_request_return": "ResponseToRequestReturn",
    "request_resource_deployment_status": "RequestResourceDeploymentStatus",
    "report_resource_deployment_status": "ReportResourceDeploymentStatus",
}
_FIELDS = {name: field for field, name in _KINDS.items()}
SUPPORTED_TYPES = tuple(_KINDS.values())
UNSUPPORTED_TYPES = (
    "RequestQuote",
    "ResponseToRequestQuote",
    "RequestExtendedDeploymentDuration",
    "ResponseToRequestExtendedDeploymentDuration",
)

_V = TypeVar("_V", bound=int)


def _xml_names(enum: _EnumTypeWrapper[_V], prefix: str) -> dict[_V, str]:
    """Enum numbers -> the schema's spelling: SCHEDULE_TYPE_REPORT_TO -> "ReportTo"."""
    return {
        number: "".join(word.capitalize() for word in name.removeprefix(prefix).split("_"))
        for name, number in enum.items()
        if not name.endswith("_UNSPECIFIED")
    }


_RECALL = _xml_names(resource_pb2.RecallType, "RECALL_TYPE_")
_ROLE = _xml_names(resource_pb2.ContactRole, "CONTACT_ROLE_")
_SCHEDULE = _xml_names(resource_pb2.ScheduleType, "SCHEDULE_TYPE_")
_DEPLOYMENT = _xml_names(resource_pb2.DeploymentStatus, "DEPLOYMENT_STATUS_")
_KIND = _xml_names(resource_pb2.ResourceKind, "RESOURCE_KIND_")
# The OASIS enumeration is Accept, Decline, Provisional: the proto exports CONDITIONAL as
# Provisional (its conditions in ResponseReason), so it reads back as PROVISIONAL.
_RESPONSE_IN = {
    number: name
    for number, name in _xml_names(resource_pb2.ResponseType, "RESPONSE_TYPE_").items()
    if number != resource_pb2.RESPONSE_TYPE_CONDITIONAL
}
_RESPONSE = {**_RESPONSE_IN, resource_pb2.RESPONSE_TYPE_CONDITIONAL: "Provisional"}

_REQUESTED_ARRIVAL = resource_pb2.SCHEDULE_TYPE_REQUESTED_ARRIVAL


class RmError(XmlError):
    """An EDXL-RM document cannot be read (unsafe, not RM, unsupported type, schema-invalid,
    or holding a value DutyLink cannot represent), or a message cannot be written as EDXL-RM."""


def _m(name: str) -> str:
    return f"{{{MSG_NS}}}{name}"


def _r(name: str) -> str:
    return f"{{{RM_NS}}}{name}"


@dataclass(frozen=True)
class _Shape:
    """What one message type's schema declares, read from the XSD itself."""

    name: str
    elements: frozenset[str]  # names of all element declarations in the message schema
    funding_ns: str  # RequestResource declares Funding inline, so FundCode is in the msg ns
    status_required: bool  # ResponseToRequestReturn: a Resource must carry a ResourceStatus


@functools.cache
def _shape(message_type: str) -> _Shape:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    path = SCHEMA_DIR / "edxl-rm" / "1.0" / f"EDXL-RM{message_type}.xsd"
    declarations = {
        str(decl.get("name")): decl
        for decl in reversed(list(etree.parse(str(path), parser).iter(f"{{{_XS_NS}}}element")))
        if decl.get("name")
    }  # reversed: the first declaration of a name wins
    status = declarations.get("ResourceStatus")
    funding = declarations.get("Funding")
    return _Shape(
        name=message_type,
        elements=frozenset(declarations),
        funding_ns=MSG_NS if funding is not None and funding.get("type") is None else RM_NS,
        status_required=status is not None and status.get("minOccurs", "1") != "0",
    )


def _schema(message_type: str) -> etree.XMLSchema:
    return load_schema(f"edxl-rm/1.0/EDXL-RM{message_type}.xsd")


# --------------------------------------------------------------------------------------------
# EDXL-RM XML -> ResourceMessage


def parse_rm(data: bytes, *, max_bytes: int = MAX_XML_BYTES) -> resource_pb2.ResourceMessage:
    """The ResourceMessage in an EDXL-RM 1.0 document. Raises RmError naming element and line.

    Does not run the protovalidate rules (the gateway does on publish); it does refuse what
    the proto cannot hold faithfully (e.g. two incidents, QuantityText, a non-WGS-84 point).
    """
    root = parse_xml(data, max_bytes=max_bytes, error=RmError)
    qname = etree.QName(root)
    if qname.namespace != MSG_NS:
        raise RmError(
            f"<{qname.localname}>: not an EDXL-RM 1.0 message: the root must be in namespace "
            f"{MSG_NS}, not {qname.namespace or 'no namespace'}",
            line=root.sourceline,
        )
    message_type = qname.localname
    if message_type not in _FIELDS:
        content_type = root.find(_m("MessageContentType"))
        where = content_type if content_type is not None else root
        value = text(where) if content_type is not None else message_type
        known = "is not supported" if value in UNSUPPORTED_TYPES else "is not an EDXL-RM type"
        raise RmError(
            f"<{local_name(where)}>: {value!r} {known} (supported: {', '.join(SUPPORTED_TYPES)})",
            line=where.sourceline,
        )
    validate(_schema(message_type), root, error=RmError)
    return _Reader(_shape(message_type)).message(root)


class _Reader:
    def __init__(self, shape: _Shape) -> None:
        self.shape = shape

    def message(self, root: etree._Element) -> resource_pb2.ResourceMessage:
        message = resource_pb2.ResourceMessage()
        message.message_id = _text(root, _m("MessageID"))
        self.time(_one(root, _m("SentDateTime")), message.sent_at)
        message.message_description = _text(root, _m("MessageDescription"))
        message.originating_message_id = _text(root, _m("OriginatingMessageID"))
        message.preceding_message_id = _text(root, _m("PrecedingMessageID"))
        incidents = root.findall(_m("IncidentInformation"))
        if len(incidents) > 1:
            raise RmError(
                "<IncidentInformation>: a DutyLink resource message belongs to one incident; "
                f"this one names {len(incidents)}",
                line=incidents[1].sourceline,
            )
        for incident in incidents:
            message.incident_id = _text(incident, _r("IncidentID"))
            message.incident_description = _text(incident, _r("IncidentDescription"))
        if (recall := root.find(_m("MessageRecall"))) is not None:
            message.recall.recall_message_id = _text(recall, _r("RecallMessageID"))
            message.recall.type = _enum(_one(recall, _r("RecallType")), _RECALL)
        for funding in root.iterfind(_m("Funding")):
            ns = self.shape.funding_ns
            message.funding.add(
                fund_code=_text(funding, f"{{{ns}}}FundCode"),
                funding_info=_text(funding, f"{{{ns}}}FundingInfo"),
            )
        for contact in root.iterfind(_m("ContactInformation")):
            self.contact(contact, message.contacts.add())
        body = getattr(message, _FIELDS[self.shape.name])
        body.SetInParent()  # the kind is set even with no lines (RequestInformation)
        lines = root.findall(_m("ResourceInformation"))
        for line in lines:
            self.line(line, body.resource_infos.add())
        if isinstance(body, resource_pb2.RequestResource):
            _fold_requested_arrival(body, lines)
        return message

    def time(self, element: etree._Element, target: Timestamp) -> None:
        try:
            moment, nanos = parse_datetime(text(element))
            seconds = (moment - _EPOCH) // timedelta(seconds=1)
        except (ValueError, OverflowError) as exc:
            raise RmError(f"<{local_name(element)}>: {exc}", line=element.sourceline) from None
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
            raise RmError(
                f"<{local_name(element)}>: {text(element)!r} is outside years 0001-9999 in UTC",
                line=element.sourceline,
            )
        target.seconds, target.nanos = seconds, nanos

    def contact(self, element: etree._Element, contact: resource_pb2.ContactInformation) -> None:
        contact.description = _text(element, _r("ContactDescription"))
        if (role := element.find(_r("ContactRole"))) is not None:
            contact.role = _enum(role, _ROLE)
        for radio in element.iterfind(_r("Radio")):
            contact.radios.add(
                radio_type=_value(_one(radio, _r("RadioType"))),
                channel=_text(radio, _r("RadioChannel")),
            )
        if (location := element.find(_r("ContactLocation"))) is not None:
            self.location(location, contact.location)
        if (party := element.find(_r("AdditionalContactInformation"))) is not None:
            _read_party(party, contact)

    def location(self, element: etree._Element, location: common_pb2.Location) -> None:
        location.SetInParent()
        location.address = _text(element, _r("LocationDescription"))
        if (address := element.find(_r("Address"))) is not None:
            if not location.address:
                lines = address.findall(f"{{{XAL_NS}}}FreeTextAddress/{{{XAL_NS}}}AddressLine")
                location.address = ", ".join(_collapse(text(line)) for line in lines)
            _read_jurisdiction(address, location)
        if (area := element.find(_r("TargetArea"))) is not None:
            _read_point(area, location.point)

    def line(self, element: etree._Element, info: resource_pb2.ResourceInfo) -> None:
        info.resource_info_element_id = _text(element, _m("ResourceInfoElementID"))
        if (response := element.find(_m("ResponseInformation"))) is not None:
            info.response.preceding_resource_info_element_id = _text(
                response, _r("PrecedingResourceInfoElementID")
            )
            info.response.type = _enum(_one(response, _r("ResponseType")), _RESPONSE_IN)
            if (reason_code := response.find(_r("ReasonCode"))) is not None:
                info.response.reason_code = _value(reason_code)
            info.response.reason = _text(response, _r("ResponseReason"))
        if (resource := element.find(_m("Resource"))) is not None:
            self.resource(resource, info.resource)
        if (assignment := element.find(_m("AssignmentInformation"))) is not None:
            self.assignment(assignment, info.assignment)
        for schedule in element.iterfind(_m("ScheduleInformation")):
            target = info.schedules.add(type=_enum(_one(schedule, _m("ScheduleType")), _SCHEDULE))
            if (moment := schedule.find(_m("DateTime"))) is not None:
                self.time(moment, target.time)
            if (place := schedule.find(_m("Location"))) is not None:
                self.location(place, target.location)

    def resource(self, element: etree._Element, resource: resource_pb2.Resource) -> None:
        resource.SetInParent()
        resource.resource_id = _text(element, _m("ResourceID"))
        resource.name = _text(element, _m("Name"))
        if (type_structure := element.find(_m("TypeStructure"))) is not None:
            resource.type_info = _value(type_structure)
        kinds = [
            keyword
            for keyword in element.iterfind(_m("Keyword"))
            if _collapse(_text(keyword, _r("ValueListURN"))) == RESOURCE_KIND_LIST
        ]
        if len(kinds) > 1:
            raise RmError(
                f"<Keyword>: a resource has one {RESOURCE_KIND_LIST} keyword, not {len(kinds)}",
                line=kinds[1].sourceline,
            )
        for keyword in kinds:
            resource.kind = _enum(_one(keyword, _r("Value")), _KIND, value=_value(keyword))
        resource.description = _text(element, _m("Description"))
        resource.special_requirements = _text(element, _m("SpecialRequirements"))
        if (owner := element.find(f"{_m('OwnershipInformation')}/{_r('Owner')}")) is not None:
            agency = _collapse(text(owner))
            if not _is_agency(agency):
                raise RmError(
                    f"<Owner>: {agency!r} is not a DutyLink agency id (lowercase letters, digits "
                    "and '-', 2 to 32 characters, e.g. 'fire')",
                    line=owner.sourceline,
                )
            resource.responsible_agency = agency
        if (status := element.find(_m("ResourceStatus"))) is not None:
            resource.status.SetInParent()
            if (refreshed := status.find(_m("InventoryRefreshDateTime"))) is not None:
                self.time(refreshed, resource.status.inventory_refresh_time)
            if (deployment := status.find(_m("DeploymentStatus"))) is not None:
                resource.status.deployment_status = _enum(
                    deployment, _DEPLOYMENT, value=_value(deployment)
                )
            resource.status.availability = _text(status, _m("Availability"))

    def assignment(self, element: etree._Element, assignment: resource_pb2.Assignment) -> None:
        assignment.SetInParent()
        if (quantity := element.find(_m("Quantity"))) is not None:
            measured = quantity.find(_r("MeasuredQuantity"))
            if measured is None:  # the schema's other choice: QuantityText
                raise RmError(
                    "<QuantityText>: free-text quantities are not supported; DutyLink needs "
                    "<MeasuredQuantity> with <Amount> and <UnitOfMeasure>",
                    line=_one(quantity, _r("QuantityText")).sourceline,
                )
            amount = _one(measured, _r("Amount"))
            value = float(text(amount))
            if not math.isfinite(value):
                raise RmError(f"<Amount>: {text(amount)!r} is not finite", line=amount.sourceline)
            assignment.quantity.value = value
            if (unit := measured.find(_r("UnitOfMeasure"))) is not None:
                assignment.quantity.unit = _value(unit)
        assignment.restrictions = _text(element, _m("Restrictions"))
        assignment.anticipated_function = _text(element, _m("AnticipatedFunction"))
        assignment.order_id = _text(element, _m("OrderID"))
        if (instructions := element.find(_m("AssignmentInstructions"))) is not None:
            target = assignment.instructions
            target.SetInParent()
            target.mode_of_transportation = _text(instructions, _r("ModeOfTransportation"))
            target.navigation_instructions = _text(instructions, _r("NavigationInstructions"))
            target.reporting_instructions = _text(instructions, _r("ReportingInstructions"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, google.protobuf.Timestamp's range
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_XML_SPACE = re.compile(r"[ \t\n\r]+")


def _one(parent: etree._Element, tag: str) -> etree._Element:
    """A child the schema requires (so it is there after validation)."""
    child = parent.find(tag)
    if child is None:  # only reachable if the schema and this code disagree
        raise RmError(
            f"<{local_name(parent)}>: missing <{tag.split('}')[1]}>", line=parent.sourceline
        )
    return child


def _text(parent: etree._Element, tag: str) -> str:
    child = parent.find(tag)
    return "" if child is None else text(child)


def _collapse(value: str) -> str:
    """xs:whiteSpace collapse (XML's four space characters only), as the CIQ string types and
    xs:anyURI declare."""
    return _XML_SPACE.sub(" ", value).strip(" ")


def _is_agency(value: str) -> bool:
    return _AGENCY.fullmatch(value) is not None


def _value(value_list: etree._Element) -> str:
    """The one <Value> of a ValueList. The ValueListURN is not kept: DutyLink reads the value
    whichever list it comes from (and checks it where the proto has an enum)."""
    values = value_list.findall(_r("Value"))
    if len(values) != 1:
        raise RmError(
            f"<{local_name(value_list)}>: DutyLink reads one <Value> here, not {len(values)}",
            line=values[1].sourceline if values else value_list.sourceline,
        )
    return text(values[0])


def _enum(element: etree._Element, names: dict[_V, str], *, value: str | None = None) -> _V:
    """The enum number of an element's value (or of `value`, for value lists)."""
    found = text(element) if value is None else value
    for number, name in names.items():
        if name == found:
            return number
    accepted = ", ".join(dict.fromkeys(names.values()))  # unique, in enum order
    raise RmError(
        f"<{local_name(element)}>: {found!r} is not one of DutyLink's values ({accepted})",
        line=element.sourceline,
    )


def _read_party(party: etree._Element, contact: resource_pb2.ContactInformation) -> None:
    """Flatten the CIQ party into person name, agency, phone and e-mail (the first of each)."""
    ns = {"xpil": XPIL_NS, "xnl": XNL_NS}
    person = party.find("xpil:PartyName/xnl:PersonName", ns)
    if person is not None:
        parts = [_collapse(text(e)) for e in person.iterfind("xnl:NameElement", ns)]
        contact.person_name = " ".join(part for part in parts if part)
    organisation = party.find("xpil:PartyName/xnl:OrganisationName/xnl:NameElement", ns)
    # A DutyLink agency id; other organisation names are not modelled (README).
    if organisation is not None and _is_agency(name := _collapse(text(organisation))):
        contact.agency = name
    number = party.find("xpil:ContactNumbers/xpil:ContactNumber", ns)
    if number is not None:
        parts = [_collapse(text(e)) for e in number.iterfind("xpil:ContactNumberElement", ns)]
        contact.phone = " ".join(part for part in parts if part)
    for address in party.iterfind(
        "xpil:ElectronicAddressIdentifiers/xpil:ElectronicAddressIdentifier", ns
    ):
        if address.get(f"{{{XPIL_NS}}}Type") == "EMAIL":
            contact.email = _collapse(text(address))
            break


def _read_jurisdiction(address: etree._Element, location: common_pb2.Location) -> None:
    codes: dict[str, str] = {}
    names = [
        *address.iterfind(f"{{{XAL_NS}}}AdministrativeArea/{{{XAL_NS}}}NameElement"),
        *address.iterfind(f"{{{XAL_NS}}}Locality/{{{XAL_NS}}}NameElement"),
    ]
    for name in names:
        code_type = _collapse(name.get(f"{{{XAL_NS}}}NameCodeType", ""))
        code = _collapse(name.get(f"{{{XAL_NS}}}NameCode", ""))
        if code_type in (DIVISION_CODE_TYPE, STREET_CODE_TYPE, GRID_ID_TYPE):
            codes.setdefault(code_type, code)
    if DIVISION_CODE_TYPE in codes:
        location.jurisdiction.division_code = codes[DIVISION_CODE_TYPE]
        location.jurisdiction.street_code = codes.get(STREET_CODE_TYPE, "")
        location.jurisdiction.grid_id = codes.get(GRID_ID_TYPE, "")


def _read_point(area: etree._Element, point: common_pb2.GeoPoint) -> None:
    # WhereType is a choice of exactly one geometry (skip a stray processing instruction).
    shape = next(child for child in area if isinstance(child.tag, str))
    if etree.QName(shape).localname != "Point":
        raise RmError(
            f"<{local_name(shape)}>: only a gml:Point target area is supported (DutyLink "
            "locations are a point and/or an address)",
            line=shape.sourceline,
        )
    position = shape.find(f"{{{GML_NS}}}pos")
    assert position is not None  # required by gml:PointType
    for srs in (shape.get("srsName"), position.get("srsName")):
        if srs is not None and srs.strip() not in _WGS84:
            raise RmError(
                f"<{local_name(shape)}>: srsName {srs!r} is not WGS-84 (EPSG:4326); convert the "
                "point before sending",
                line=shape.sourceline,
            )
    numbers = [float(n) for n in text(position).split()]
    if len(numbers) != 2 or not all(math.isfinite(n) for n in numbers):
        raise RmError(
            f"<pos>: expected 'latitude longitude', got {text(position).strip()!r}",
            line=position.sourceline,
        )
    point.latitude, point.longitude = numbers


def _fold_requested_arrival(
    body: resource_pb2.RequestResource, lines: list[etree._Element]
) -> None:
    """Recover `needed_by` and `deliver_to`, which travel as each line's RequestedArrival
    schedule: when every line has exactly one and they are all equal, it is the message's
    default and leaves the lines; otherwise the lines keep their own and `deliver_to` (which
    then applies to no line) is the first line's place."""
    arrivals = [
        [s for s in info.schedules if s.type == _REQUESTED_ARRIVAL] for info in body.resource_infos
    ]
    for element, found in zip(lines, arrivals, strict=True):
        if not any(schedule.HasField("location") for schedule in found):
            raise RmError(
                "<ResourceInformation>: each RequestResource line needs a RequestedArrival "
                "schedule with a <Location> (DutyLink's deliver_to)",
                line=element.sourceline,
            )
    first = next(schedule for schedule in arrivals[0] if schedule.HasField("location"))
    body.deliver_to.CopyFrom(first.location)
    if all(len(found) == 1 and found[0] == first for found in arrivals):
        if first.HasField("time"):
            body.needed_by.CopyFrom(first.time)
        for info in body.resource_infos:
            kept = [s for s in info.schedules if s.type != _REQUESTED_ARRIVAL]
            del info.schedules[:]
            info.schedules.extend(kept)


# --------------------------------------------------------------------------------------------
# ResourceMessage -> EDXL-RM XML


def to_rm_xml(
    message: resource_pb2.ResourceMessage, *, default_sent_at: datetime | None = None
) -> bytes:
    """The EDXL-RM 1.0 document (UTF-8) for `message`, validated against its type's schema.

    `default_sent_at` is the SentDateTime when `message.sent_at` is unset (the envelope's
    time). Raises RmError for a field the message type cannot carry in EDXL-RM (naming the
    field) and for a document the schema rejects (naming the element's path).
    """
    kind = message.WhichOneof("kind")
    if kind is None:
        raise RmError("the message has no kind (request_resource, commit_resource, ...)")
    shape = _shape(_KINDS[kind])
    root = _Writer(shape, kind).message(message, default_sent_at)
    etree.cleanup_namespaces(root)
    validate(_schema(shape.name), root, error=RmError)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=True)


def _sub(parent: etree._Element, tag: str, value: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, tag)
    if value is not None:
        child.text = value
    return child


def _value_list(parent: etree._Element, tag: str, urn: str, value: str) -> None:
    element = _sub(parent, tag)
    _sub(element, _r("ValueListURN"), urn)
    _sub(element, _r("Value"), value)


def _format_double(value: float, path: str) -> str:
    if not math.isfinite(value):
        raise RmError(f"{path}: {value} cannot be written as an xs:double amount")
    # Integral amounts as "3", not "3.0"; others in their shortest round-trip form.
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


class _Writer:
    def __init__(self, shape: _Shape, kind: str) -> None:
        self.shape = shape
        self.kind = kind

    def allow(self, element: str, path: str, *, present: bool = True) -> bool:
        """Whether to write `path`; refuses a set field whose element the type lacks."""
        if present and element not in self.shape.elements:
            raise RmError(
                f"{path}: EDXL-RM {self.shape.name} has no <{element}>, so this field cannot be "
                "sent in this message type; leave it empty"
            )
        return present

    def message(
        self, message: resource_pb2.ResourceMessage, default_sent_at: datetime | None
    ) -> etree._Element:
        root = etree.Element(_m(self.shape.name), nsmap=_NSMAP)
        _sub(root, _m("MessageID"), message.message_id)
        if message.HasField("sent_at"):
            _sub(root, _m("SentDateTime"), _timestamp_text(message.sent_at, "sent_at"))
        elif default_sent_at is not None:
            _sub(root, _m("SentDateTime"), format_datetime(default_sent_at))
        else:
            raise RmError("sent_at: EDXL-RM needs SentDateTime; set it or pass default_sent_at")
        _sub(root, _m("MessageContentType"), self.shape.name)
        if message.message_description:
            _sub(root, _m("MessageDescription"), message.message_description)
        _sub(root, _m("OriginatingMessageID"), message.originating_message_id)
        if self.allow(
            "PrecedingMessageID", "preceding_message_id", present=bool(message.preceding_message_id)
        ):
            _sub(root, _m("PrecedingMessageID"), message.preceding_message_id)
        if message.incident_id or message.incident_description:
            incident = _sub(root, _m("IncidentInformation"))
            if message.incident_id:
                _sub(incident, _r("IncidentID"), message.incident_id)
            if message.incident_description:
                _sub(incident, _r("IncidentDescription"), message.incident_description)
        if message.HasField("recall"):
            recall = _sub(root, _m("MessageRecall"))
            _sub(recall, _r("RecallMessageID"), message.recall.recall_message_id)
            _sub(recall, _r("RecallType"), self.name(_RECALL, message.recall.type, "recall.type"))
        for i, funding in enumerate(message.funding):
            self.allow("Funding", f"funding[{i}]")
            element = _sub(root, _m("Funding"))
            ns = self.shape.funding_ns
            if funding.fund_code:
                _sub(element, f"{{{ns}}}FundCode", funding.fund_code)
            if funding.funding_info:
                _sub(element, f"{{{ns}}}FundingInfo", funding.funding_info)
        for i, contact in enumerate(message.contacts):
            self.contact(_sub(root, _m("ContactInformation")), contact, f"contacts[{i}]")
        body = getattr(message, self.kind)
        for i, info in enumerate(body.resource_infos):
            path = f"{self.kind}.resource_infos[{i}]"
            schedules = list(info.schedules)
            if isinstance(body, resource_pb2.RequestResource):
                schedules = _requested_arrivals(body, schedules)
            self.line(_sub(root, _m("ResourceInformation")), info, schedules, path)
        return root

    def name(self, names: dict[_V, str], number: _V, path: str) -> str:
        if number not in names:
            raise RmError(f"{path}: {number} has no EDXL-RM value (unset or unknown)")
        return names[number]

    def contact(
        self, element: etree._Element, contact: resource_pb2.ContactInformation, path: str
    ) -> None:
        if contact.description:
            _sub(element, _r("ContactDescription"), contact.description)
        if contact.role:
            _sub(element, _r("ContactRole"), self.name(_ROLE, contact.role, f"{path}.role"))
        for radio in contact.radios:
            radio_element = _sub(element, _r("Radio"))
            _value_list(radio_element, _r("RadioType"), RADIO_TYPE_LIST, radio.radio_type)
            _sub(radio_element, _r("RadioChannel"), radio.channel)
        if contact.HasField("location"):
            self.location(
                _sub(element, _r("ContactLocation")), contact.location, f"{path}.location"
            )
        if contact.person_name or contact.agency or contact.phone or contact.email:
            _write_party(_sub(element, _r("AdditionalContactInformation")), contact)

    def location(self, element: etree._Element, location: common_pb2.Location, path: str) -> None:
        if location.address:
            _sub(element, _r("LocationDescription"), location.address)
        if location.HasField("jurisdiction") and location.jurisdiction.division_code:
            _write_jurisdiction(_sub(element, _r("Address")), location.jurisdiction)
        if location.HasField("point"):
            point = _sub(_sub(element, _r("TargetArea")), f"{{{GML_NS}}}Point")
            lat, lon = location.point.latitude, location.point.longitude
            if not (math.isfinite(lat) and math.isfinite(lon)):
                raise RmError(f"{path}.point: coordinates must be finite")
            _sub(point, f"{{{GML_NS}}}pos", f"{lat!r} {lon!r}")

    def line(
        self,
        element: etree._Element,
        info: resource_pb2.ResourceInfo,
        schedules: Iterable[resource_pb2.Schedule],
        path: str,
    ) -> None:
        _sub(element, _m("ResourceInfoElementID"), info.resource_info_element_id)
        if self.allow("ResponseInformation", f"{path}.response", present=info.HasField("response")):
            response = info.response
            target = _sub(element, _m("ResponseInformation"))
            _sub(
                target,
                _r("PrecedingResourceInfoElementID"),
                response.preceding_resource_info_element_id,
            )
            _sub(
                target,
                _r("ResponseType"),
                self.name(_RESPONSE, response.type, f"{path}.response.type"),
            )
            if response.reason_code:
                _value_list(target, _r("ReasonCode"), REASON_CODE_LIST, response.reason_code)
            if response.reason:
                _sub(target, _r("ResponseReason"), response.reason)
        if info.HasField("resource"):
            self.resource(_sub(element, _m("Resource")), info.resource, f"{path}.resource")
        if info.HasField("assignment"):
            self.assignment(
                _sub(element, _m("AssignmentInformation")), info.assignment, f"{path}.assignment"
            )
        for j, schedule in enumerate(schedules):
            target = _sub(element, _m("ScheduleInformation"))
            where = f"{path}.schedules[{j}]"
            _sub(target, _m("ScheduleType"), self.name(_SCHEDULE, schedule.type, f"{where}.type"))
            if schedule.HasField("time"):
                _sub(target, _m("DateTime"), _timestamp_text(schedule.time, f"{where}.time"))
            if schedule.HasField("location"):
                self.location(_sub(target, _m("Location")), schedule.location, f"{where}.location")

    def resource(self, element: etree._Element, resource: resource_pb2.Resource, path: str) -> None:
        if resource.resource_id:
            _sub(element, _m("ResourceID"), resource.resource_id)
        if resource.name:
            _sub(element, _m("Name"), resource.name)
        if resource.type_info:
            _value_list(element, _m("TypeStructure"), RESOURCE_TYPE_LIST, resource.type_info)
        if resource.kind:
            kind = self.name(_KIND, resource.kind, f"{path}.kind")
            _value_list(element, _m("Keyword"), RESOURCE_KIND_LIST, kind)
        if resource.description:
            _sub(element, _m("Description"), resource.description)
        if resource.special_requirements:
            _sub(element, _m("SpecialRequirements"), resource.special_requirements)
        if self.allow(
            "OwnershipInformation",
            f"{path}.responsible_agency",
            present=bool(resource.responsible_agency),
        ):
            _sub(
                _sub(element, _m("OwnershipInformation")), _r("Owner"), resource.responsible_agency
            )
        status = resource.status
        has_status = resource.HasField("status")
        if self.shape.status_required and not (
            has_status and status.deployment_status and status.availability
        ):
            raise RmError(
                f"{path}.status: EDXL-RM {self.shape.name} requires a resource's ResourceStatus "
                "with DeploymentStatus and Availability; set deployment_status and availability"
            )
        if self.allow("ResourceStatus", f"{path}.status", present=has_status):
            target = _sub(element, _m("ResourceStatus"))
            if self.allow(
                "InventoryRefreshDateTime",
                f"{path}.status.inventory_refresh_time",
                present=status.HasField("inventory_refresh_time"),
            ):
                when = _timestamp_text(
                    status.inventory_refresh_time, f"{path}.status.inventory_refresh_time"
                )
                _sub(target, _m("InventoryRefreshDateTime"), when)
            if status.deployment_status:
                value = self.name(
                    _DEPLOYMENT, status.deployment_status, f"{path}.status.deployment_status"
                )
                _value_list(target, _m("DeploymentStatus"), DEPLOYMENT_STATUS_LIST, value)
            if self.allow(
                "Availability", f"{path}.status.availability", present=bool(status.availability)
            ):
                _sub(target, _m("Availability"), status.availability)

    def assignment(
        self, element: etree._Element, assignment: resource_pb2.Assignment, path: str
    ) -> None:
        if assignment.HasField("quantity"):
            measured = _sub(_sub(element, _m("Quantity")), _r("MeasuredQuantity"))
            amount = _format_double(assignment.quantity.value, f"{path}.quantity.value")
            _sub(measured, _r("Amount"), amount)
            if assignment.quantity.unit:
                _value_list(measured, _r("UnitOfMeasure"), UNIT_LIST, assignment.quantity.unit)
        if assignment.restrictions:
            _sub(element, _m("Restrictions"), assignment.restrictions)
        if assignment.anticipated_function:
            _sub(element, _m("AnticipatedFunction"), assignment.anticipated_function)
        if self.allow("OrderID", f"{path}.order_id", present=bool(assignment.order_id)):
            _sub(element, _m("OrderID"), assignment.order_id)
        if self.allow(
            "AssignmentInstructions",
            f"{path}.instructions",
            present=assignment.HasField("instructions"),
        ):
            instructions = assignment.instructions
            target = _sub(element, _m("AssignmentInstructions"))
            for tag, value in (
                ("ModeOfTransportation", instructions.mode_of_transportation),
                ("NavigationInstructions", instructions.navigation_instructions),
                ("ReportingInstructions", instructions.reporting_instructions),
            ):
                if value:
                    _sub(target, _r(tag), value)


def _timestamp_text(timestamp: Timestamp, path: str) -> str:
    if not 0 <= timestamp.nanos < 1_000_000_000:
        raise RmError(f"{path}: nanos {timestamp.nanos} out of range")
    try:
        moment = _EPOCH + timedelta(seconds=timestamp.seconds)
    except OverflowError:
        raise RmError(f"{path}: {timestamp.seconds} s is outside years 0001-9999") from None
    return format_datetime(moment, timestamp.nanos)


def _requested_arrivals(
    body: resource_pb2.RequestResource, schedules: list[resource_pb2.Schedule]
) -> list[resource_pb2.Schedule]:
    """A line's schedules with the message's needed_by/deliver_to applied: a line without a
    RequestedArrival gets one first; a RequestedArrival without a place gets deliver_to."""
    if not any(schedule.type == _REQUESTED_ARRIVAL for schedule in schedules):
        default = resource_pb2.Schedule(type=_REQUESTED_ARRIVAL)
        if body.HasField("needed_by"):
            default.time.CopyFrom(body.needed_by)
        if body.HasField("deliver_to"):
            default.location.CopyFrom(body.deliver_to)
        has_content = default.HasField("time") or default.HasField("location")
        return [default, *schedules] if has_content else schedules
    completed = []
    for schedule in schedules:
        if schedule.type == _REQUESTED_ARRIVAL and not schedule.HasField("location"):
            schedule = resource_pb2.Schedule(
                type=schedule.type,
                time=schedule.time if schedule.HasField("time") else None,
                location=body.deliver_to if body.HasField("deliver_to") else None,
            )
        completed.append(schedule)
    return completed


def _write_party(element: etree._Element, contact: resource_pb2.ContactInformation) -> None:
    """CIQ xPIL party, in PartyType's order: PartyName, ContactNumbers, ElectronicAddress…"""
    xpil: Callable[[str], str] = lambda name: f"{{{XPIL_NS}}}{name}"  # noqa: E731
    xnl: Callable[[str], str] = lambda name: f"{{{XNL_NS}}}{name}"  # noqa: E731
    if contact.person_name or contact.agency:
        names = _sub(element, xpil("PartyName"))
        if contact.person_name:
            _sub(_sub(names, xnl("PersonName")), xnl("NameElement"), contact.person_name)
        if contact.agency:
            _sub(_sub(names, xnl("OrganisationName")), xnl("NameElement"), contact.agency)
    if contact.phone:
        numbers = _sub(_sub(element, xpil("ContactNumbers")), xpil("ContactNumber"))
        _sub(numbers, xpil("ContactNumberElement"), contact.phone)
    if contact.email:
        addresses = _sub(element, xpil("ElectronicAddressIdentifiers"))
        email = _sub(addresses, xpil("ElectronicAddressIdentifier"), contact.email)
        email.set(xpil("Type"), "EMAIL")


def _write_jurisdiction(element: etree._Element, jurisdiction: common_pb2.Jurisdiction) -> None:
    """xAL: the GB/T 2260 code on the AdministrativeArea; street and grid on the Locality."""

    def name(parent: etree._Element, code_type: str, code: str) -> None:
        named = _sub(parent, f"{{{XAL_NS}}}NameElement", code)
        named.set(f"{{{XAL_NS}}}NameCode", code)
        named.set(f"{{{XAL_NS}}}NameCodeType", code_type)

    name(
        _sub(element, f"{{{XAL_NS}}}AdministrativeArea"),
        DIVISION_CODE_TYPE,
        jurisdiction.division_code,
    )
    if jurisdiction.street_code or jurisdiction.grid_id:
        locality = _sub(element, f"{{{XAL_NS}}}Locality")
        if jurisdiction.street_code:
            name(locality, STREET_CODE_TYPE, jurisdiction.street_code)
        if jurisdiction.grid_id:
            name(locality, GRID_ID_TYPE, jurisdiction.grid_id)
