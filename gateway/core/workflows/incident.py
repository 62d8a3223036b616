"""The incident loop and the emergency phase of an incident: one aggregate per incident id (and
plane) for each. Pure: no I/O."""

from __future__ import annotations

from dutylink.catalogue import EventType
from dutylink.v1 import event_pb2
from gateway.core.workflows.base import AggregateRef, Context, Facts, Rules, plane_token


def _refs(event: event_pb2.Event, event_type: EventType) -> list[AggregateRef]:
    if not event.HasField("incident") or event_type.lifecycle is None:
        return []
    return [
        AggregateRef(event_type.lifecycle, plane_token(event.plane), event.incident.incident_id)
    ]


def _facts(event: event_pb2.Event, ref: AggregateRef) -> Facts:
    # Only the command centre's assignment names the lead and the supporting agencies, and only
    # a merge names the survivor: other events carry the fields but change no party.
    incident = event.incident
    if ref.lifecycle != "incident":
        return Facts()
    if event.type == "incident.merged":
        return Facts(merged_into=incident.merged_into)
    if event.type != "incident.assigned":
        return Facts()
    lead = incident.lead_agency
    assigned = tuple(dict.fromkeys([lead, *incident.involved_agencies])) if lead else ()
    return Facts(
        lead=lead, assigned=tuple(a for a in assigned if a), merged_into=incident.merged_into
    )


def _check(context: Context) -> str | None:
    incident = context.event.incident
    if (
        context.event_type.type == "incident.merged"
        and incident.merged_into == incident.incident_id
    ):
        return "an incident cannot be merged into itself"
    return None


INCIDENT = Rules(refs=_refs, facts=_facts, check=_check)
EMERGENCY_PHASE = Rules(refs=_refs)
