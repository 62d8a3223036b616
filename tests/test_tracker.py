"""The deadline tracker (gateway.store.tracker) over the in-memory key-value store: starting once,
answers, deliveries that come before the entry, state deadlines, and escalations that fire once
across replicas even when a publish fails or two replicas race."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.catalogue import load_catalogue
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.policies.model import incident_ids
from dutylink.v1 import event_pb2, warning_pb2
from gateway.access.authorization import Authorizer, GrantBook, PolicyHolder
from gateway.core.streams import BucketSpec
from gateway.core.workflows import tracking_codec
from gateway.core.workflows.tracking import Status
from gateway.core.workflows.tracking_events import OPEN_PREFIX, due_key, open_key, tracked_key
from gateway.store.consumers import Delivery
from gateway.store.tracker import Tracker
from gateway.testkit.memory_kv import MemoryKeyValue
from tests.factories import NOW, envelope, extreme_warning, incident_event

RECEIVED = NOW


class Notices:
    """A publish that records what it was given; `failing` makes the next calls raise."""

    def __init__(self) -> None:
        self.published: list[event_pb2.Event] = []
        self.failing = 0

    async def __call__(self, events: Sequence[event_pb2.Event]) -> None:
        if self.failing:
            self.failing -= 1
            raise RuntimeError("JetStream away")
        self.published.extend(events)

    def of_type(self, event_type: str) -> list[event_pb2.Event]:
        return [e for e in self.published if e.type == event_type]


class Clock:
    def __init__(self) -> None:
        self.now = RECEIVED

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def authorizer(tmp_path: Path) -> Authorizer:
    directory = tmp_path / "policies"
    shutil.copytree(SAMPLE_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return Authorizer(PolicyHolder(directory), GrantBook())


def replica(
    store: MemoryKeyValue, authorizer: Authorizer, notices: Notices, clock: Clock
) -> Tracker:
    return Tracker(
        store, authorizer, load_catalogue(), notices, interval=1.0, max_tracked=100, clock=clock
    )


def stored(event: event_pb2.Event, sequence: int = 1, received: datetime = RECEIVED) -> Delivery:
    event.received_time.FromDatetime(received)
    return Delivery("dutylink.events.x", event.SerializeToString(), sequence, 1)


def assignment(incident_id: str) -> event_pb2.Event:
    """The command centre assigns `incident_id` to fire (tracked: taken into handling in 15 min)."""
    assigned = envelope("incident.assigned", incident_id=incident_id)
    assigned.source = "command"
    assigned.incident.incident_id = incident_id
    assigned.incident.lead_agency = "fire"
    return assigned


@pytest.fixture
def store() -> MemoryKeyValue:
    return MemoryKeyValue(BucketSpec("aggregates"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notices() -> Notices:
    return Notices()


@pytest.fixture
def tracker(
    store: MemoryKeyValue, authorizer: Authorizer, notices: Notices, clock: Clock
) -> Tracker:
    """One replica's tracker over `store`, publishing into `notices`, reading `clock`."""
    return replica(store, authorizer, notices, clock)


async def test_a_message_is_tracked_once_however_often_it_is_delivered_to_the_tracker(
    store: MemoryKeyValue, tracker: Tracker, authorizer: Authorizer
) -> None:
    warning = extreme_warning()
    await tracker.observe(stored(warning))
    key = tracked_key(warning.plane, warning.source, warning.id)
    first = await store.get(key)
    await tracker.observe(stored(warning))
    assert first is not None and await store.get(key) == first
    tracked = tracking_codec.decode(first.value)
    assert [r.agency for r in tracked.recipients] == ["fire", "police", "transport"]
    assert [d.deadline_id for d in tracked.deadlines] == ["extreme-warning-acknowledged"]
    assert tracked.rules_version == authorizer.policy.version


async def test_a_delivery_recorded_before_the_entry_exists_is_folded_in_when_it_starts(
    tracker: Tracker,
) -> None:
    warning = extreme_warning()
    await tracker.delivered(warning, "police")  # the subscriber was faster than the tracker
    await tracker.observe(stored(warning))
    tracked = await tracker.status(warning.plane, warning.source, warning.id)
    assert tracked is not None
    police = tracked.recipient("police")
    assert police is not None and police.status is Status.DELIVERED


