"""Which deadlines a message is tracked under, when they fall due and whom each escalation
level notifies. Pure: values in, values out; the tracker that holds timers and counts answers
lives in the gateway and keeps the `Policy` (and so the rules version) it started with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from dutylink.catalogue import Catalogue
from dutylink.policies.model import ANY, Deadline, EscalationLevel, Policy
from dutylink.v1 import event_pb2


def deadlines_for(
    deadlines: Policy | Iterable[Deadline], event: event_pb2.Event
) -> tuple[Deadline, ...]:
    """The deadlines `event` is tracked under, in the order the policy declares them."""
    declared = deadlines.deadlines if isinstance(deadlines, Policy) else tuple(deadlines)
    return tuple(d for d in declared if matches(d, event))


def matches(deadline: Deadline, event: event_pb2.Event) -> bool:
    """Whether `event` meets every condition of `deadline` (an empty condition: any)."""
    if not any(_type_matches(pattern, event.type) for pattern in deadline.types):
        return False
    if deadline.planes and event.plane not in deadline.planes:
        return False
    if event.priority < deadline.min_priority:
        return False
    if not (deadline.severities or deadline.urgencies):
        return True
    if event.HasField("warning"):
        # Severity and urgency must hold in the same info block (one audience, one language).
        return any(
            (not deadline.severities or info.severity in deadline.severities)
            and (not deadline.urgencies or info.urgency in deadline.urgencies)
            for info in event.warning.infos
        )
    if event.HasField("incident"):
        return not deadline.urgencies and event.incident.severity in deadline.severities
    return False


def received_at(event: event_pb2.Event) -> dt.datetime:
    """When the gateway took `event` in: its own stamp (the publisher's `time` may run slow,
    fast or be long past); unstamped, that time."""
    stamp = event.received_time if event.HasField("received_time") else event.time
    return stamp.ToDatetime(tzinfo=dt.UTC)


def due(deadline: Deadline, event: event_pb2.Event) -> dt.datetime:
    """When `deadline` falls due for `event`: `within` after the gateway received it."""
    return received_at(event) + deadline.within


def level_due(deadline: Deadline, level: int, event: event_pb2.Event) -> dt.datetime:
    """When escalation level `level` (1-based) fires if the deadline is still unmet."""
    return due(deadline, event) + deadline.escalate[level - 1].after


def notified(
    policy: Policy, catalogue: Catalogue, level: EscalationLevel, event: event_pb2.Event
) -> frozenset[str]:
    """The agencies escalation `level` notifies about `event`: the agencies it names, the
    agencies holding the policy role that grants each standing role it names (the supervisor
    role also reaches a task's own supervising agency) and its deputies."""
    found = set(level.deputy)
    for name in level.to:
        granted_by = catalogue.standing_roles.get(name)
        if granted_by is None:
            found.add(name)
            continue
        found.update(a.id for a in policy.agencies if granted_by in a.roles)
        if name == "supervisor" and event.HasField("task") and event.task.supervising_agency:
            found.add(event.task.supervising_agency)
    return frozenset(found)


def _type_matches(pattern: str, event_type: str) -> bool:
    family, _, name = pattern.partition(".")
    return pattern == event_type or (name == ANY and event_type.startswith(family + "."))
