"""Events and a fold for the lifecycle tests: minimal events of each family, and an in-memory
store that applies an event to every aggregate it touches, all or nothing (as the gateway's
guard does with compare-and-set)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dutylink.catalogue import Catalogue, load_catalogue
from dutylink.v1 import event_pb2, resource_pb2, task_pb2, warning_pb2
from gateway.core.workflows import (
    Accepted,
    Actor,
    AggregateRef,
    AggregateState,
    IllegalTransition,
    aggregate_refs,
    decide,
)
from gateway.core.workflows.machine import preconditions, unmet

CATALOGUE = load_catalogue()
T0 = datetime(2026, 8, 15, 8, 0, tzinfo=UTC)
COMMAND = Actor("command", frozenset({"command_centre"}))
SUPERVISOR = Actor("emergency", frozenset({"supervisor"}))


def agency(name: str) -> Actor:
    return Actor(name)


def envelope(
    event_type: str, *, plane: int = event_pb2.PLANE_ACTUAL, n: int = 0
) -> event_pb2.Event:
    event = event_pb2.Event(id=f"E-{event_type}-{n}", type=event_type, plane=plane)  # type: ignore[arg-type]
    event.time.FromDatetime(T0)
    return event


def incident(
    event_type: str,
    incident_id: str = "INC-1",
    *,
    lead: str = "",
    involved: Sequence[str] = (),
    merged_into: str = "",
    plane: int = event_pb2.PLANE_ACTUAL,
) -> event_pb2.Event:
    event = envelope(event_type, plane=plane)
    event.incident.incident_id = incident_id
    event.incident.lead_agency = lead
    event.incident.involved_agencies.extend(involved)
    event.incident.merged_into = merged_into
    return event


def task(
    event_type: str,
    task_id: str = "T-1",
    *,
    owner: str = "",
    supervisor: str = "",
    deadline: datetime | None = None,
    recheck: tuple[int, str] | None = None,
) -> event_pb2.Event:
    event = envelope(event_type)
    event.task.task_id = task_id
    event.task.owner_agency = owner
    event.task.supervising_agency = supervisor
    if deadline is not None:
        event.task.deadline.FromDatetime(deadline)
    if recheck is not None:
        event.task.recheck.result, event.task.recheck.agency = recheck  # type: ignore[assignment]
    return event


RM_KIND = {
    "resource.request": "request_resource",
    "resource.offer": "offer_unsolicited_resource",
    "resource.response": "response_to_request_resource",
    "resource.requisition": "requisition_resource",
    "resource.commit": "commit_resource",
    "resource.status_report": "report_resource_deployment_status",
    "resource.request_extension": "request_extended_deployment_duration",
    "resource.extension_response": "response_to_request_extended_deployment_duration",
    "resource.request_return": "request_return",
    "resource.return_response": "response_to_request_return",
    "resource.release": "release_resource",
    "resource.recall": "release_resource",
}
_ANSWERS = {"response_to_request_resource", "commit_resource", "response_to_request_return",
            "response_to_request_extended_deployment_duration"}  # fmt: skip


def resource(
    event_type: str,
    lines: Sequence[tuple[str, int]] = (("1", resource_pb2.RESPONSE_TYPE_ACCEPT),),
    *,
    originating: str = "RM-1",
    message_id: str = "RM-1",
) -> event_pb2.Event:
    """A resource message of `event_type` with `lines` (element id, response type)."""
    event = envelope(event_type)
    message = event.resource
    message.message_id, message.originating_message_id = message_id, originating
    kind = RM_KIND[event_type]
    body = getattr(message, kind)
    for element_id, response_type in lines:
        line = body.resource_infos.add(resource_info_element_id=element_id)
        if kind in _ANSWERS:
            line.response.preceding_resource_info_element_id = element_id
            line.response.type = response_type  # type: ignore[assignment]
    if event_type == "resource.recall":
        message.recall.recall_message_id = originating
        message.recall.type = resource_pb2.RECALL_TYPE_CANCEL
    return event


def warning(
    event_type: str,
    identifier: str,
    *,
    sender: str = "weather@sh.gov.cn",
    references: Sequence[str] = (),
    expires: datetime | None = None,
    plane: int = event_pb2.PLANE_ACTUAL,
) -> event_pb2.Event:
    event = envelope(event_type, plane=plane)
    alert = event.warning
    alert.identifier, alert.sender = identifier, sender
    alert.msg_type = {
        "warning.alert": warning_pb2.CAP_MSG_TYPE_ALERT,
        "warning.update": warning_pb2.CAP_MSG_TYPE_UPDATE,
        "warning.cancel": warning_pb2.CAP_MSG_TYPE_CANCEL,
    }[event_type]
    for reference in references:
        ref_sender, _, ref_identifier = reference.rpartition(",")
        added = alert.references.add(sender=ref_sender or sender, identifier=ref_identifier)
        added.sent.FromDatetime(T0)
    if expires is not None:
        alert.infos.add(event="heavy rain").expires.FromDatetime(expires)
    return event


@dataclass
class World:
    """Aggregate states by KV key; `apply` accepts an event only if every aggregate it touches
    accepts it and the aggregates it reads meet its preconditions, and then writes them all."""

    catalogue: Catalogue = CATALOGUE
    states: dict[str, AggregateState] = field(default_factory=dict)
    log: list[tuple[str, AggregateRef, AggregateState | None, AggregateState]] = field(
        default_factory=list
    )

    def state(self, ref_or_key: AggregateRef | str) -> AggregateState | None:
        key = ref_or_key if isinstance(ref_or_key, str) else ref_or_key.kv_key
        return self.states.get(key)

    def apply(
        self, actor: Actor, event: event_pb2.Event, now: datetime = T0
    ) -> list[IllegalTransition]:
        refs = aggregate_refs(event, self.catalogue)
        verdicts = [
            (ref, decide(self.catalogue, ref, self.states.get(ref.kv_key), actor, event, now))
            for ref in refs
        ]
        refused = [v for _, v in verdicts if isinstance(v, IllegalTransition)]
        refused += [
            illegal
            for precondition in preconditions(event, self.catalogue)
            if (illegal := unmet(self.catalogue, precondition, self.state(precondition.ref), now))
        ]
        if refused:
            return refused
        for ref, verdict in verdicts:
            assert isinstance(verdict, Accepted)
            self.log.append((event.type, ref, self.states.get(ref.kv_key), verdict.new_state))
            self.states[ref.kv_key] = verdict.new_state
        return []


def days(n: float) -> timedelta:
    return timedelta(days=n)


RECHECK_PASSED = task_pb2.RECHECK_RESULT_PASSED
RECHECK_FAILED = task_pb2.RECHECK_RESULT_FAILED
