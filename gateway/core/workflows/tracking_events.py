"""What the deadline tracker (gateway.store.tracker) reads from events and writes as events: which
messages it tracks, the answers an acknowledgement carries, the aggregate states an event
enters, where a tracked message lives in the key-value store, and the escalation events it
publishes. Pure: no I/O; time comes in as arguments.

Keys (in the aggregates bucket):
- `tracking.<plane>.<sender>.<event id>`: the tracked message (tracking_codec);
- `tracking_by.<lifecycle>.<plane>.<aggregate key>`: per aggregate, the keys of the tracked
  messages that belong to it (JSON list), so an event that moves the aggregate finds the
  messages waiting for it with one read;
- `tracking_seen.<plane>.<sender>.<event id>.<agency>`: the first delivery to an agency;
- `tracking_due.<plane>.<sender>.<event id>`: present while a deadline of the message may
  still fire (the timer's index).
Event ids and aggregate keys are written with `encode_key_token` (keys hold no `.` or `:`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from dutylink.catalogue import Catalogue
from dutylink.v1 import acknowledgement_pb2, common_pb2, escalation_pb2, event_pb2
from gateway.core.workflows.base import AggregateRef, encode_key_token, plane_token
from gateway.core.workflows.machine import aggregate_refs
from gateway.core.workflows.notices import GATEWAY_AGENCY
from gateway.core.workflows.tracking import Escalation, Tracked
from gateway.core.workflows.warnings import warning_key

TRACKING_PREFIX = "tracking"
CAP_ACK = "warning.ack"
WATCH_PREFIX = "tracking_by"
DUE_PREFIX = "tracking_due"
OPEN_PREFIX = "tracking_open"
DELIVERED_PREFIX = "tracking_seen"
MAX_WATCHERS = 64

# The messages an agency is expected to take (签收) even when no deadline names them.
ANSWERABLE_TYPES = frozenset(
    {"warning.alert", "warning.update", "incident.assigned", "resource.request", "task.assigned"}
)


def tracked_key(plane: int, sender: str, event_id: str) -> str:
    return f"{TRACKING_PREFIX}.{plane_token(plane)}.{sender}.{encode_key_token(event_id)}"


def plane_prefix(plane: int) -> str:
    """Every tracked message of one plane lives under this prefix."""
    return f"{TRACKING_PREFIX}.{plane_token(plane)}"


def due_key(tracked: str) -> str:
    """The timer's index entry of a tracked message with a deadline still to watch (its value
    is `tracked`, the message's key): the timer lists these, not every message ever tracked."""
    return DUE_PREFIX + tracked.removeprefix(TRACKING_PREFIX)


def open_key(tracked: str) -> str:
    """The index entry of a tracked message some recipient has yet to answer (its value is
    `tracked`): the pending list reads these, not every message ever tracked."""
    return OPEN_PREFIX + tracked.removeprefix(TRACKING_PREFIX)


def tracked_of(index_key: str) -> str:
    """The tracked message's key behind a timer or open index entry's key."""
    return f"{TRACKING_PREFIX}.{index_key.split('.', 1)[1]}"


def delivered_prefix(plane: int, sender: str, event_id: str) -> str:
    """Under it, one create-only marker per agency the message was delivered to (its time)."""
    return f"{DELIVERED_PREFIX}.{plane_token(plane)}.{sender}.{encode_key_token(event_id)}"


def watch_key(ref: AggregateRef) -> str:
    """The entry listing the tracked messages that belong to `ref`."""
    return f"{WATCH_PREFIX}.{ref.lifecycle}.{ref.plane}.{encode_key_token(ref.key)}"


def watchers(raw: bytes | None) -> list[str]:
    """The tracked-message keys a watch entry lists (none for no entry)."""
    if raw is None:
        return []
    listed = json.loads(raw)
    if not isinstance(listed, list) or not all(isinstance(key, str) for key in listed):
        raise ValueError("not a watch entry")
    return listed


def with_watcher(raw: bytes | None, tracked: str) -> bytes | None:
    """The watch entry with `tracked` added (None: it is listed already). The newest
    MAX_WATCHERS are kept: an aggregate with more tracked messages than that is a loop gone
    wrong, and its oldest messages stop hearing of its states (their deadlines escalate)."""
    listed = watchers(raw)
    if tracked in listed:
        return None
    return json.dumps([*listed, tracked][-MAX_WATCHERS:]).encode()


def reopened(event: event_pb2.Event, catalogue: Catalogue) -> list[AggregateRef]:
    """The aggregates `event` reopens: it leaves a state where the loop was finished (a
    terminal state of the lifecycle), so the deadlines of their messages start over."""
    declared = catalogue.get(event.type)
    if declared is None or declared.transition is None or declared.lifecycle is None:
        return []
    terminal = set(catalogue.lifecycle(declared.lifecycle).terminal)
    sources = set(declared.transition.from_states)
    if not sources or not sources <= terminal:
        return []
    return aggregate_refs(event, catalogue)


