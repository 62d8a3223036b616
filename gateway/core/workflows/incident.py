"""The incident loop and the emergency phase of an incident: one aggregate per incident id (and
plane) for each. Pure: no I/O."""

from __future__ import annotations

from dutylink.catalogue import NONE, EventType
from dutylink.v1 import event_pb2
from gateway.core.workflows.base import (
    AggregateRef,
    Context,
    Facts,
    Precondition,
    Rules,
    plane_token,
)

MERGED = "merged"  # the incident machine's state of a duplicate merged away


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


def _preconditions(event: event_pb2.Event, event_type: EventType) -> list[Precondition]:
    # A merge points readers of the duplicate at its survivor: one that was never reported, or
    # was itself merged away, would leave them at a dead end.
    incident = event.incident
    survivor = incident.merged_into
    if event_type.type != "incident.merged" or survivor in ("", incident.incident_id):
        return []  # a missing survivor is admission's to refuse, a merge into itself _check's
    return [
        Precondition(
            AggregateRef("incident", plane_token(event.plane), survivor),
            refused_in=frozenset({NONE, MERGED}),
            reason=(
                f"'{event_type.type}' merges {incident.incident_id!r} into it: the incident "
                "that survives must have been reported and not merged away itself"
            ),
        )
    ]


INCIDENT = Rules(refs=_refs, facts=_facts, check=_check, preconditions=_preconditions)
EMERGENCY_PHASE = Rules(refs=_refs)
