"""EDXL-RM 1.0 XML <-> `dutylink.v1.ResourceMessage`. Pure: bytes in, messages out, and back.

Long because it maps the 16 EDXL-RM 1.0 message types element by element in both directions (the
reader and the writer), keeping the CIQ party and location forms and the value lists as received
beside DutyLink's views of them.

`parse_rm` refuses unsafe XML (see `xml.py`), checks the message type, validates against that
type's OASIS schema, then maps every element into the proto: DutyLink's convenient fields as
views, and what they cannot hold in the received form beside them (value lists as received,
time-zone forms, CIQ parties and locations as XML when the view does not reproduce them); `to_rm_xml` writes the same
elements in schema order and validates its own output before returning it. README.md beside
this file has the mapping tables.

The 16 message schemas differ in small ways (RequestResource has no OwnershipInformation,
CommitResource no Availability, …). Rather than a second copy of those differences, the
writer asks the message's own schema which elements it declares (`_shape`), and a proto field
the type cannot carry is refused with its path instead of being dropped.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, MutableSequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree

from dutylink.adapters.edxl.rmdiff import element_differences
from dutylink.adapters.edxl.xml import (
    MAX_XML_BYTES,
    SCHEMA_DIR,
    XmlError,
    format_datetime,
    has_offset,
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
# What ContactInformation.phone / .email accept; other values stay in party_xml only.
_PHONE = re.compile(r"[0-9+()*# -]{0,32}")
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)

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
    "request_quote": "RequestQuote",
    "response_to_request_quote": "ResponseToRequestQuote",
    "request_extended_deployment_duration": "RequestExtendedDeploymentDuration",
    "response_to_request_extended_deployment_duration": (
        "ResponseToRequestExtendedDeploymentDuration"
    ),
}
_FIELDS = {name: field for field, name in _KINDS.items()}
SUPPORTED_TYPES = tuple(_KINDS.values())

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


def parse_rm(
    data: bytes,
    *,
    max_bytes: int = MAX_XML_BYTES,
    default_utc_offset_minutes: int = 0,
    keep_xml: bool = False,
) -> resource_pb2.ResourceMessage:
    """The ResourceMessage in an EDXL-RM 1.0 document. Raises RmError naming element and line.

    A dateTime without an offset (schema-valid) is read in the zone
    `default_utc_offset_minutes` east of UTC, and its `TimeZoneForm` says so, so export
    writes it without an offset again. With `keep_xml`, `rm_xml` keeps `data` (for verbatim
    forwarding or signatures; the typed fields alone already export an equal document).
    Does not run the protovalidate rules (the gateway does on publish).
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
        raise RmError(
            f"<{local_name(where)}>: {value!r} is not an EDXL-RM type "
            f"(known: {', '.join(SUPPORTED_TYPES)})",
            line=where.sourceline,
        )
    if not -840 <= default_utc_offset_minutes <= 840:
        raise RmError(f"default_utc_offset_minutes {default_utc_offset_minutes} is not an offset")
    validate(_schema(message_type), root, error=RmError)
    zone = timezone(timedelta(minutes=default_utc_offset_minutes))
    message = _Reader(_shape(message_type), zone).message(root)
    if keep_xml:
        message.rm_xml = data
    return message