async def test_two_replicas_checking_at_once_publish_one_escalation_id_and_fire_it_once(
    store: MemoryKeyValue, authorizer: Authorizer
) -> None:
    clock, notices = Clock(), Notices()
    first, second = (replica(store, authorizer, notices, clock) for _ in range(2))
    warning = extreme_warning()
    await first.observe(stored(warning))
    clock.now = RECEIVED + timedelta(minutes=3)  # past the 2-minute deadline, level 1 only
    await asyncio.gather(first.check(), second.check())
    await asyncio.gather(first.check(), second.check())
    raised = notices.of_type("escalation.raised")
    assert len({e.id for e in raised}) == 1
    assert len({e.SerializeToString(deterministic=True) for e in raised}) == 1
    assert raised[0].escalation.level == 1 and raised[0].plane == event_pb2.PLANE_ACTUAL
    assert list(raised[0].escalation.pending_agencies) == ["fire", "police", "transport"]
    tracked = await first.status(warning.plane, warning.source, warning.id)
    assert tracked is not None and tracked.deadlines[0].fired == 1


async def test_a_failed_publish_leaves_the_level_due_and_the_next_check_sends_the_same_notice(
    tracker: Tracker, clock: Clock, notices: Notices
) -> None:
    warning = extreme_warning()
    await tracker.observe(stored(warning))
    clock.now = RECEIVED + timedelta(minutes=3)
    notices.failing = 1
    with pytest.raises(RuntimeError):
        await tracker.check()
    tracked = await tracker.status(warning.plane, warning.source, warning.id)
    assert tracked is not None and tracked.deadlines[0].fired == 0
    assert await tracker.check() == 1
    assert len(notices.of_type("escalation.raised")) == 1


async def test_a_late_answer_resolves_the_escalation_once_and_a_second_answer_changes_nothing(
    store: MemoryKeyValue, tracker: Tracker, clock: Clock, notices: Notices
) -> None:
    warning = extreme_warning()
    await tracker.observe(stored(warning))
    for agency in ("fire", "police"):
        answer = acknowledgement_of(warning, now=NOW)
        answer.source = agency
        await tracker.observe(stored(answer))
    clock.now = RECEIVED + timedelta(minutes=3)
    await tracker.check()
    late = acknowledgement_of(warning, now=NOW, by="night desk")
    late.source = "transport"
    await tracker.observe(stored(late))
    await tracker.observe(stored(late))
    resolved = notices.of_type("escalation.resolved")
    assert len(resolved) == 1
    assert list(notices.of_type("escalation.raised")[0].escalation.pending_agencies) == [
        "transport"
    ]
    clock.now = RECEIVED + timedelta(hours=2)  # level 2 would be due: the deadline was met
    assert await tracker.check() == 0
    # Nothing left to fire: out of the timer's index, still there to be asked about.
    key = tracked_key(warning.plane, warning.source, warning.id)
    assert await store.get(due_key(key)) is None and await store.get(key) is not None


async def test_the_pending_list_reads_only_messages_still_waiting_for_an_answer(
    store: MemoryKeyValue, tracker: Tracker
) -> None:
    answered, waiting = extreme_warning(), extreme_warning()
    for warning in (answered, waiting):
        await tracker.observe(stored(warning))
    assert [t.event_id for t in await tracker.pending(event_pb2.PLANE_ACTUAL, limit=10)] == sorted(
        (answered.id, waiting.id), reverse=True
    )
    for agency in ("fire", "police", "transport"):
        answer = acknowledgement_of(answered, now=NOW)
        answer.source = agency
        await tracker.observe(stored(answer))
    pending = await tracker.pending(event_pb2.PLANE_ACTUAL, sender="ecology", limit=10)
    assert [t.event_id for t in pending] == [waiting.id]
    # Everyone answered: out of the open index (so the list never wades through history),
    # while its status can still be asked for.
    key = tracked_key(answered.plane, answered.source, answered.id)
    assert await store.get(open_key(key)) is None and await store.get(key) is not None
    assert await store.keys(OPEN_PREFIX, limit=10) == [
        open_key(tracked_key(waiting.plane, waiting.source, waiting.id))
    ]


