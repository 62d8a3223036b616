"""Whom a tracked message is meant for: the agencies the tracker (gateway.core.workflows.tracking)
expects to take it. Pure: the policy's decisions come in as a function.

A message that names its recipients is meant for them: an assignment for the lead and the
supporting agencies (or a task's owner), a PRIVATE CAP alert for the agency ids among its
`addresses`. Those the receive policy keeps it from are `withheld` (named, never counted as
missing). A message that names nobody (a public or restricted warning, a resource request) is
meant for every declared agency the receive policy lets have it; the others were never meant.
The publisher is never its own recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dutylink.v1 import event_pb2, warning_pb2


@dataclass(frozen=True)
class Recipients:
    intended: tuple[str, ...]  # sorted; the withheld ones among them
    withheld: tuple[str, ...]


def others(event: event_pb2.Event, agencies: Iterable[str]) -> list[str]:
    """The declared `agencies` but the event's publisher, sorted: those it may go to."""
    return sorted(set(agencies) - {event.source})


def addressed(event: event_pb2.Event, agencies: Iterable[str]) -> tuple[str, ...]:
    """The declared `agencies` the message itself names as its recipients (none: broadcast)."""
    declared = set(agencies)
    named: list[str] = []
    if event.type == "incident.assigned":
        named = [event.incident.lead_agency, *event.incident.involved_agencies]
    elif event.type == "task.assigned":
        named = [event.task.owner_agency]
    elif event.HasField("warning") and event.warning.scope == warning_pb2.CAP_SCOPE_PRIVATE:
        named = list(event.warning.addresses)
    return tuple(sorted({a for a in named if a in declared} - {event.source}))


def recipients(
    event: event_pb2.Event,
    agencies: Iterable[str],
    may_receive: Callable[[str], bool],
) -> Recipients:
    """The recipients of `event` among the declared `agencies`; `may_receive(agency)` is the
    receive policy's answer for that agency and this event."""
    declared = others(event, agencies)
    named = addressed(event, declared)
    if named:
        return Recipients(named, tuple(a for a in named if not may_receive(a)))
    return Recipients(tuple(a for a in declared if may_receive(a)), ())