class _Reader:
    def __init__(self, shape: _Shape, default_zone: timezone) -> None:
        self.shape = shape
        self.default_zone = default_zone

    def message(self, root: etree._Element) -> resource_pb2.ResourceMessage:
        message = resource_pb2.ResourceMessage()
        message.message_id = _text(root, _m("MessageID"))
        self.time(_one(root, _m("SentDateTime")), message.sent_at, message.sent_at_zone)
        message.message_description = _text(root, _m("MessageDescription"))
        message.originating_message_id = _text(root, _m("OriginatingMessageID"))
        message.preceding_message_id = _text(root, _m("PrecedingMessageID"))
        for i, incident in enumerate(root.iterfind(_m("IncidentInformation"))):
            target = message if i == 0 else message.additional_incidents.add()
            target.incident_id = _text(incident, _r("IncidentID"))
            target.incident_description = _text(incident, _r("IncidentDescription"))
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
            _fold_requested_arrival(body)
        return message

    def time(
        self, element: etree._Element, target: Timestamp, zone: resource_pb2.TimeZoneForm
    ) -> None:
        try:
            moment, nanos = parse_datetime(text(element), default_tz=self.default_zone)
            seconds = (moment - _EPOCH) // timedelta(seconds=1)
            offset = moment.utcoffset()
            assert offset is not None
            zone.utc_offset_minutes = offset // timedelta(minutes=1)
            zone.offset_assumed = not has_offset(text(element))
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
            radio_type = _read_list(_one(radio, _r("RadioType")))
            contact.radios.add(
                radio_type=radio_type.values[0],
                channel=_text(radio, _r("RadioChannel")),
                radio_type_list=radio_type,
            )
        if (location := element.find(_r("ContactLocation"))) is not None:
            contact.location_xml = self.location(location, contact.location)
        if (party := element.find(_r("AdditionalContactInformation"))) is not None:
            _read_party(party, contact)
            rendered = etree.Element(party.tag)
            _write_party(rendered, contact)
            if element_differences(party, rendered):
                contact.party_xml = _standalone(party)

    def location(self, element: etree._Element, location: common_pb2.Location) -> str:
        """Fills `location`; returns the element as XML when the view does not reproduce it."""
        _location_view(element, location)
        rendered = etree.Element(element.tag)
        _write_location(rendered, location, "")
        return _standalone(element) if element_differences(element, rendered) else ""

    def line(self, element: etree._Element, info: resource_pb2.ResourceInfo) -> None:
        info.resource_info_element_id = _text(element, _m("ResourceInfoElementID"))
        if (response := element.find(_m("ResponseInformation"))) is not None:
            info.response.preceding_resource_info_element_id = _text(
                response, _r("PrecedingResourceInfoElementID")
            )
            info.response.type = _enum(_one(response, _r("ResponseType")), _RESPONSE_IN)
            if (reason_code := response.find(_r("ReasonCode"))) is not None:
                info.response.reason_code_list.CopyFrom(_read_list(reason_code))
                info.response.reason_code = _view(info.response.reason_code_list, REASON_CODE_LIST)
            info.response.reason = _text(response, _r("ResponseReason"))
        if (resource := element.find(_m("Resource"))) is not None:
            self.resource(resource, info.resource)
        if (assignment := element.find(_m("AssignmentInformation"))) is not None:
            self.assignment(assignment, info.assignment)
        for schedule in element.iterfind(_m("ScheduleInformation")):
            target = info.schedules.add(type=_enum(_one(schedule, _m("ScheduleType")), _SCHEDULE))
            if (moment := schedule.find(_m("DateTime"))) is not None:
                self.time(moment, target.time, target.time_zone)
            if (place := schedule.find(_m("Location"))) is not None:
                target.location_xml = self.location(place, target.location)

    def resource(self, element: etree._Element, resource: resource_pb2.Resource) -> None:
        resource.SetInParent()
        resource.resource_id = _text(element, _m("ResourceID"))
        resource.name = _text(element, _m("Name"))
        if (type_structure := element.find(_m("TypeStructure"))) is not None:
            resource.type_structure.CopyFrom(_read_list(type_structure))
            resource.type_info = _view(resource.type_structure, RESOURCE_TYPE_LIST)
        if (type_info := element.find(_m("TypeInfo"))) is not None:
            resource.type_info_xml = _standalone(type_info)
        for keyword in element.iterfind(_m("Keyword")):
            resource.keywords.append(_read_list(keyword))
        resource.kind = _kind_view(resource.keywords)
        resource.description = _text(element, _m("Description"))
        resource.credentials = _text(element, _m("Credentials"))
        resource.certifications = _text(element, _m("Certifications"))
        resource.special_requirements = _text(element, _m("SpecialRequirements"))
        if (party := element.find(_m("ResponsibleParty"))) is not None:
            self.contact(party, resource.responsible_party)
        if (ownership := element.find(_m("OwnershipInformation"))) is not None:
            target = resource.ownership
            target.SetInParent()
            target.owner = _text(ownership, _r("Owner"))
            target.owning_jurisdiction = _text(ownership, _r("OwningJurisdiction"))
            target.home_dispatch = _text(ownership, _r("HomeDispatch"))
            target.home_unit = _text(ownership, _r("HomeUnit"))
            resource.responsible_agency = _agency_view(target.owner)
        if (status := element.find(_m("ResourceStatus"))) is not None:
            resource.status.SetInParent()
            if (refreshed := status.find(_m("InventoryRefreshDateTime"))) is not None:
                self.time(
                    refreshed,
                    resource.status.inventory_refresh_time,
                    resource.status.inventory_refresh_zone,
                )
            if (deployment := status.find(_m("DeploymentStatus"))) is not None:
                received = _read_list(deployment)
                resource.status.deployment_status_list.CopyFrom(received)
                resource.status.deployment_status = _enum_view(
                    received, DEPLOYMENT_STATUS_LIST, _DEPLOYMENT
                )
            resource.status.availability = _text(status, _m("Availability"))

    def assignment(self, element: etree._Element, assignment: resource_pb2.Assignment) -> None:
        assignment.SetInParent()
        if (quantity := element.find(_m("Quantity"))) is not None:
            _read_quantity(quantity, assignment.quantity, assignment.quantity_texts)
        assignment.restrictions = _text(element, _m("Restrictions"))
        assignment.anticipated_function = _text(element, _m("AnticipatedFunction"))
        if (price := element.find(_m("PriceQuote"))) is not None:
            assignment.price_quote.SetInParent()
            _read_quantity(price, assignment.price_quote.measured, assignment.price_quote.texts)
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


