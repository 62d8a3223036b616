"""Valid events of each family, with fresh ids; tests change what they need.

Every call opens a new aggregate of its own (a new incident id, a new EDXL-RM exchange, a new
CAP identifier), so publishing the result is always a legal first step of its lifecycle: the
gateway refuses a second `incident.reported` for an incident that exists. A test that needs
several events about one incident passes that `incident_id` and gives the later events a type
that moves an existing incident (e.g. `incident.updated`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from dutylink.v1 import common_pb2, event_pb2, incident_pb2, resource_pb2, warning_pb2
from gateway.core.admission import StateProblem

NOW = datetime(2026, 8, 15, 6, 0, tzinfo=UTC)


def fresh_incident_id() -> str:
    """A new incident id in the shape agencies give them ("INC-2026-0815-…")."""
    return f"INC-2026-0815-{uuid.uuid4().hex[:12]}"


def envelope(
    event_type: str, *, division_code: str = "310115", incident_id: str | None = None
) -> event_pb2.Event:
    """An event about `incident_id` (a fresh one unless given), its payload left to the caller."""
    about = incident_id or fresh_incident_id()
    event = event_pb2.Event(
        id=str(uuid.uuid4()),
        type=event_type,
        subject=about,
        jurisdiction=common_pb2.Jurisdiction(division_code=division_code),
        classification=event_pb2.CLASSIFICATION_INTERNAL,
        plane=event_pb2.PLANE_ACTUAL,
        priority=event_pb2.PRIORITY_URGENT,
        correlation_id=about,
    )
    event.time.FromDatetime(NOW)
    return event


def scene() -> common_pb2.Location:
    return common_pb2.Location(
        point=common_pb2.GeoPoint(latitude=31.2397, longitude=121.4998),
        address="88 Huaxia Road, chemical industry park",
        jurisdiction=common_pb2.Jurisdiction(division_code="310115"),
    )


def incident_event(*, incident_id: str | None = None) -> event_pb2.Event:
    """An `incident.reported` of a new incident (or of `incident_id`)."""
    event = envelope("incident.reported", incident_id=incident_id)
    incident = event.incident
    incident.incident_id = event.subject
    incident.category = incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS
    incident.severity = incident_pb2.INCIDENT_SEVERITY_MAJOR
    incident.status = incident_pb2.INCIDENT_STATUS_REPORTED
    incident.location.CopyFrom(scene())
    incident.title = "Fire at a solvent store, chemical park"
    incident.casualties.injured = 3
    incident.casualties.trapped = 2
    incident.reporter.name = "Zhang San"
    incident.reporter.phone = "13800000000"
    incident.reporter.channel = incident_pb2.REPORT_CHANNEL_HOTLINE_119
    incident.involved_agencies.extend(["fire", "police", "health"])
    incident.reported_at.FromDatetime(NOW)
    return event


def resource_request_event() -> event_pb2.Event:
    """A `resource.request` opening a new EDXL-RM exchange (one line) for a new incident."""
    event = envelope("resource.request")
    message = event.resource
    message.message_id = f"RM-{uuid.uuid4()}"
    message.originating_message_id = message.message_id
    message.incident_id = event.subject
    message.contacts.add(description="Emergency medical centre duty desk", agency="health")
    request = message.request_resource
    line = request.resource_infos.add(resource_info_element_id="1")
    line.resource.kind = resource_pb2.RESOURCE_KIND_VEHICLE
    line.resource.type_info = "ambulance"
    line.assignment.quantity.value = 6
    line.assignment.quantity.unit = "vehicles"
    request.needed_by.FromDatetime(NOW + timedelta(minutes=20))
    request.deliver_to.CopyFrom(scene())
    return event


def warning_event() -> event_pb2.Event:
    """A CAP Alert with a new identifier."""
    event = envelope("warning.alert")
    event.classification = event_pb2.CLASSIFICATION_PUBLIC
    warning = event.warning
    warning.identifier = f"SH-ECO-{uuid.uuid4()}"
    warning.sender = "ecology.sh.example"
    warning.sent.FromDatetime(NOW)
    warning.status = warning_pb2.CAP_STATUS_ACTUAL
    warning.msg_type = warning_pb2.CAP_MSG_TYPE_ALERT
    warning.scope = warning_pb2.CAP_SCOPE_PUBLIC
    info = warning.infos.add(
        language="zh-CN", event="Air pollution", headline="Toxic smoke downwind"
    )
    info.categories.append(warning_pb2.CAP_CATEGORY_ENV)
    info.response_types.append(warning_pb2.CAP_RESPONSE_TYPE_SHELTER)
    info.urgency = warning_pb2.CAP_URGENCY_IMMEDIATE
    info.severity = warning_pb2.CAP_SEVERITY_SEVERE
    info.certainty = warning_pb2.CAP_CERTAINTY_LIKELY
    area = info.areas.add(area_desc="Downwind of the chemical park")
    ring = [(31.24, 121.50), (31.26, 121.50), (31.26, 121.53), (31.24, 121.50)]
    area.polygons.add().points.extend(common_pb2.GeoPoint(latitude=a, longitude=b) for a, b in ring)
    return event


def extreme_warning(plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL) -> event_pb2.Event:
    """A PRIVATE Extreme, Immediate warning from ecology to fire, police and transport (tracked
    under the sample deadline `extreme-warning-acknowledged`)."""
    event = warning_event()
    event.source = "ecology"
    event.plane = plane
    event.warning.scope = warning_pb2.CAP_SCOPE_PRIVATE
    event.warning.addresses.extend(("fire", "police", "transport"))
    event.warning.infos[0].severity = warning_pb2.CAP_SEVERITY_EXTREME
    if plane == event_pb2.PLANE_EXERCISE:
        event.warning.status = warning_pb2.CAP_STATUS_EXERCISE
    return event


# A ledger line without room: the state problem of a commitment beyond what is available.
LINE = StateProblem(
    aggregate="ledger/actual/health/AMB",
    state="available 2",
    version=12,
    allowed=(),
    reason="commits 4 ambulances; 2 are available",
)