async def test_an_exercise_warning_escalates_on_the_exercise_plane_only(
    tracker: Tracker, clock: Clock, notices: Notices
) -> None:
    await tracker.observe(stored(extreme_warning(event_pb2.PLANE_EXERCISE)))
    clock.now = RECEIVED + timedelta(minutes=3)
    await tracker.check()
    assert [e.plane for e in notices.published] == [event_pb2.PLANE_EXERCISE]


async def test_an_assignment_taken_into_handling_in_time_never_escalates(
    tracker: Tracker, clock: Clock
) -> None:
    incident = incident_event()
    assigned = assignment(incident.subject)
    assigned.incident.involved_agencies.append("police")
    await tracker.observe(stored(assigned))
    tracked = await tracker.status(assigned.plane, assigned.source, assigned.id)
    assert tracked is not None
    assert [d.deadline_id for d in tracked.deadlines] == ["assignment-accepted"]
    handling = envelope("incident.handling", incident_id=incident.subject)
    handling.source = "fire"
    handling.incident.incident_id = incident.subject
    await tracker.observe(stored(handling, 2))
    clock.now = RECEIVED + timedelta(hours=1)
    assert await tracker.check() == 0
    tracked = await tracker.status(assigned.plane, assigned.source, assigned.id)
    assert tracked is not None and "handling" in tracked.states


async def test_a_cap_ack_referencing_the_warning_counts_as_its_senders_acknowledgement(
    tracker: Tracker,
) -> None:
    warning = extreme_warning()
    await tracker.observe(stored(warning))
    ack = envelope("warning.ack")
    ack.source = "police"
    ack.warning.CopyFrom(warning.warning)
    ack.warning.identifier = f"{warning.warning.identifier}-ack"
    ack.warning.sender = "police.sh.example"
    ack.warning.msg_type = warning_pb2.CAP_MSG_TYPE_ACK
    ack.warning.references.add(
        sender=warning.warning.sender, identifier=warning.warning.identifier
    ).sent.CopyFrom(warning.warning.sent)
    await tracker.observe(stored(ack, 2))
    tracked = await tracker.status(warning.plane, warning.source, warning.id)
    assert tracked is not None
    police = tracked.recipient("police")
    assert police is not None and police.status is Status.ACKNOWLEDGED
    assert police.answered_by == "police.sh.example"


async def test_an_assignment_not_taken_escalates_naming_its_incident_for_the_audit_export(
    tracker: Tracker, clock: Clock, notices: Notices
) -> None:
    incident = incident_event()
    assigned = assignment(incident.subject)
    await tracker.observe(stored(assigned))
    clock.now = RECEIVED + timedelta(minutes=16)
    assert await tracker.check() == 1
    (raised,) = notices.published
    assert list(raised.escalation.incidents) == [incident.subject]
    assert incident_ids(raised) == [incident.subject]


async def test_a_reopened_incident_starts_the_deadlines_of_its_messages_over(
    store: MemoryKeyValue, tracker: Tracker, clock: Clock, notices: Notices
) -> None:
    report = incident_event()
    report.source = "police"
    await tracker.observe(stored(report))  # public-report-first-feedback: 24 h, then 12 h more
    feedback = envelope("incident.feedback", incident_id=report.subject)
    feedback.source = "police"
    feedback.incident.incident_id = report.subject
    await tracker.observe(stored(feedback, 2))
    key = tracked_key(report.plane, report.source, report.id)
    assert await store.get(due_key(key)) is None  # met: nothing left to fire

    reopened = envelope("incident.reopened", incident_id=report.subject)
    reopened.source = "police"
    reopened.incident.incident_id = report.subject
    reopen_at = RECEIVED + timedelta(days=3)
    reopen = stored(reopened, 3, received=reopen_at)
    await tracker.observe(reopen)
    await tracker.observe(reopen)  # told twice: the same restart
    tracked = await tracker.status(report.plane, report.source, report.id)
    assert tracked is not None and tracked.restarted_at == reopen_at
    (deadline,) = tracked.deadlines
    assert deadline.due == reopen_at + timedelta(hours=24) and deadline.met_at is None
    assert await store.get(due_key(key)) is not None  # back in the timer's index
    clock.now = reopen_at + timedelta(hours=25)
    assert await tracker.check() == 1
    (raised,) = notices.of_type("escalation.raised")
    assert raised.escalation.due.ToDatetime(tzinfo=UTC) == reopen_at + timedelta(hours=24)