def _read_list(value_list: etree._Element) -> common_pb2.ValueList:
    """A ValueList exactly as received (its URN whitespace-collapsed, as xs:anyURI is)."""
    return common_pb2.ValueList(
        urn=_collapse(_text(value_list, _r("ValueListURN"))),
        values=[text(value) for value in value_list.iterfind(_r("Value"))],
    )


def _view(received: common_pb2.ValueList, own_list: str) -> str:
    """The convenient string view of a value list: its value when it is DutyLink's list
    `own_list` and holds one value, else ''."""
    return received.values[0] if received.urn == own_list and len(received.values) == 1 else ""


def _enum_view(received: common_pb2.ValueList, own_list: str, names: dict[_V, str]) -> _V:
    """The enum view: the number of the list's one value when the list is DutyLink's and the
    value one of the enum's, else 0 (the value is still carried in the list)."""
    value = _view(received, own_list)
    numbers = {name: number for number, name in names.items()}
    return numbers.get(value, 0)  # type: ignore[return-value]


def _kind_view(keywords: Iterable[common_pb2.ValueList]) -> resource_pb2.ResourceKind.ValueType:
    """Resource.kind: the one DutyLink resource-kind keyword's value, if exactly one."""
    kinds = [keyword for keyword in keywords if keyword.urn == RESOURCE_KIND_LIST]
    if len(kinds) != 1:
        return resource_pb2.RESOURCE_KIND_UNSPECIFIED
    return _enum_view(kinds[0], RESOURCE_KIND_LIST, _KIND)


def _agency_view(owner: str) -> str:
    collapsed = _collapse(owner)
    return collapsed if _is_agency(collapsed) else ""


def _standalone(element: etree._Element) -> str:
    """An element (and its subtree) as a standalone XML document, namespaces declared."""
    copy = etree.fromstring(etree.tostring(element))
    etree.cleanup_namespaces(copy)
    return etree.tostring(copy, encoding="unicode")


