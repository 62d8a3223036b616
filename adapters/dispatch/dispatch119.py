"""The fire & ambulance (119/120) dispatch feed: CSV rows of dispatch log entries -> Incident
updates and resource requests, and what the 119/120 centre takes back. Pure; the
field-by-field description is in adapters/dispatch/README.md.

Each row repeats the incident's header (number, times, category, title, place) and says what
happened: the call was received or the incident closed (incident rows), a unit changed status
(unit rows), or the centre asked other agencies for units (REQUESTED rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from dutylink.adapters.dispatch.fields import Fields
from dutylink.adapters.mapping import event_to_json
from dutylink.adapters.records import OutboundRecord, Record, event_id_for, outbox_name
from dutylink.v1 import common_pb2, event_pb2, incident_pb2, resource_pb2

# Incident rows: status -> (event type, incident status)
INCIDENT_STATUSES = {
    "RECEIVED": ("incident.reported", incident_pb2.INCIDENT_STATUS_REPORTED),
    "CLOSED": ("incident.closed", incident_pb2.INCIDENT_STATUS_CLOSED),
}
# Unit rows: status -> (incident status, or None: no incident update, EDXL-RM deployment status).
# A unit going home says nothing new about the incident, and an update after CLOSED would
# reopen it (incident.proto), so RETURNING and AVAILABLE publish no incident event.
UNIT_STATUSES = {
    "DISPATCHED": (incident_pb2.INCIDENT_STATUS_ASSIGNED, resource_pb2.DEPLOYMENT_STATUS_COMMITTED),
    "EN_ROUTE": (incident_pb2.INCIDENT_STATUS_HANDLING, resource_pb2.DEPLOYMENT_STATUS_EN_ROUTE),
    "ON_SCENE": (incident_pb2.INCIDENT_STATUS_HANDLING, resource_pb2.DEPLOYMENT_STATUS_ON_SCENE),
    "TRANSPORTING": (incident_pb2.INCIDENT_STATUS_HANDLING, resource_pb2.DEPLOYMENT_STATUS_ON_SCENE),
    "AT_HOSPITAL": (incident_pb2.INCIDENT_STATUS_HANDLING, resource_pb2.DEPLOYMENT_STATUS_ON_SCENE),
    "RETURNING": (None, resource_pb2.DEPLOYMENT_STATUS_RETURNING),
    "AVAILABLE": (None, resource_pb2.DEPLOYMENT_STATUS_RELEASED),
}  # fmt: skip
REQUESTED = "REQUESTED"
STATUSES = {
    **{s: s for s in INCIDENT_STATUSES},
    **{s: s for s in UNIT_STATUSES},
    REQUESTED: REQUESTED,
}
# unit kind -> (resource type in DutyLink's catalogue, service: "fire" (119) or "ems" (120))
UNIT_KINDS = {
    "engine": ("fire engine", "fire"),
    "ladder": ("aerial ladder", "fire"),
    "hazmat": ("hazmat unit", "fire"),
    "rescue": ("rescue unit", "fire"),
    "command": ("command vehicle", "fire"),
    "ambulance": ("ambulance", "ems"),
}
CATEGORIES = {
    "FIRE": incident_pb2.INCIDENT_CATEGORY_FIRE,
    "HAZMAT": incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS,
    "GAS": incident_pb2.INCIDENT_CATEGORY_GAS_LEAK,
    "COLLAPSE": incident_pb2.INCIDENT_CATEGORY_BUILDING_COLLAPSE,
    "TRAFFIC": incident_pb2.INCIDENT_CATEGORY_TRAFFIC_ACCIDENT,
    "MEDICAL": incident_pb2.INCIDENT_CATEGORY_MEDICAL,
    "RESCUE": incident_pb2.INCIDENT_CATEGORY_OTHER,
}
# The same names as the EDXL adapter's (dutylink.adapters.edxl.mapping.RM_EVENT_TYPES).
REQUEST_TYPE = "resource.request"
STATUS_REPORT_TYPE = "resource.status_report"
# Police incidents the 119/120 centre takes: those its units may be sent to.
HAZARD_CATEGORIES = frozenset(
    {
        incident_pb2.INCIDENT_CATEGORY_FIRE,
        incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS,
        incident_pb2.INCIDENT_CATEGORY_GAS_LEAK,
        incident_pb2.INCIDENT_CATEGORY_BUILDING_COLLAPSE,
        incident_pb2.INCIDENT_CATEGORY_SPECIAL_EQUIPMENT,
        incident_pb2.INCIDENT_CATEGORY_TRAFFIC_ACCIDENT,
        incident_pb2.INCIDENT_CATEGORY_MEDICAL,
    }
)


@dataclass(frozen=True)
class Dispatch119Settings:
    system: str = "dispatch119"  # prefix of event ids
    agency: str = "fire"  # the DutyLink agency the adapter publishes as (resource contacts)
    fire_agency: str = "fire"  # owner of engines, ladders, hazmat, rescue and command units
    ems_agency: str = "health"  # owner of ambulances
    plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL
    deployment_reports: bool = False  # unit rows also as resource.status_report (see README)

    def owner(self, service: str) -> str:
        return self.ems_agency if service == "ems" else self.fire_agency


@dataclass(frozen=True)
class _Row:
    """The columns every row carries, read and checked."""

    number: str
    status: str
    time: timestamp_pb2.Timestamp
    category: incident_pb2.IncidentCategory.ValueType
    title: str
    division: str
    scene: common_pb2.Location
    station: str
    note: str

    def envelope(
        self, settings: Dispatch119Settings, event_type: str, part: str
    ) -> event_pb2.Event:
        event = event_pb2.Event(
            id=event_id_for(settings.system, self.number, part),
            type=event_type,
            subject=self.number,
            jurisdiction=common_pb2.Jurisdiction(division_code=self.division),
            classification=event_pb2.CLASSIFICATION_INTERNAL,  # no personal data in the feed
            plane=settings.plane,
            priority=event_pb2.PRIORITY_URGENT,  # every row is an emergency dispatch
            correlation_id=self.number,
        )
        event.time.CopyFrom(self.time)
        return event

    def message(
        self, event: event_pb2.Event, agency: str, role: resource_pb2.ContactRole.ValueType
    ) -> resource_pb2.ResourceMessage:
        message = event.resource
        message.message_id = message.originating_message_id = event.id
        message.sent_at.CopyFrom(self.time)
        message.incident_id = self.number
        message.incident_description = self.title
        contact = self.station or "119/120 dispatch centre"
        message.contacts.add(description=contact, role=role, agency=agency)
        return message


def _scene(fields: Fields, division: str) -> common_pb2.Location:
    scene = common_pb2.Location(address=fields.text("address"))
    latitude, longitude = fields.number("lat", -90, 90), fields.number("lon", -180, 180)
    if (latitude is None) != (longitude is None):
        fields.fail("lat" if latitude is None else "lon", "required with the other coordinate")
    if latitude is not None and longitude is not None:
        scene.point.latitude, scene.point.longitude = latitude, longitude
    if not scene.address and not scene.HasField("point"):
        fields.fail("address", "required when lat/lon are not given")
    scene.jurisdiction.division_code = division
    return scene


def _row(fields: Fields) -> _Row:
    number = fields.text("incident_no", required=True)
    status = fields.choice("status", STATUSES)
    time = fields.time("time")
    category = fields.choice("category", CATEGORIES)
    title = fields.text("title", required=True)
    division = fields.division("division")
    scene = _scene(fields, division)
    station, note = fields.text("station"), fields.text("note")
    return _Row(number, status, time, category, title, division, scene, station, note)


def dispatch119_events(
    record: Record, settings: Dispatch119Settings = Dispatch119Settings()
) -> list[event_pb2.Event]:
    """The events of one dispatch row; Rejected names the line and the column."""
    fields = Fields(record)
    row = _row(fields)
    if row.status == REQUESTED:
        return [_request(fields, row, settings)]
    if row.status in INCIDENT_STATUSES:
        event_type, status = INCIDENT_STATUSES[row.status]
        return [_incident(fields, row, settings, event_type, status, row.status.lower(), row.note)]
    unit_type, service = fields.choice("unit_kind", UNIT_KINDS)
    call_sign = fields.text("call_sign", required=True)
    destination = fields.text("destination")
    incident_status = UNIT_STATUSES[row.status][0]
    part = f"{call_sign}.{row.status.lower()}"
    events = []
    if incident_status is not None:
        station = f" ({row.station})" if row.station else ""
        heading = f" -> {destination}" if destination else ""
        note = f". {row.note}" if row.note else ""
        description = f"{unit_type} {call_sign}{station}: {row.status}{heading}{note}"
        events.append(
            _incident(
                fields, row, settings, "incident.status_changed", incident_status, part, description
            )
        )
    if settings.deployment_reports:
        owner = settings.owner(service)
        events.append(_status_report(row, settings, part, call_sign, unit_type, owner, destination))
    return events


def _incident(
    fields: Fields,
    row: _Row,
    settings: Dispatch119Settings,
    event_type: str,
    status: incident_pb2.IncidentStatus.ValueType,
    part: str,
    description: str,
) -> event_pb2.Event:
    event = row.envelope(settings, event_type, part)
    incident = event.incident
    incident.incident_id = row.number
    incident.category = row.category
    incident.status = status
    incident.location.CopyFrom(row.scene)
    incident.title = row.title
    incident.description = description
    incident.reported_at.CopyFrom(fields.time("received_at"))
    incident.reporter.channel = (
        incident_pb2.REPORT_CHANNEL_HOTLINE_120
        if row.category == incident_pb2.INCIDENT_CATEGORY_MEDICAL
        else incident_pb2.REPORT_CHANNEL_HOTLINE_119
    )
    return event


def _request(fields: Fields, row: _Row, settings: Dispatch119Settings) -> event_pb2.Event:
    """A REQUESTED row: the centre asks the exchange for `quantity` units of a kind, delivered
    to `destination` (a staging point) or else the scene."""
    unit_type, _ = fields.choice("unit_kind", UNIT_KINDS)
    quantity = fields.count("quantity", required=True)
    if quantity < 1:
        fields.fail("quantity", "must be at least 1")
    stamp = row.time.ToDatetime().strftime("%Y%m%dT%H%M%SZ")
    event = row.envelope(settings, REQUEST_TYPE, f"requested.{fields.text('unit_kind')}.{stamp}")
    message = row.message(event, settings.agency, resource_pb2.CONTACT_ROLE_REQUESTER)
    request = message.request_resource
    line = request.resource_infos.add(resource_info_element_id="1")
    line.resource.kind = resource_pb2.RESOURCE_KIND_VEHICLE
    line.resource.type_info = unit_type
    line.assignment.quantity.value = quantity
    line.assignment.quantity.unit = "vehicles"
    line.assignment.anticipated_function = row.note
    if destination := fields.text("destination"):
        request.deliver_to.address = destination
        request.deliver_to.jurisdiction.division_code = row.division
    else:
        request.deliver_to.CopyFrom(row.scene)
    return event


def _status_report(
    row: _Row,
    settings: Dispatch119Settings,
    part: str,
    call_sign: str,
    unit_type: str,
    owner: str,
    destination: str,
) -> event_pb2.Event:
    """A unit row as EDXL-RM ReportResourceDeploymentStatus (only with deployment_reports)."""
    report = row.envelope(settings, STATUS_REPORT_TYPE, f"{part}.rm")
    report.priority = event_pb2.PRIORITY_ELEVATED
    message = row.message(report, settings.agency, resource_pb2.CONTACT_ROLE_SENDER)
    unit = message.report_resource_deployment_status.resource_infos.add(
        resource_info_element_id="1"
    )
    resource = unit.resource
    resource.resource_id = call_sign
    resource.name = f"{row.station} {call_sign}".strip()
    resource.kind = resource_pb2.RESOURCE_KIND_VEHICLE
    resource.type_info = unit_type
    resource.responsible_agency = owner
    resource.status.deployment_status = UNIT_STATUSES[row.status][1]
    if row.status == "ON_SCENE":
        arrival = unit.schedules.add(type=resource_pb2.SCHEDULE_TYPE_ACTUAL_ARRIVAL)
        arrival.time.CopyFrom(row.time)
        arrival.location.CopyFrom(row.scene)
    if destination:
        heading_to = unit.schedules.add(type=resource_pb2.SCHEDULE_TYPE_ESTIMATED_ARRIVAL)
        heading_to.location.address = destination
    return report


def _addressed_to(message: resource_pb2.ResourceMessage, agencies: Sequence[str]) -> bool:
    """A resource message names one of `agencies` as the supplier: a responding-org or owner
    contact, or the responsible agency of one of its lines."""
    for contact in message.contacts:
        if contact.agency in agencies and contact.role in (
            resource_pb2.CONTACT_ROLE_RESPONDING_ORG,
            resource_pb2.CONTACT_ROLE_OWNER,
        ):
            return True
    kind = message.WhichOneof("kind")
    lines = getattr(message, kind).resource_infos if kind else ()
    return any(line.resource.responsible_agency in agencies for line in lines)


def dispatch119_outbound(
    event: event_pb2.Event,
    centre_agencies: Sequence[str] = ("fire", "health"),
    incident_sources: Sequence[str] = ("police",),
) -> OutboundRecord | None:
    """What the 119/120 centre takes: police incidents its units may be sent to (a hazard
    category, or people injured or trapped), and resource messages addressed to it; each as
    the event's JSON in `<source>.<event id>.json`."""
    if event.HasField("incident"):
        incident = event.incident
        hazardous = incident.category in HAZARD_CATEGORIES or bool(
            incident.casualties.injured or incident.casualties.trapped
        )
        wanted = event.source in incident_sources and hazardous
    elif event.HasField("resource"):
        wanted = event.source not in centre_agencies and _addressed_to(
            event.resource, centre_agencies
        )
    else:
        wanted = False
    if not wanted:
        return None
    return OutboundRecord(outbox_name(event, ".json"), event_to_json(event), "application/json")
