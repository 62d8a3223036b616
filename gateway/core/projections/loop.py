"""Loop metrics: how long an incident took from its report to each step of the linked duty's
loop (verified, assigned, first acknowledgement, handling, closed), and which agency took it.

Measured on an incident's timeline (gateway.core.projections.board) from the receive time of
its first `incident.reported` to the first event of each step: the board shows them per
incident, and the gateway's metrics observe each step once, as the board folds it. A timeline
without its report (a viewer the policy keeps it from) has no loop. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from dutylink.policies.deadlines import received_at
from dutylink.v1 import event_pb2

REPORTED = "incident.reported"
# Each step of the loop and the event type whose first occurrence reaches it.
STEPS = (
    ("verify", "incident.verified"),
    ("assign", "incident.assigned"),
    ("first_ack", "acknowledgement.acknowledged"),
    ("handle", "incident.handling"),
    ("close", "incident.closed"),
)
_STEP_OF = {event_type: step for step, event_type in STEPS}


@dataclass(frozen=True)
class LoopStep:
    step: str
    agency: str  # who took the step (the event's source)
    seconds: float  # since the incident was reported


def takes_a_step(event: event_pb2.Event) -> bool:
    """Whether an event of this type can reach a step (the others need no look at the loop)."""
    return event.type in _STEP_OF


def loop_steps(events: Iterable[event_pb2.Event]) -> list[LoopStep]:
    """Each step the incident reached, in the loop's order, timed from its report."""
    reported: datetime | None = None
    reached: dict[str, LoopStep] = {}
    for event in events:
        if event.type == REPORTED and reported is None:
            reported = received_at(event)
        step = _STEP_OF.get(event.type)
        if step is None or reported is None or step in reached:
            continue
        seconds = (received_at(event) - reported).total_seconds()
        reached[step] = LoopStep(step, event.source, max(seconds, 0.0))
    return [reached[step] for step, _ in STEPS if step in reached]


def incident_grade(events: Iterable[event_pb2.Event], incident_id: str) -> tuple[int, int]:
    """The incident's category and severity, as its latest report or update says."""
    category = severity = 0
    for event in events:
        if event.HasField("incident") and event.incident.incident_id == incident_id:
            category = event.incident.category or category
            severity = event.incident.severity or severity
    return category, severity