def _read_quantity(
    quantity: etree._Element, measured_target: resource_pb2.Quantity, texts: MutableSequence[str]
) -> None:
    """EDXL-RM QuantityType (Quantity, PriceQuote): QuantityText 1..n or MeasuredQuantity."""
    texts.extend(text(line) for line in quantity.iterfind(_r("QuantityText")))
    measured = quantity.find(_r("MeasuredQuantity"))
    if measured is None:
        return
    amount = _one(measured, _r("Amount"))
    value = float(text(amount))
    if not math.isfinite(value):
        raise RmError(f"<Amount>: {text(amount)!r} is not finite", line=amount.sourceline)
    measured_target.value = value
    if (unit := measured.find(_r("UnitOfMeasure"))) is not None:
        measured_target.unit_of_measure.CopyFrom(_read_list(unit))
        measured_target.unit = _view(measured_target.unit_of_measure, UNIT_LIST)
    measured_target.SetInParent()


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
        name = " ".join(part for part in parts if part)
        contact.person_name = name if len(name) <= 64 else ""
    organisation = party.find("xpil:PartyName/xnl:OrganisationName/xnl:NameElement", ns)
    # A DutyLink agency id; other organisation names are not modelled (README).
    if organisation is not None and _is_agency(name := _collapse(text(organisation))):
        contact.agency = name
    number = party.find("xpil:ContactNumbers/xpil:ContactNumber", ns)
    if number is not None:
        parts = [_collapse(text(e)) for e in number.iterfind("xpil:ContactNumberElement", ns)]
        phone = " ".join(part for part in parts if part)
        contact.phone = phone if _PHONE.fullmatch(phone) else ""
    for address in party.iterfind(
        "xpil:ElectronicAddressIdentifiers/xpil:ElectronicAddressIdentifier", ns
    ):
        if address.get(f"{{{XPIL_NS}}}Type") == "EMAIL":
            email = _collapse(text(address))
            contact.email = email if len(email) <= 254 and _EMAIL.fullmatch(email) else ""
            break


def _location_view(element: etree._Element, location: common_pb2.Location) -> None:
    """The Location view of an EDXL-RM LocationType element."""
    location.SetInParent()
    location.address = _text(element, _r("LocationDescription"))
    if (address := element.find(_r("Address"))) is not None:
        if not location.address:
            lines = address.findall(f"{{{XAL_NS}}}FreeTextAddress/{{{XAL_NS}}}AddressLine")
            location.address = ", ".join(_collapse(text(line)) for line in lines)
        _read_jurisdiction(address, location)
    if (area := element.find(_r("TargetArea"))) is not None:
        point = common_pb2.GeoPoint()
        if _read_point(area, point):
            location.point.CopyFrom(point)


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


def _read_point(area: etree._Element, point: common_pb2.GeoPoint) -> bool:
    # WhereType is a choice of exactly one geometry (skip a stray processing instruction).
    # Only a WGS-84 gml:Point with two finite numbers becomes `point`; any other geometry or
    # reference system is left out of the view and travels in the kept location XML.
    shape = next(child for child in area if isinstance(child.tag, str))
    if etree.QName(shape).localname != "Point":
        return False
    position = shape.find(f"{{{GML_NS}}}pos")
    if position is None:
        return False
    for srs in (shape.get("srsName"), position.get("srsName")):
        if srs is not None and srs.strip() not in _WGS84:
            return False
    try:
        numbers = [float(n) for n in text(position).split()]
    except ValueError:
        return False
    if len(numbers) != 2 or not all(math.isfinite(n) for n in numbers):
        return False
    point.latitude, point.longitude = numbers
    return True


def _fold_requested_arrival(body: resource_pb2.RequestResource) -> None:
    """Recover `needed_by` and `deliver_to`, which travel as each line's RequestedArrival
    schedule. When every line's first schedule is its only RequestedArrival, they are all
    equal and the view reproduces it (time and/or a location without kept XML), it is the
    message's default and leaves the lines: the writer puts it back first in each line.
    Otherwise the lines keep their schedules as sent (`schedules_as_sent`) and `deliver_to` /
    `needed_by` are only views of the first RequestedArrival that has them."""
    arrivals = [
        [s for s in info.schedules if s.type == _REQUESTED_ARRIVAL] for info in body.resource_infos
    ]
    first = arrivals[0][0] if arrivals and arrivals[0] else None
    foldable = (
        first is not None
        and (first.HasField("time") or first.HasField("location"))
        and not first.location_xml
        and all(
            len(found) == 1 and found[0] == first and info.schedules[0] == first
            for info, found in zip(body.resource_infos, arrivals, strict=True)
        )
    )
    if foldable and first is not None:
        if first.HasField("time"):
            body.needed_by.CopyFrom(first.time)
            body.needed_by_zone.CopyFrom(first.time_zone)
        if first.HasField("location"):
            body.deliver_to.CopyFrom(first.location)
        for info in body.resource_infos:
            del info.schedules[0]
        return
    body.schedules_as_sent = True
    every = [schedule for found in arrivals for schedule in found]
    if placed := next((s for s in every if s.HasField("location")), None):
        body.deliver_to.CopyFrom(placed.location)
    if timed := next((s for s in every if s.HasField("time")), None):
        body.needed_by.CopyFrom(timed.time)
        body.needed_by_zone.CopyFrom(timed.time_zone)


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


