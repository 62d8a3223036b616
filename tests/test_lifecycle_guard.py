"""The lifecycle and ledger guard: the pure batch judgement (gateway.core.workflows.judge) and the
compare-and-set edge over the key-value store (gateway.store.lifecycle_guard), with two guards
standing in for two gateway replicas on one store."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dutylink.catalogue import load_catalogue
from dutylink.policies.engine import Decision
from dutylink.v1 import common_pb2, event_pb2, resource_pb2
from gateway.access.auth import Principal
from gateway.core import envelope
from gateway.core.admission import Admitted, RefusalKind, Refused, StateProblem
from gateway.core.kv import KeyValueStore, Snapshot, Versioned, Write
from gateway.core.ports import StoreUnavailableError
from gateway.core.streams import AGGREGATES_BUCKET, BucketSpec
from gateway.core.workflows import AggregateState, ledger_codec
from gateway.core.workflows.base import Actor
from gateway.core.workflows.judge import View, judge, needs
from gateway.core.workflows.ledger_state import ItemKey, plain
from gateway.store.kv import JetStreamKeyValue
from gateway.store.lifecycle_guard import LifecycleGuard
from gateway.testkit.memory_kv import MemoryKeyValue

CATALOGUE = load_catalogue()
T0 = datetime(2026, 8, 15, 8, 0, tzinfo=UTC)
ACTUAL = event_pb2.PLANE_ACTUAL
ROLES = {"command": frozenset({"command"}), "emergency": frozenset({"supervisor"})}
_ids = itertools.count()


def _event(event_type: str, event_id: str | None = None) -> event_pb2.Event:
    event = event_pb2.Event(id=event_id or f"ev-{next(_ids)}", type=event_type, plane=ACTUAL)
    event.time.FromDatetime(T0)
    event.jurisdiction.division_code = "310115"
    return event


def incident(event_type: str, incident_id: str = "INC-1", *, event_id: str | None = None,
             lead: str = "") -> event_pb2.Event:  # fmt: skip
    event = _event(event_type, event_id)
    event.incident.incident_id = incident_id
    event.incident.title = "Chemical plant fire"
    event.incident.lead_agency = lead
    return event


def merge(duplicate: str, survivor: str) -> event_pb2.Event:
    event = incident("incident.merged", duplicate)
    event.incident.merged_into = survivor
    return event


def declare(item: str, quantity: float, threshold: float = 0) -> event_pb2.Event:
    event = _event("inventory.declared")
    event.inventory.declaration.items.add(
        item_id=item, kind=resource_pb2.RESOURCE_KIND_VEHICLE, type_info="ambulance",
        quantity=quantity, unit="vehicles", home=common_pb2.Location(address="depot"),
        replenishment_threshold=threshold,
    )  # fmt: skip
    return event


def request(thread: str, quantity: float = 2) -> event_pb2.Event:
    event = _event("resource.request")
    message = event.resource
    message.message_id = message.originating_message_id = thread
    line = message.request_resource.resource_infos.add(resource_info_element_id="1")
    line.resource.name = "ambulances"
    line.assignment.quantity.value = quantity
    return event


def commit(thread: str, item: str, quantity: float, owner: str = "health") -> event_pb2.Event:
    event = _event("resource.commit")
    message = event.resource
    message.message_id = f"{thread}-commit-{next(_ids)}"
    message.originating_message_id = message.preceding_message_id = thread
    line = message.commit_resource.resource_infos.add(resource_info_element_id="1")
    line.response.preceding_resource_info_element_id = "1"
    line.response.type = resource_pb2.RESPONSE_TYPE_ACCEPT
    line.resource.name = "ambulances"
    line.resource.inventory_item_id = item
    line.resource.responsible_agency = owner
    line.assignment.quantity.value = quantity
    return event


def release(thread: str) -> event_pb2.Event:
    """A release that names no item: the thread index finds the item line it draws on."""
    event = _event("resource.release")
    message = event.resource
    message.message_id = f"{thread}-release-{next(_ids)}"
    message.originating_message_id = message.preceding_message_id = thread
    line = message.release_resource.resource_infos.add(resource_info_element_id="1")
    line.resource.name = "ambulances"
    return event


def admitted(agency: str, events: Sequence[event_pb2.Event]) -> list[Admitted]:
    """The events as admission lets them through: stamped with their publisher and T0."""
    decision = Decision(True, ("open",), "", (), "test")
    return [Admitted(envelope.stamped(e, agency, T0), "subject", b"", {}, decision) for e in events]


def stamped(agency: str, *events: event_pb2.Event) -> list[event_pb2.Event]:
    return [a.event for a in admitted(agency, events)]


def guard(store: KeyValueStore) -> LifecycleGuard:
    return LifecycleGuard(store, CATALOGUE, lambda p: ROLES.get(p.agency, frozenset()))


async def publish(
    replica: LifecycleGuard, agency: str, *events: event_pb2.Event
) -> list[Admitted | Refused]:
    principal = Principal(agency, ROLES.get(agency, frozenset()))
    return list((await replica.commit(principal, admitted(agency, events))).outcomes)


def refusal(outcome: Admitted | Refused) -> Refused:
    assert isinstance(outcome, Refused), outcome
    return outcome


def memory_store() -> MemoryKeyValue:
    return MemoryKeyValue(BucketSpec(AGGREGATES_BUCKET))


async def incident_state(store: KeyValueStore, incident_id: str = "INC-1") -> AggregateState:
    entry = await store.get(f"lifecycle.incident.actual.{incident_id}")
    assert entry is not None
    return AggregateState.from_bytes(entry.value)


async def available(store: KeyValueStore, item: str, agency: str = "health") -> str:
    entry = await store.get(ledger_codec.kv_key(ItemKey(ACTUAL, agency, item)))
    assert entry is not None
    return plain(ledger_codec.decode(entry.value).available)


# --- the pure judgement --------------------------------------------------------------------


def test_events_of_one_batch_see_the_earlier_ones_effects() -> None:
    events = stamped("police", incident("incident.reported"), incident("incident.verified"))
    result = judge(CATALOGUE, View(), Actor("police"), events, T0)
    assert [v.accepted for v in result.verdicts] == [True, True]
    state = result.view.aggregates["lifecycle.incident.actual.INC-1"]
    assert state is not None and (state.state, state.version) == ("verified", 2)
    assert result.changes.aggregates == {"lifecycle.incident.actual.INC-1"}


def test_a_refusal_names_the_aggregate_its_state_version_and_what_it_allows() -> None:
    events = stamped("police", incident("incident.verified"))
    (verdict,) = judge(CATALOGUE, View(), Actor("police"), events, T0).verdicts
    (problem,) = verdict.problems
    assert problem.aggregate == "incident/actual/INC-1"
    assert (problem.state, problem.version) == ("none", 0)
    assert any(a.startswith("incident.reported") for a in problem.allowed)


def test_a_refused_event_in_a_batch_changes_nothing_and_the_rest_go_on() -> None:
    events = stamped(
        "police",
        incident("incident.reported"),
        incident("incident.reported"),  # a second report of the same incident
        incident("incident.verified"),
    )
    result = judge(CATALOGUE, View(), Actor("police"), events, T0)
    assert [v.accepted for v in result.verdicts] == [True, False, True]
    state = result.view.aggregates["lifecycle.incident.actual.INC-1"]
    assert state is not None and state.version == 2


def test_a_retry_of_an_event_already_written_passes_without_moving_anything() -> None:
    (report,) = stamped("police", incident("incident.reported", event_id="R-1"))
    first = judge(CATALOGUE, View(), Actor("police"), [report], T0)
    again = judge(CATALOGUE, first.view, Actor("police"), [report], T0)
    assert again.verdicts[0].accepted
    assert not again.changes
    assert again.view == first.view


def test_a_merge_reads_its_survivor_and_is_refused_if_it_was_never_reported() -> None:
    events = stamped("police", incident("incident.reported", "INC-B"), merge("INC-B", "INC-A"))
    assert "lifecycle.incident.actual.INC-A" in needs(CATALOGUE, events).aggregates
    result = judge(CATALOGUE, View(), Actor("police"), events, T0)
    assert [v.accepted for v in result.verdicts] == [True, False]
    (problem,) = result.verdicts[1].problems
    assert (problem.aggregate, problem.state, problem.version) == ("incident/actual/INC-A",
                                                                   "none", 0)  # fmt: skip
    assert result.changes.aggregates == {"lifecycle.incident.actual.INC-B"}


def test_an_accepted_merge_writes_its_survivor_back_unchanged() -> None:
    """Written back as read, so that compare-and-set catches another replica moving it."""
    reports = stamped("police", incident("incident.reported", "INC-A"),
                      incident("incident.reported", "INC-B"))  # fmt: skip
    before = judge(CATALOGUE, View(), Actor("police"), reports, T0).view
    result = judge(CATALOGUE, before, Actor("police"), stamped("police", merge("INC-B", "INC-A")), T0)  # fmt: skip
    survivor = "lifecycle.incident.actual.INC-A"
    assert result.changes.aggregates == {survivor, "lifecycle.incident.actual.INC-B"}
    assert result.view.aggregates[survivor] == before.aggregates[survivor]


def test_a_merge_into_an_incident_opened_earlier_in_the_batch_passes() -> None:
    events = stamped(
        "police",
        incident("incident.reported", "INC-A"),
        incident("incident.reported", "INC-B"),
        merge("INC-B", "INC-A"),
        merge("INC-A", "INC-B"),  # the survivor of this one was just merged away
    )
    result = judge(CATALOGUE, View(), Actor("police"), events, T0)
    assert [v.accepted for v in result.verdicts] == [True, True, True, False]
    (problem,) = result.verdicts[3].problems
    assert (problem.aggregate, problem.state) == ("incident/actual/INC-B", "merged")


def test_a_retried_merge_passes_though_its_survivor_moved_on() -> None:
    (report_a, report_b, first, onward) = stamped(
        "police",
        incident("incident.reported", "INC-A"),
        incident("incident.reported", "INC-B"),
        merge("INC-B", "INC-A"),
        merge("INC-A", "INC-C"),
    )
    report_c = stamped("police", incident("incident.reported", "INC-C"))
    done = judge(CATALOGUE, View(), Actor("police"), [report_a, report_b, first, *report_c], T0)
    later = judge(CATALOGUE, done.view, Actor("police"), [onward], T0)
    assert later.verdicts[0].accepted  # INC-A, the first merge's survivor, is merged away now
    again = judge(CATALOGUE, later.view, Actor("police"), [first], T0)
    assert again.verdicts[0].accepted and not again.changes


def test_informational_types_need_no_state() -> None:
    assert not needs(CATALOGUE, stamped("police", _event("resource.message")))


def test_a_commitment_beyond_the_stock_names_the_ledger_line_and_what_is_available() -> None:
    events = [
        *stamped("health", declare("AMB", 3)),
        *stamped("fire", request("RM-1"), request("RM-2")),
        *stamped("health", commit("RM-1", "AMB", 2), commit("RM-2", "AMB", 2)),
    ]
    view = View()
    verdicts = []
    for event in events:  # each by its own publisher
        result = judge(CATALOGUE, view, Actor(event.source), [event], T0)
        view, verdicts = result.view, [*verdicts, *result.verdicts]
    assert [v.accepted for v in verdicts] == [True, True, True, True, False]
    problem = next(p for p in verdicts[-1].problems if p.aggregate.startswith("ledger/"))
    assert problem == StateProblem("ledger/actual/health/AMB", "available 1", 2, (), problem.reason)
    assert "requested 2" in problem.reason and "available 1" in problem.reason


# --- the compare-and-set edge --------------------------------------------------------------


async def test_a_batch_is_written_and_read_back_by_another_replica() -> None:
    store = memory_store()
    first, second = guard(store), guard(store)
    outcomes = await publish(first, "police", incident("incident.reported"))
    assert isinstance(outcomes[0], Admitted)
    (verify,) = await publish(second, "police", incident("incident.verified"))
    assert isinstance(verify, Admitted)
    state = await incident_state(store)
    assert (state.state, state.version, state.opened_by) == ("verified", 2, "police")


async def test_an_illegal_transition_is_refused_with_the_state_named() -> None:
    store = memory_store()
    await publish(guard(store), "police", incident("incident.reported"))
    (assigned,) = await publish(guard(store), "fire", incident("incident.assigned", lead="fire"))
    refused = refusal(assigned)
    assert refused.kind is RefusalKind.ILLEGAL_TRANSITION
    (problem,) = refused.state_problems
    assert (problem.aggregate, problem.state, problem.version) == ("incident/actual/INC-1",
                                                                   "reported", 1)  # fmt: skip
    assert "incident/actual/INC-1 is 'reported' (version 1)" in refused.message


async def test_a_merge_into_an_incident_nobody_reported_is_refused_and_moves_nothing() -> None:
    store = memory_store()
    await publish(guard(store), "police", incident("incident.reported", "INC-B"))
    (ghost,) = await publish(guard(store), "police", merge("INC-B", "INC-GHOST"))
    refused = refusal(ghost)
    assert refused.kind is RefusalKind.ILLEGAL_TRANSITION
    (problem,) = refused.state_problems
    assert (problem.aggregate, problem.state, problem.version) == ("incident/actual/INC-GHOST",
                                                                   "none", 0)  # fmt: skip
    assert await store.get("lifecycle.incident.actual.INC-GHOST") is None
    assert (await incident_state(store, "INC-B")).state == "reported"
    await publish(guard(store), "police", incident("incident.reported", "INC-GHOST"))
    (merged,) = await publish(guard(store), "police", merge("INC-B", "INC-GHOST"))
    assert isinstance(merged, Admitted)
    assert (await incident_state(store, "INC-GHOST")).version == 1  # read, not written


async def test_two_replicas_merging_two_incidents_into_each_other_accept_one() -> None:
    store = memory_store()
    for incident_id in ("INC-A", "INC-B"):
        await publish(guard(store), "police", incident("incident.reported", incident_id))
    outcomes = await asyncio.gather(
        publish(guard(store), "police", merge("INC-B", "INC-A")),  # reads INC-A, moves INC-B
        publish(guard(store), "police", merge("INC-A", "INC-B")),  # reads INC-B, moves INC-A
    )
    assert [isinstance(o, Admitted) for (o,) in outcomes].count(True) == 1
    states = [(await incident_state(store, i)).state for i in ("INC-A", "INC-B")]
    assert sorted(states) == ["merged", "reported"]  # never merged into each other


async def test_only_the_command_centre_assigns() -> None:
    store = memory_store()
    replica = guard(store)
    await publish(replica, "police", incident("incident.reported"), incident("incident.verified"))
    (by_fire,) = await publish(replica, "fire", incident("incident.assigned", lead="fire"))
    assert "command_centre" in refusal(by_fire).message
    (by_command,) = await publish(replica, "command", incident("incident.assigned", lead="fire"))
    assert isinstance(by_command, Admitted)
    state = await incident_state(store)
    assert (state.state, state.lead) == ("assigned", "fire")


async def test_two_replicas_racing_from_one_state_accept_one_transition() -> None:
    store = memory_store()
    await publish(guard(store), "police", incident("incident.reported"))
    outcomes = await asyncio.gather(
        publish(guard(store), "police", incident("incident.verified")),
        publish(guard(store), "police", incident("incident.rejected")),
    )
    accepted = [o for (o,) in outcomes if isinstance(o, Admitted)]
    assert len(accepted) == 1
    state = await incident_state(store)
    assert state.version == 2
    assert state.last_event_id == accepted[0].event.id


async def test_a_double_booking_by_two_replicas_at_one_moment_leaves_one_commitment() -> None:
    store = memory_store()
    setup = guard(store)
    await publish(setup, "health", declare("AMB", 3))
    await publish(setup, "fire", request("RM-1"))
    await publish(setup, "police", request("RM-2"))
    with structlog.testing.capture_logs() as logged:
        outcomes = await asyncio.gather(
            publish(guard(store), "health", commit("RM-1", "AMB", 2)),
            publish(guard(store), "health", commit("RM-2", "AMB", 2)),
        )
    assert any(e["event"] == "lifecycle.race_lost" for e in logged), "both read one state"
    results = [o for (o,) in outcomes]
    assert sum(isinstance(o, Admitted) for o in results) == 1
    loser = refusal(next(o for o in results if isinstance(o, Refused)))
    assert any(p.aggregate == "ledger/actual/health/AMB" for p in loser.state_problems)
    assert await available(store, "AMB") == "1"
    # The loser's resource line did not move either: nothing of it stays half-written.
    lost_thread = "RM-2" if isinstance(results[0], Admitted) else "RM-1"
    line = await store.get(f"lifecycle.resource_line.actual.{lost_thread}/1")
    assert line is not None and AggregateState.from_bytes(line.value).state == "requested"


async def test_a_second_exchange_draws_on_an_item_another_already_holds() -> None:
    store = memory_store()
    replica = guard(store)
    await publish(replica, "health", declare("AMB", 5))
    await publish(replica, "fire", request("RM-1"), request("RM-2"))
    (first,) = await publish(replica, "health", commit("RM-1", "AMB", 2))
    (second,) = await publish(guard(store), "health", commit("RM-2", "AMB", 2))
    assert isinstance(first, Admitted) and isinstance(second, Admitted)
    assert await available(store, "AMB") == "1"


async def test_a_release_that_names_no_item_finds_it_through_the_thread_index() -> None:
    store = memory_store()
    replica = guard(store)
    await publish(replica, "health", declare("AMB", 3))
    await publish(replica, "fire", request("RM-1"))
    await publish(replica, "health", commit("RM-1", "AMB", 2))
    assert await available(store, "AMB") == "1"
    (released,) = await publish(guard(store), "health", release("RM-1"))
    assert isinstance(released, Admitted)
    assert await available(store, "AMB") == "3"


async def test_a_retry_after_the_commit_passes_and_the_store_de_duplicates_it() -> None:
    store = memory_store()
    replica = guard(store)
    report = incident("incident.reported", event_id="R-1")
    await publish(replica, "police", report)
    (again,) = await publish(guard(store), "police", report)
    assert isinstance(again, Admitted)
    assert (await incident_state(store)).version == 1


async def test_taking_back_events_never_stored_leaves_the_others_transitions() -> None:
    store = memory_store()
    replica = guard(store)
    report, verify = incident("incident.reported"), incident("incident.verified")
    batch = admitted("police", [report, verify])
    commitment = await replica.commit(Principal("police"), batch)
    assert all(isinstance(o, Admitted) for o in commitment.outcomes)
    await commitment.take_back([batch[1]])
    state = await incident_state(store)
    assert (state.state, state.version, state.last_event_id) == ("reported", 1, report.id)
    # The event can come again and is judged anew.
    (again,) = await publish(replica, "police", verify)
    assert isinstance(again, Admitted)
    assert (await incident_state(store)).state == "verified"


async def test_taking_back_an_opening_event_removes_the_aggregate() -> None:
    store = memory_store()
    batch = admitted("police", [incident("incident.reported")])
    commitment = await guard(store).commit(Principal("police"), batch)
    await commitment.take_back(batch)
    assert await store.get("lifecycle.incident.actual.INC-1") is None
    # Opened again over the removed entry (its deletion's revision, not "never written").
    (again,) = await publish(guard(store), "police", incident("incident.reported"))
    assert isinstance(again, Admitted)
    assert (await incident_state(store)).version == 1


class _SeesEveryBatch(MemoryKeyValue):
    def __init__(self, spec: BucketSpec) -> None:
        super().__init__(spec)
        self.batches: list[list[str]] = []

    async def write_all(self, writes: Sequence[Write]) -> dict[str, int]:
        self.batches.append([w.key for w in writes])
        return await super().write_all(writes)


async def test_a_batch_writes_every_changed_entry_in_one_atomic_write() -> None:
    store = _SeesEveryBatch(BucketSpec(AGGREGATES_BUCKET))
    await publish(guard(store), "health", declare("AMB", 3))
    await publish(guard(store), "fire", request("RM-1"))
    store.batches.clear()
    await publish(guard(store), "health", commit("RM-1", "AMB", 2))
    (keys,) = store.batches
    assert "ledger.actual.health.AMB" in keys and len(keys) > 1


async def test_a_batch_larger_than_one_atomic_write_is_written_key_by_key() -> None:
    store = MemoryKeyValue(BucketSpec(AGGREGATES_BUCKET, max_batch_writes=1))
    replica = guard(store)
    await publish(replica, "health", declare("AMB", 3))
    await publish(replica, "fire", request("RM-1"), request("RM-2"))
    (booked,) = await publish(replica, "health", commit("RM-1", "AMB", 2))
    assert isinstance(booked, Admitted)
    assert await available(store, "AMB") == "1"
    outcomes = await asyncio.gather(
        publish(guard(store), "health", commit("RM-2", "AMB", 1)),
        publish(guard(store), "health", commit("RM-2", "AMB", 1)),
    )
    assert sum(isinstance(o, Admitted) for (o,) in outcomes) >= 1
    assert await available(store, "AMB") == "0"


async def test_stock_falling_below_its_threshold_raises_one_notice_from_the_gateway() -> None:
    store = memory_store()
    replica = guard(store)
    await publish(replica, "health", declare("AMB", 3, threshold=2))
    await publish(replica, "fire", request("RM-1"))
    booking = commit("RM-1", "AMB", 2)
    commitment = await replica.commit(Principal("health"), admitted("health", [booking]))
    (notice,) = commitment.notices
    assert (notice.type, notice.source) == ("inventory.replenishment_needed", "dutylink")
    needed = notice.inventory.replenishment_needed
    assert (needed.agency, needed.item_id, needed.on_hand, needed.threshold) == ("health", "AMB",
                                                                                 1, 2)  # fmt: skip
    assert notice.jurisdiction == booking.jurisdiction and notice.time == booking.time
    # A retry of the booking moves nothing and raises nothing again.
    retry = await replica.commit(Principal("health"), admitted("health", [booking]))
    assert not retry.notices


class _Unreachable(MemoryKeyValue):
    async def get(self, key: str) -> Versioned | None:
        raise StoreUnavailableError("JetStream KV unreachable")

    async def get_many(self, keys: Sequence[str]) -> Snapshot:
        raise StoreUnavailableError("JetStream KV unreachable")


async def test_a_store_that_cannot_be_read_refuses_as_unavailable() -> None:
    (outcome,) = await publish(
        guard(_Unreachable(BucketSpec(AGGREGATES_BUCKET))), "police", incident("incident.reported")
    )
    assert refusal(outcome).kind is RefusalKind.UNAVAILABLE


async def test_informational_events_pass_without_touching_the_store() -> None:
    (outcome,) = await publish(
        guard(_Unreachable(BucketSpec(AGGREGATES_BUCKET))), "police", _event("resource.message")
    )
    assert isinstance(outcome, Admitted)


RACING_TYPES = ("incident.verified", "incident.rejected", "incident.merged", "incident.closed",
                "incident.reopened", "incident.updated")  # fmt: skip


RACING_TYPES = ("incident.verified", "incident.rejected", "incident.merged", "incident.closed",
                "incident.reopened", "incident.updated")  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(RACING_TYPES),
        min_size=2,
        max_size=6,
    )
)
def test_replicas_racing_keep_one_chain_of_versions(types: list[str]) -> None:
    """Whatever several replicas publish at once, every accepted event is one version of the
    aggregate: the version equals the accepted count and the last accepted event is the last."""

    async def scenario() -> None:
        store = memory_store()
        await publish(guard(store), "police", incident("incident.reported"))
        results = await asyncio.gather(
            *(publish(guard(store), "police", incident(t)) for t in types)
        )
        accepted = [o for (o,) in results if isinstance(o, Admitted)]
        state = await incident_state(store)
        assert state.version == 1 + len(accepted)
        if accepted:
            assert state.last_event_id in {a.event.id for a in accepted}

    asyncio.run(scenario())


@pytest.mark.usefixtures("nats_url")
async def test_two_replicas_on_a_real_bucket_never_double_book(nats_url: str) -> None:
    import nats

    client = await nats.connect(nats_url)
    try:
        bucket = await JetStreamKeyValue.open(client.jetstream(), BucketSpec("TEST_AGGREGATES"))
        setup = guard(bucket)
        await publish(setup, "health", declare("AMB", 3))
        threads = [f"RM-{n}" for n in range(4)]
        for thread in threads:
            await publish(setup, "fire", request(thread))
        outcomes = await asyncio.gather(
            *(publish(guard(bucket), "health", commit(t, "AMB", 2)) for t in threads)
        )
        assert sum(isinstance(o, Admitted) for (o,) in outcomes) == 1
        assert await available(bucket, "AMB") == "1"
    finally:
        await client.close()