def entered_states(event: event_pb2.Event, catalogue: Catalogue) -> list[tuple[AggregateRef, str]]:
    """The aggregates `event` moves and the state each enters (as the catalogue declares its
    transition; a transition that keeps the state enters none)."""
    declared = catalogue.get(event.type)
    if declared is None or declared.transition is None:
        return []
    transition = declared.transition
    entered = []
    for ref in aggregate_refs(event, catalogue):
        state = transition.outcomes.get(ref.outcome) if ref.outcome else transition.to_state
        if state:
            entered.append((ref, state))
    return entered


@dataclass(frozen=True)
class Answer:
    """An agency's answer to a tracked message."""

    sender: str  # who sent the message answered
    event_id: str
    agency: str  # who answers
    acknowledged: bool  # False: declined
    by: str
    reason: str


def answer_in(event: event_pb2.Event) -> Answer | None:
    """The answer an `acknowledgement.*` event carries (None for any other event)."""
    if not event.HasField("acknowledgement") or not event.type.startswith("acknowledgement."):
        return None
    ack = event.acknowledgement
    return Answer(
        sender=ack.event_source,
        event_id=ack.event_id,
        agency=event.source,
        acknowledged=ack.decision == acknowledgement_pb2.ACKNOWLEDGEMENT_DECISION_ACKNOWLEDGED,
        by=ack.acknowledged_by,
        reason=ack.reason,
    )


def acknowledged_warnings(event: event_pb2.Event) -> list[AggregateRef]:
    """The warnings a CAP Ack (`warning.ack`) takes: an acknowledgement, by its sending agency,
    of every tracked message of those warnings."""
    if event.type != CAP_ACK or not event.HasField("warning"):
        return []
    plane = plane_token(event.plane)
    keys = dict.fromkeys(warning_key(r.sender, r.identifier) for r in event.warning.references)
    return [AggregateRef("warning", plane, key) for key in keys]


def escalation_event_id(escalation: Escalation, sender: str) -> str:
    """The same id on every replica and every try: JetStream stores the notice once. A deadline
    started over (its aggregate reopened) has another due time, and so other ids."""
    kind = "resolved" if escalation.resolved else "raised"
    identity = (sender, escalation.event_id, escalation.deadline_id, escalation.due.isoformat())
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:24]
    return f"escalation-{kind}-{escalation.level}-{digest}"


def escalation_events(tracked: Tracked, escalations: Iterable[Escalation]) -> list[event_pb2.Event]:
    """The gateway's `escalation.raised` / `escalation.resolved` notices about `tracked`, in its
    plane and jurisdiction. Byte for byte the same on every replica and every try: the time is
    when the level fell due (or when the deadline was met), never the clock's."""
    events = []
    for escalation in escalations:
        deadline = next(d for d in tracked.deadlines if d.deadline_id == escalation.deadline_id)
        at = deadline.resolved_at if escalation.resolved else None
        at = at or deadline.fires_at(escalation.level)
        events.append(_notice(tracked, escalation, at))
    return events


def _notice(tracked: Tracked, escalation: Escalation, at: datetime) -> event_pb2.Event:
    event = event_pb2.Event(
        id=escalation_event_id(escalation, tracked.sender),
        type="escalation.resolved" if escalation.resolved else "escalation.raised",
        source=GATEWAY_AGENCY,
        plane=event_pb2.Plane.ValueType(tracked.plane),
        jurisdiction=common_pb2.Jurisdiction(division_code=tracked.division_code),
        classification=event_pb2.CLASSIFICATION_INTERNAL,
        priority=event_pb2.PRIORITY_URGENT
        if not escalation.resolved
        else event_pb2.PRIORITY_ROUTINE,
        correlation_id=tracked.event_id,
        escalation=escalation_pb2.Escalation(
            event_id=escalation.event_id,
            tracked_type=tracked.event_type,
            tracked_source=tracked.sender,
            deadline_id=escalation.deadline_id,
            level=escalation.level,
            state=(
                escalation_pb2.ESCALATION_STATE_RESOLVED
                if escalation.resolved
                else escalation_pb2.ESCALATION_STATE_RAISED
            ),
            pending_agencies=sorted(escalation.pending),
            notified_agencies=sorted(set(escalation.notify) | set(escalation.deputies)),
            rules_version=escalation.rules_version,
            incidents=tracked.incidents[:64],
        ),
    )
    event.time.FromDatetime(at)
    event.escalation.due.FromDatetime(escalation.due)
    return event