def _value_list(parent: etree._Element, tag: str, urn: str, values: Iterable[str]) -> None:
    element = _sub(parent, tag)
    _sub(element, _r("ValueListURN"), urn)
    for value in values:
        _sub(element, _r("Value"), value)


def _chosen_list(
    received: common_pb2.ValueList | None, view: str, own_list: str, derived: str
) -> tuple[str, list[str]] | None:
    """What to write for a value list: the received list while its view is unchanged
    (`derived` == `view`), else DutyLink's list with the view's value, else nothing."""
    if received is not None and received.values and derived == view:
        return received.urn, list(received.values)
    if view:
        return own_list, [view]
    return None


def _format_double(value: float, path: str) -> str:
    if not math.isfinite(value):
        raise RmError(f"{path}: {value} cannot be written as an xs:double amount")
    # Integral amounts as "3", not "3.0"; others in their shortest round-trip form.
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _kept_xml(kept: str, path: str) -> etree._Element:
    try:
        return parse_xml(kept.encode("utf-8"), error=RmError)
    except XmlError as error:
        raise RmError(f"{path}: kept XML is unreadable: {error}") from None


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
            sent = _timestamp_text(message.sent_at, "sent_at", message.sent_at_zone)
            _sub(root, _m("SentDateTime"), sent)
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
        incidents = [resource_pb2.IncidentInformation()] if message.incident_id or (
            message.incident_description
        ) else []  # fmt: skip
        if incidents:
            incidents[0].incident_id = message.incident_id
            incidents[0].incident_description = message.incident_description
        for incident_info in [*incidents, *message.additional_incidents]:
            incident = _sub(root, _m("IncidentInformation"))
            if incident_info.incident_id:
                _sub(incident, _r("IncidentID"), incident_info.incident_id)
            if incident_info.incident_description:
                _sub(incident, _r("IncidentDescription"), incident_info.incident_description)
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
            if isinstance(body, resource_pb2.RequestResource) and not body.schedules_as_sent:
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
            received = radio.radio_type_list if radio.HasField("radio_type_list") else None
            derived = received.values[0] if received is not None and received.values else ""
            chosen = _chosen_list(received, radio.radio_type, RADIO_TYPE_LIST, derived)
            urn, values = chosen or (RADIO_TYPE_LIST, [""])
            _value_list(radio_element, _r("RadioType"), urn, values)
            _sub(radio_element, _r("RadioChannel"), radio.channel)
        if contact.HasField("location"):
            _write_kept_location(
                element, _r("ContactLocation"), contact.location, contact.location_xml,
                f"{path}.location",
            )  # fmt: skip
        if contact.party_xml:
            kept = _kept_xml(contact.party_xml, f"{path}.party_xml")
            from_kept = resource_pb2.ContactInformation()
            _read_party(kept, from_kept)
            if all(
                getattr(from_kept, field) == getattr(contact, field)
                for field in ("agency", "person_name", "phone", "email")
            ):
                kept.tag = _r("AdditionalContactInformation")
                element.append(kept)
                return
        if contact.person_name or contact.agency or contact.phone or contact.email:
            _write_party(_sub(element, _r("AdditionalContactInformation")), contact)

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
            received = response.reason_code_list if response.HasField("reason_code_list") else None
            derived = _view(received, REASON_CODE_LIST) if received is not None else ""
            if chosen := _chosen_list(received, response.reason_code, REASON_CODE_LIST, derived):
                _value_list(target, _r("ReasonCode"), *chosen)
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
                when = _timestamp_text(schedule.time, f"{where}.time", schedule.time_zone)
                _sub(target, _m("DateTime"), when)
            if schedule.HasField("location"):
                _write_kept_location(
                    target, _m("Location"), schedule.location, schedule.location_xml,
                    f"{where}.location",
                )  # fmt: skip

    def resource(self, element: etree._Element, resource: resource_pb2.Resource, path: str) -> None:
        if resource.resource_id:
            _sub(element, _m("ResourceID"), resource.resource_id)
        if resource.name:
            _sub(element, _m("Name"), resource.name)
        received = resource.type_structure if resource.HasField("type_structure") else None
        derived = _view(received, RESOURCE_TYPE_LIST) if received is not None else ""
        if chosen := _chosen_list(received, resource.type_info, RESOURCE_TYPE_LIST, derived):
            _value_list(element, _m("TypeStructure"), *chosen)
        if resource.type_info_xml:
            kept = _kept_xml(resource.type_info_xml, f"{path}.type_info_xml")
            kept.tag = _m("TypeInfo")
            element.append(kept)
        keywords = list(resource.keywords)
        if _kind_view(keywords) != resource.kind:  # the view was changed: it wins
            keywords = [k for k in keywords if k.urn != RESOURCE_KIND_LIST]
            if resource.kind:
                kind = self.name(_KIND, resource.kind, f"{path}.kind")
                keywords.insert(0, common_pb2.ValueList(urn=RESOURCE_KIND_LIST, values=[kind]))
        for keyword in keywords:
            _value_list(element, _m("Keyword"), keyword.urn, keyword.values)
        if resource.description:
            _sub(element, _m("Description"), resource.description)
        if resource.credentials:
            _sub(element, _m("Credentials"), resource.credentials)
        if resource.certifications:
            _sub(element, _m("Certifications"), resource.certifications)
        if resource.special_requirements:
            _sub(element, _m("SpecialRequirements"), resource.special_requirements)
        if self.allow(
            "ResponsibleParty",
            f"{path}.responsible_party",
            present=resource.HasField("responsible_party"),
        ):
            self.contact(
                _sub(element, _m("ResponsibleParty")),
                resource.responsible_party,
                f"{path}.responsible_party",
            )
        ownership = resource_pb2.OwnershipInformation()
        ownership.CopyFrom(resource.ownership)
        if _agency_view(ownership.owner) != resource.responsible_agency:
            ownership.owner = resource.responsible_agency  # the view was changed: it wins
        if self.allow(
            "OwnershipInformation",
            f"{path}.responsible_agency",
            present=resource.HasField("ownership") or bool(resource.responsible_agency),
        ):
            target = _sub(element, _m("OwnershipInformation"))
            for tag, value in (
                ("Owner", ownership.owner),
                ("OwningJurisdiction", ownership.owning_jurisdiction),
                ("HomeDispatch", ownership.home_dispatch),
                ("HomeUnit", ownership.home_unit),
            ):
                if value:
                    _sub(target, _r(tag), value)
        status = resource.status
        has_status = resource.HasField("status")
        has_deployment = bool(status.deployment_status) or bool(
            status.deployment_status_list.values
        )
        if self.shape.status_required and not (
            has_status and has_deployment and status.availability
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
                    status.inventory_refresh_time,
                    f"{path}.status.inventory_refresh_time",
                    status.inventory_refresh_zone,
                )
                _sub(target, _m("InventoryRefreshDateTime"), when)
            received = (
                status.deployment_status_list if status.HasField("deployment_status_list") else None
            )
            view = (
                self.name(_DEPLOYMENT, status.deployment_status, f"{path}.status.deployment_status")
                if status.deployment_status
                else ""
            )
            derived = (
                _DEPLOYMENT.get(_enum_view(received, DEPLOYMENT_STATUS_LIST, _DEPLOYMENT), "")
                if received is not None
                else ""
            )
            if chosen := _chosen_list(received, view, DEPLOYMENT_STATUS_LIST, derived):
                _value_list(target, _m("DeploymentStatus"), *chosen)
            if self.allow(
                "Availability", f"{path}.status.availability", present=bool(status.availability)
            ):
                _sub(target, _m("Availability"), status.availability)

    def quantity(
        self,
        element: etree._Element,
        measured: resource_pb2.Quantity | None,
        texts: Iterable[str],
        path: str,
    ) -> None:
        """QuantityType's choice: the measured quantity when set, else the texts."""
        if measured is None:
            for line in texts:
                _sub(element, _r("QuantityText"), line)
            return
        target = _sub(element, _r("MeasuredQuantity"))
        _sub(target, _r("Amount"), _format_double(measured.value, f"{path}.value"))
        received = measured.unit_of_measure if measured.HasField("unit_of_measure") else None
        derived = _view(received, UNIT_LIST) if received is not None else ""
        if chosen := _chosen_list(received, measured.unit, UNIT_LIST, derived):
            _value_list(target, _r("UnitOfMeasure"), *chosen)

    def assignment(
        self, element: etree._Element, assignment: resource_pb2.Assignment, path: str
    ) -> None:
        if assignment.HasField("quantity") or assignment.quantity_texts:
            self.quantity(
                _sub(element, _m("Quantity")),
                assignment.quantity if assignment.HasField("quantity") else None,
                assignment.quantity_texts,
                f"{path}.quantity",
            )
        if assignment.restrictions:
            _sub(element, _m("Restrictions"), assignment.restrictions)
        if assignment.anticipated_function:
            _sub(element, _m("AnticipatedFunction"), assignment.anticipated_function)
        price = assignment.price_quote
        if self.allow(
            "PriceQuote",
            f"{path}.price_quote",
            present=assignment.HasField("price_quote")
            and (price.HasField("measured") or bool(price.texts)),
        ):
            self.quantity(
                _sub(element, _m("PriceQuote")),
                price.measured if price.HasField("measured") else None,
                price.texts,
                f"{path}.price_quote.measured",
            )
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


