"""The police 110 computer-aided-dispatch feed: JSON Lines of incident records -> Incident
events, and what the 110 centre takes back. Pure; the field-by-field description is in
adapters/dispatch/README.md.

One line is one status transition of an incident (NEW, DISPATCHED, ON_SCENE, CLOSED), with the
incident's state at that moment. Its event id is `<system>:<incident_no>.<status>` (plus
`.r<revision>` for a numbered update within a status), so replaying a file, or the CAD
re-exporting a transition, never publishes it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dutylink.adapters.dispatch.fields import Fields
from dutylink.adapters.mapping import event_to_json
from dutylink.adapters.records import OutboundRecord, Record, event_id_for, outbox_name
from dutylink.v1 import common_pb2, event_pb2, incident_pb2

# CAD status -> (event type, incident status)
STATUSES = {
    "NEW": ("incident.reported", incident_pb2.INCIDENT_STATUS_REPORTED),
    "DISPATCHED": ("incident.status_changed", incident_pb2.INCIDENT_STATUS_ASSIGNED),
    "ON_SCENE": ("incident.status_changed", incident_pb2.INCIDENT_STATUS_HANDLING),
    "CLOSED": ("incident.closed", incident_pb2.INCIDENT_STATUS_CLOSED),
}
# CAD category (警情类别) -> (incident category, classification). Crimes stay with the police:
# CONFIDENTIAL public-order incidents reach nobody else (policy confidential-public-order-
# police-only); everything else is RESTRICTED, the responders' clearance.
CATEGORIES = {
    "CRIMINAL": (incident_pb2.INCIDENT_CATEGORY_PUBLIC_ORDER, event_pb2.CLASSIFICATION_CONFIDENTIAL),
    "PUBLIC_ORDER": (incident_pb2.INCIDENT_CATEGORY_PUBLIC_ORDER, event_pb2.CLASSIFICATION_RESTRICTED),
    "TRAFFIC": (incident_pb2.INCIDENT_CATEGORY_TRAFFIC_ACCIDENT, event_pb2.CLASSIFICATION_RESTRICTED),
    "FIRE": (incident_pb2.INCIDENT_CATEGORY_FIRE, event_pb2.CLASSIFICATION_RESTRICTED),
    "HAZMAT": (incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS, event_pb2.CLASSIFICATION_RESTRICTED),
    "GAS": (incident_pb2.INCIDENT_CATEGORY_GAS_LEAK, event_pb2.CLASSIFICATION_RESTRICTED),
    "MEDICAL": (incident_pb2.INCIDENT_CATEGORY_MEDICAL, event_pb2.CLASSIFICATION_RESTRICTED),
    "OTHER": (incident_pb2.INCIDENT_CATEGORY_OTHER, event_pb2.CLASSIFICATION_RESTRICTED),
}  # fmt: skip
PRIORITIES = {
    "1": event_pb2.PRIORITY_FLASH,
    "2": event_pb2.PRIORITY_URGENT,
    "3": event_pb2.PRIORITY_ELEVATED,
    "4": event_pb2.PRIORITY_ROUTINE,
}


@dataclass(frozen=True)
class Cad110Settings:
    system: str = "cad110"  # prefix of event ids
    agency: str = "police"  # the centre's own DutyLink agency id (in involved_agencies)
    plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL


def _description(fields: Fields) -> str:
    parts = [fields.text("narrative")]
    if hazards := fields.texts("hazards"):
        parts.append("Hazards: " + "; ".join(hazards))
    if units := fields.texts("units"):
        parts.append("Police units: " + ", ".join(units))
    return "\n".join(p for p in parts if p)


def _point(fields: Fields, prefix: str) -> common_pb2.GeoPoint | None:
    latitude = fields.number(f"{prefix}.lat", -90, 90)
    longitude = fields.number(f"{prefix}.lon", -180, 180)
    if (latitude is None) != (longitude is None):
        fields.fail(
            f"{prefix}.lat" if latitude is None else f"{prefix}.lon",
            "required with the other coordinate",
        )
    if latitude is None or longitude is None:
        return None
    return common_pb2.GeoPoint(latitude=latitude, longitude=longitude)


def cad110_events(
    record: Record, settings: Cad110Settings = Cad110Settings()
) -> list[event_pb2.Event]:
    """The Incident event of one CAD line; Rejected names the line and the field."""
    fields = Fields(record)
    number = fields.text("incident_no", required=True)
    event_type, status = fields.choice("status", STATUSES)
    category, classification = fields.choice("category", CATEGORIES)
    division = fields.division("location.division")
    revision = fields.count("revision")
    part = fields.text("status").lower() + (f".r{revision}" if revision else "")
    event = event_pb2.Event(
        id=event_id_for(settings.system, number, part),
        type=event_type,
        subject=number,
        jurisdiction=common_pb2.Jurisdiction(division_code=division),
        classification=classification,
        plane=settings.plane,
        priority=fields.choice("priority", PRIORITIES),
        correlation_id=number,
    )
    event.time.CopyFrom(fields.time("status_time"))
    incident = event.incident
    incident.incident_id = number
    incident.category = category
    incident.status = status
    incident.title = fields.text("summary", required=True)
    incident.description = _description(fields)
    incident.reported_at.CopyFrom(fields.time("call_time"))
    location = incident.location
    location.address = fields.text("location.address")
    if (point := _point(fields, "location")) is not None:
        location.point.CopyFrom(point)
    if not location.address and not location.HasField("point"):
        fields.fail("location.address", "required when location.lat/lon are not given")
    location.jurisdiction.division_code = division
    location.jurisdiction.street_code = fields.text("location.street")
    location.jurisdiction.grid_id = fields.text("location.grid")
    if fields.get("casualties") is not None:
        casualties = incident.casualties
        for name in ("deaths", "injured", "missing", "trapped", "evacuated"):
            setattr(casualties, name, fields.count(f"casualties.{name}"))
    reporter = incident.reporter
    reporter.channel = incident_pb2.REPORT_CHANNEL_HOTLINE_110
    reporter.name = fields.text("caller.name")
    reporter.phone = fields.text("caller.phone")
    if (position := _point(fields, "caller")) is not None:
        reporter.position.CopyFrom(position)
    agencies = [settings.agency, *fields.texts("linked_agencies")]
    incident.involved_agencies.extend(dict.fromkeys(agencies))  # in order, no duplicates
    return [event]


def cad110_outbound(
    event: event_pb2.Event, incident_sources: Sequence[str] = ("fire", "health")
) -> OutboundRecord | None:
    """What the 110 centre takes: the fire and ambulance services' incident updates, and every
    warning; each as the event's JSON in `<source>.<event id>.json`."""
    wanted = event.HasField("warning") or (
        event.HasField("incident") and event.source in incident_sources
    )
    if not wanted:
        return None
    return OutboundRecord(outbox_name(event, ".json"), event_to_json(event), "application/json")
