"""The duty board: the joint picture of every incident, folded from the event stream.

`Board` is the projection a replica keeps: every stored event that names an incident (its
payload's incident ids, dutylink.incidents), per plane and incident, in stream order, fed once
per stream sequence, so the same stream always folds to the same board (a rebuild after a
restart equals the live one). It holds events as they were stored; nobody is shown them so.

What an agency is shown is folded anew from the events it may receive, redacted as its policy
says (`visible`): an incident view never holds a field or an event the policy withholds from
that agency, because it is made of nothing else. The fold replays each event's transition
(gateway.core.workflows.machine.replay) over the incident's aggregates: its stage and emergency
phase, its warnings, tasks and resource lines, with their parties and deadlines. Pure: no I/O;
time comes in as `now`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dutylink.catalogue import NONE, Catalogue
from dutylink.incidents import incident_ids
from dutylink.policies.deadlines import received_at
from dutylink.v1 import common_pb2, event_pb2
from gateway.core.projections.board_map import (
    WARNING,
    WarningArea,
    live_areas,
    own_areas,
)
from gateway.core.projections.loop import LoopStep, incident_grade, loop_steps
from gateway.core.workflows.base import AggregateState
from gateway.core.workflows.machine import aggregate_refs, replay

# The incident's own lifecycles; every other aggregate of its events is one of its lines.
STAGE, PHASE = "incident", "emergency_phase"
# An incident holding more events than this keeps its first ones and its latest ones: the
# board's memory is bounded whatever one incident's traffic (the audit log keeps them all).
MAX_EVENTS_PER_INCIDENT = 5_000

Visible = Callable[[event_pb2.Event], event_pb2.Event | None]


@dataclass(frozen=True)
class IncidentKey:
    plane: int
    incident_id: str


@dataclass(frozen=True)
class Stored:
    """An event as the board keeps it: its stream sequence and the event as stored."""

    sequence: int
    event: event_pb2.Event


@dataclass
class Board:
    """Every incident's events, in stream order; `last_sequence`: the last event folded."""

    max_events: int = MAX_EVENTS_PER_INCIDENT
    last_sequence: int = 0
    _timelines: dict[IncidentKey, list[Stored]] = field(default_factory=dict)
    _dropped: dict[IncidentKey, int] = field(default_factory=dict)

    def add(self, sequence: int, event: event_pb2.Event) -> list[IncidentKey]:
        """Fold one stored event in; the incidents it changed (none for an event seen before,
        or one that names no incident)."""
        if sequence <= self.last_sequence:
            return []
        self.last_sequence = sequence
        changed = []
        for incident_id in dict.fromkeys(incident_ids(event)):
            key = IncidentKey(event.plane, incident_id)
            timeline = self._timelines.setdefault(key, [])
            timeline.append(Stored(sequence, event))
            if len(timeline) > self.max_events:
                # Keep the opening events (what the incident is) and the latest ones.
                del timeline[self.max_events // 2]
                self._dropped[key] = self._dropped.get(key, 0) + 1
            changed.append(key)
        return changed

    def timeline(self, key: IncidentKey) -> Sequence[Stored]:
        return self._timelines.get(key, ())

    def dropped(self, key: IncidentKey) -> int:
        """How many events of the incident the board no longer holds (past `max_events`)."""
        return self._dropped.get(key, 0)

    def incidents(self, plane: int) -> list[IncidentKey]:
        return [key for key in self._timelines if key.plane == plane]

    def fingerprint(self) -> dict[IncidentKey, tuple[int, ...]]:
        """Which events each incident holds: equal for two boards folded from one stream."""
        return {key: tuple(s.sequence for s in line) for key, line in self._timelines.items()}


@dataclass(frozen=True)
class Line:
    """One aggregate of an incident as an agency sees it: a warning, a task, a resource line,
    or the incident's own stage and phase."""

    lifecycle: str
    key: str
    state: str
    opened_by: str
    lead: str
    assigned: tuple[str, ...]
    deadline: datetime | None
    last_type: str
    updated: datetime
    finished: bool  # in a terminal state of its lifecycle

    def overdue(self, now: datetime) -> bool:
        return self.deadline is not None and not self.finished and now > self.deadline


@dataclass(frozen=True)
class Entry:
    """One event of the timeline as shown: the event, redacted for the viewer."""

    sequence: int
    received: datetime
    event: event_pb2.Event


@dataclass(frozen=True)
class IncidentView:
    key: IncidentKey
    title: str
    category: int
    severity: int
    division_code: str
    stage: Line | None  # None: the viewer saw no event that moved it
    phase: Line | None
    lines: tuple[Line, ...]  # warnings, tasks, resource lines: overdue first, then newest
    timeline: tuple[Entry, ...]
    dropped: int  # events the board no longer holds (see MAX_EVENTS_PER_INCIDENT)
    loop: tuple[LoopStep, ...]  # the steps of the loop it reached, timed from its report
    location: common_pb2.GeoPoint | None = None  # the scene, as the viewer may see it
    warning_areas: tuple[WarningArea, ...] = ()  # of its warnings in force the viewer may see

    @property
    def updated(self) -> datetime:
        return self.timeline[-1].received

    @property
    def open(self) -> bool:
        return self.stage is None or not self.stage.finished

    def overdue(self, now: datetime) -> tuple[Line, ...]:
        own = [line for line in (self.stage, self.phase) if line is not None]
        return tuple(line for line in (*own, *self.lines) if line.overdue(now))


def incident_view(
    catalogue: Catalogue,
    board: Board,
    key: IncidentKey,
    visible: Visible,
    now: datetime,
    *,
    as_of: datetime | None = None,
) -> IncidentView | None:
    """The incident as a viewer sees it: folded from the events `visible` lets it have
    (redacted), those received by `as_of` only when given; None when it may see none of them
    (as for an incident that does not exist)."""
    shown = []
    for stored in board.timeline(key):
        received = received_at(stored.event)
        if as_of is not None and received > as_of:
            continue  # (not break: replicas' clocks and concurrent calls interleave a little)
        if (event := visible(stored.event)) is not None:
            shown.append(Entry(stored.sequence, received, event))
    if not shown:
        return None
    states: dict[tuple[str, str], tuple[AggregateState, datetime]] = {}
    title, division = "", ""
    location: common_pb2.GeoPoint | None = None
    drawn: dict[str, tuple[WarningArea, ...]] = {}  # by warning key: its latest message's areas
    category, severity = incident_grade((entry.event for entry in shown), key.incident_id)
    for entry in shown:
        event = entry.event
        for ref in aggregate_refs(event, catalogue):
            known = states.get((ref.lifecycle, ref.key))
            moved = replay(catalogue, ref, known[0] if known else None, event)
            if moved is not None:
                states[(ref.lifecycle, ref.key)] = (moved, entry.received)
            if moved is not None and ref.lifecycle == WARNING:
                message, areas = own_areas(event)
                if ref.key == message:  # (not the messages an update or a cancel ends)
                    drawn[message] = areas
        if event.HasField("incident") and event.incident.incident_id == key.incident_id:
            incident = event.incident
            title = incident.title or title
            division = incident.location.jurisdiction.division_code or division
            if incident.location.HasField("point"):  # (none when the policy withholds it)
                location = incident.location.point
        division = division or event.jurisdiction.division_code
    own: dict[str, Line | None] = {STAGE: None, PHASE: None}
    lines = []
    for (lifecycle, aggregate), (state, updated) in states.items():
        line = _line(catalogue, state, updated)
        if lifecycle in own and aggregate == key.incident_id:
            own[lifecycle] = line
        else:
            lines.append(line)
    lines.sort(key=lambda line: line.updated, reverse=True)
    lines.sort(key=lambda line: not line.overdue(now))  # stable: overdue first, newest first
    return IncidentView(
        key,
        title,
        category,
        severity,
        division,
        own[STAGE],
        own[PHASE],
        tuple(lines),
        tuple(shown),
        board.dropped(key),
        tuple(loop_steps(entry.event for entry in shown)),
        location,
        live_areas(catalogue, drawn, {ref: s for ref, (s, _) in states.items()}, as_of or now)
        if drawn
        else (),
    )


def board_view(
    catalogue: Catalogue,
    board: Board,
    plane: int,
    jurisdiction_prefix: str,
    visible: Visible,
    now: datetime,
    *,
    include_finished: bool = False,
    as_of: datetime | None = None,
) -> list[IncidentView]:
    """The incidents of `plane` in the jurisdiction (a 2/4/6-digit division prefix, "" for
    all) the viewer may see (as of `as_of`, when given), open ones only unless
    `include_finished`: those with something overdue first, then the latest changed first."""
    views = [
        view
        for key in board.incidents(plane)
        if (view := incident_view(catalogue, board, key, visible, now, as_of=as_of)) is not None
        and view.division_code.startswith(jurisdiction_prefix)
        and (include_finished or view.open)
    ]
    views.sort(key=lambda view: view.updated, reverse=True)
    views.sort(key=lambda view: not view.overdue(now))
    return views


def _line(catalogue: Catalogue, state: AggregateState, updated: datetime) -> Line:
    terminal = catalogue.lifecycle(state.lifecycle).terminal
    return Line(
        state.lifecycle,
        state.key,
        state.state,
        state.opened_by,
        state.lead,
        state.assigned,
        state.deadline,
        state.last_type,
        updated,
        finished=state.state in terminal and state.state != NONE,
    )


def agencies(view: IncidentView) -> tuple[str, ...]:
    """Every agency involved in the incident as the viewer sees it: who opened it, its lead,
    those assigned, and every sender on its timeline, in order of appearance."""
    named: Iterable[str] = (
        *(v for line in (view.stage, view.phase) if line for v in (line.opened_by, line.lead)),
        *(a for line in (view.stage,) if line for a in line.assigned),
        *(entry.event.source for entry in view.timeline),
    )
    return tuple(dict.fromkeys(a for a in named if a))