def _write_location(element: etree._Element, location: common_pb2.Location, path: str) -> None:
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


def _write_kept_location(
    parent: etree._Element, tag: str, location: common_pb2.Location, kept: str, path: str
) -> None:
    """The received location XML while `location` still equals its view, else the view."""
    if kept:
        element = _kept_xml(kept, f"{path}_xml")
        derived = common_pb2.Location()
        _location_view(element, derived)
        if derived == location:
            element.tag = tag
            parent.append(element)
            return
    _write_location(_sub(parent, tag), location, path)


def _timestamp_text(
    timestamp: Timestamp, path: str, zone: resource_pb2.TimeZoneForm | None = None
) -> str:
    """xs:dateTime text of a Timestamp, in its recorded zone form (UTC 'Z' when none); an
    assumed offset is left off again, as the sender wrote it."""
    if not 0 <= timestamp.nanos < 1_000_000_000:
        raise RmError(f"{path}: nanos {timestamp.nanos} out of range")
    offset = timedelta(minutes=zone.utc_offset_minutes if zone is not None else 0)
    try:
        moment = (_EPOCH + timedelta(seconds=timestamp.seconds)).astimezone(timezone(offset))
        written = format_datetime(moment, timestamp.nanos)
    except (OverflowError, ValueError):
        raise RmError(f"{path}: {timestamp.seconds} s is outside years 0001-9999") from None
    if zone is not None and zone.offset_assumed:  # drop "Z" or "+hh:mm"
        written = written[:-1] if written.endswith("Z") else written[:-6]
    return written


def _requested_arrivals(
    body: resource_pb2.RequestResource, schedules: list[resource_pb2.Schedule]
) -> list[resource_pb2.Schedule]:
    """A line's schedules with the message's needed_by/deliver_to applied: a line without a
    RequestedArrival gets one first; a RequestedArrival without a place gets deliver_to."""
    if not any(schedule.type == _REQUESTED_ARRIVAL for schedule in schedules):
        default = resource_pb2.Schedule(type=_REQUESTED_ARRIVAL)
        if body.HasField("needed_by"):
            default.time.CopyFrom(body.needed_by)
            if body.HasField("needed_by_zone"):
                default.time_zone.CopyFrom(body.needed_by_zone)
        if body.HasField("deliver_to"):
            default.location.CopyFrom(body.deliver_to)
        has_content = default.HasField("time") or default.HasField("location")
        return [default, *schedules] if has_content else schedules
    completed = []
    for schedule in schedules:
        if schedule.type == _REQUESTED_ARRIVAL and not schedule.HasField("location"):
            completed_schedule = resource_pb2.Schedule()
            completed_schedule.CopyFrom(schedule)
            if body.HasField("deliver_to"):
                completed_schedule.location.CopyFrom(body.deliver_to)
            schedule = completed_schedule
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
