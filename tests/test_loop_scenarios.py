"""Whole linked-duty scenarios through the gRPC API: several agencies, two gateway replicas on one
NATS (successive steps alternate between them), the lifecycle guard and the resource ledger
seen from outside: what is accepted, what is refused with the state named, what the key-value
bucket holds and what the stream rebuilds to.

Long because it is the issue's proof read top to bottom: one scenario after another over the
same two replicas and builders (tests/loop_support.py), each short on its own.

The illegal-transition scenario also reads the refusals' details: a unary call's StateRefusal
and PreconditionFailure, a batch result's PublishError.state_refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from dutylink.adapters.sdk.client import DutyLinkClient, Retry
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.core.workflows import ledger_codec
from gateway.core.workflows.ledger import rebuild
from gateway.core.workflows.ledger_state import ItemKey, ItemLine
from gateway.server import Gateway
from gateway.testkit.inprocess import GatewayProcess, config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.loop_support import (
    ACTUAL,
    EXERCISE,
    adjust,
    aggregate,
    commit,
    declare,
    deployed,
    incident,
    item_line,
    kv_entries,
    now,
    recall,
    release,
    request,
    requisition,
    respond,
    stored_events,
    task,
    warning,
)

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
# Retryable answers (a replica that lost a race and its retries) are retried a few times only:
# a scenario step that keeps failing fails the test within seconds.
QUICK_RETRY = Retry(attempts=4, timeout=10, wait_initial=0.1, wait_max=0.5, wait_jitter=0.1)


class Parties:
    """The sample agencies as clients of two gateway replicas; `publish` alternates the replica
    from one step to the next, `on(replica, agency)` picks one."""

    def __init__(self, replicas: tuple[Gateway, Gateway], clients: dict[tuple[int, str],
                 DutyLinkClient]) -> None:  # fmt: skip
        self.replicas = replicas
        self._clients = clients
        self._turn = itertools.cycle((0, 1))

    def on(self, replica: int, agency: str) -> DutyLinkClient:
        key = (replica, agency)
        if key not in self._clients:
            self._clients[key] = DutyLinkClient(
                self.replicas[replica].address, token=TOKENS[agency], retry=QUICK_RETRY
            )
        return self._clients[key]

    async def publish(self, agency: str, event: event_pb2.Event) -> gateway_pb2.Receipt:
        return await self.on(next(self._turn), agency).publish(event)

    async def refused(self, agency: str, event: event_pb2.Event, *named: str) -> str:
        """Publish `event` as `agency`, expect FAILED_PRECONDITION naming each of `named`;
        the status message."""
        return (await self.refusal(agency, event, *named)).details() or ""

    async def refusal(
        self, agency: str, event: event_pb2.Event, *named: str
    ) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.publish(agency, event)
        error = caught.value
        assert error.code() == FAILED_PRECONDITION, (error.code(), error.details())
        message = error.details() or ""
        for name in named:
            assert name in message, message
        return error


def status_details(error: grpc.aio.AioRpcError) -> list[object]:
    """The StateRefusal and PreconditionFailure details of a refused call's status."""
    found: list[object] = []
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:  # type: ignore[arg-type]
            for kind in (gateway_pb2.StateRefusal, error_details_pb2.PreconditionFailure):
                unpacked = kind()
                if detail.Unpack(unpacked):
                    found.append(unpacked)
    return found


@pytest.fixture
async def replicas(nats_url: str) -> AsyncIterator[tuple[Gateway, Gateway]]:
    async with (
        gateway_for_tests(nats_url, config_for_tests(gateway={"gateway_id": "gw-1"})) as one,
        gateway_for_tests(nats_url, config_for_tests(gateway={"gateway_id": "gw-2"})) as two,
    ):
        yield one, two


@pytest.fixture
async def parties(replicas: tuple[Gateway, Gateway]) -> AsyncIterator[Parties]:
    clients: dict[tuple[int, str], DutyLinkClient] = {}
    try:
        yield Parties(replicas, clients)
    finally:
        for client in clients.values():
            await client.close()


async def available(nats_url: str, agency: str, item: str) -> Decimal:
    return (await item_line(nats_url, ItemKey(ACTUAL, agency, item))).available


async def state_of(nats_url: str, lifecycle: str, key: str, plane: str = "actual") -> str:
    return (await aggregate(nats_url, lifecycle, key, plane)).state


# --- 1. chemical-plant fire -----------------------------------------------------------------


async def test_chemical_plant_fire_through_incident_warning_ambulances_and_road_closure(
    parties: Parties, nats_url: str
) -> None:
    fire_id = "INC-CHEM-1"
    await parties.publish("fire", incident("reported", fire_id))
    await parties.publish("fire", incident("verified", fire_id))
    involved = ("health", "ecology", "transport")
    await parties.publish("command", incident("assigned", fire_id, lead="fire", involved=involved))
    await parties.publish("fire", incident("handling", fire_id))
    state = await aggregate(nats_url, "incident", fire_id)
    assert (state.state, state.lead) == ("handling", "fire")
    assert set(involved) <= set(state.assigned)

    # The air-quality warning: alert, an update of it, a cancel of the update.
    sender = "ecology.sh.example"
    alert = warning("alert", "AQ-1", sender)
    update = warning("update", "AQ-2", sender, references=(alert,))
    cancel = warning("cancel", "AQ-3", sender, references=(update,))
    for step in (alert, update, cancel):
        await parties.publish("ecology", step)
    assert await state_of(nats_url, "warning", f"{sender},AQ-1") == "superseded"
    assert await state_of(nats_url, "warning", f"{sender},AQ-2") == "cancelled"
    late = warning("update", "AQ-4", sender, references=(update,))
    await parties.refused("ecology", late, f"warning/actual/{sender},AQ-2 is 'cancelled'")

    # Ambulances: health's inventory, fire's request, offered, requisitioned, committed,
    # deployed and released; the ledger's available follows.
    await parties.publish("health", declare("AMB-H", 4))
    thread = "RM-CHEM-AMB"
    await parties.publish("fire", request(thread, 2))
    await parties.publish("health", respond(thread, "AMB-H", "health", 2))
    assert await available(nats_url, "health", "AMB-H") == 2
    await parties.publish("fire", requisition(thread, 2))
    await parties.publish("health", commit(thread, "AMB-H", "health", 2))
    line = await item_line(nats_url, ItemKey(ACTUAL, "health", "AMB-H"))
    assert (line.available, [h.stage.value for h in line.holdings]) == (2, ["committed"])
    await parties.publish("health", deployed(thread))
    assert await state_of(nats_url, "resource_line", f"{thread}/1") == "deployed"
    line = await item_line(nats_url, ItemKey(ACTUAL, "health", "AMB-H"))
    assert [h.stage.value for h in line.holdings] == ["deployed"]
    await parties.publish("fire", release(thread))
    assert await state_of(nats_url, "resource_line", f"{thread}/1") == "released"
    assert await available(nats_url, "health", "AMB-H") == 4

    # The road closure: a task owned by transport, supervised by police, re-checked by police.
    task_id = "TASK-ROAD-1"
    await parties.publish("command", task("opened", task_id, origin_incident=fire_id,
                                          supervisor="police"))  # fmt: skip
    await parties.publish(
        "command", task("assigned", task_id, owner="transport", supervisor="police")
    )
    await parties.publish("transport", task("progress", task_id))
    await parties.publish("police", task("supervised", task_id))
    await parties.publish("transport", task("rectified", task_id))
    await parties.refused(
        "transport", task("rechecked", task_id, recheck_by="transport"), f"task/actual/{task_id}"
    )
    await parties.publish("police", task("rechecked", task_id, recheck_by="police"))
    await parties.publish("police", task("closed", task_id))
    assert await state_of(nats_url, "task", task_id) == "closed"


# --- 2. flood: shelter from two inventories, a double booking raced on two replicas ----------


async def declare_shelter(parties: Parties) -> None:
    await parties.publish("housing", declare("TENT-H", 100, kind="tent", unit="tents"))
    await parties.publish("emergency", declare("TENT-E", 60, kind="tent", unit="tents"))


async def draw(parties: Parties, drawn: list[tuple[str, str, str, int]]) -> None:
    """Each (exchange, owner, item, quantity): the command centre requests, the owner commits."""
    for thread, owner, item, quantity in drawn:
        await parties.publish("command", request(thread, quantity, unit="tents"))
        await parties.publish(owner, commit(thread, item, owner, quantity, unit="tents"))


async def race(parties: Parties, nats_url: str, rounds: int) -> None:
    """Each round: two commitments that together exceed what emergency has of a fresh item,
    sent to the two replicas at one moment: one is accepted, the other refused."""
    for round_ in range(rounds):
        item = f"TENT-E-{round_}"
        await parties.publish("emergency", declare(item, 10, kind="tent", unit="tents"))
        threads = (f"RACE-{round_}-A", f"RACE-{round_}-B")
        for thread in threads:
            await parties.publish("command", request(thread, 6, unit="tents"))
        bookings = [commit(t, item, "emergency", 6, unit="tents") for t in threads]
        outcomes = await asyncio.gather(
            *(
                parties.on(replica, "emergency").publish(booking)
                for replica, booking in enumerate(bookings)
            ),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if isinstance(o, gateway_pb2.Receipt)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert (len(accepted), len(refused)) == (1, 1), outcomes
        assert refused[0].code() == FAILED_PRECONDITION, refused[0]
        assert f"ledger/actual/emergency/{item}" in (refused[0].details() or "")
        line = await item_line(nats_url, ItemKey(ACTUAL, "emergency", item))
        assert (line.available, line.held) == (4, 6)
        lost = threads[outcomes.index(refused[0])]
        assert await state_of(nats_url, "resource_line", f"{lost}/1") == "requested"


async def assert_no_stock_negative(nats_url: str) -> None:
    lines = await kv_entries(nats_url, "ledger.")
    assert lines
    for data in lines.values():
        line = ledger_codec.decode(data)
        assert line.available >= 0 and line.held <= line.total, line


async def test_flood_shelter_drawn_twice_from_each_of_two_inventories(
    parties: Parties, nats_url: str
) -> None:
    await declare_shelter(parties)
    await draw(parties, [("FLOOD-1", "housing", "TENT-H", 40),
                         ("FLOOD-2", "emergency", "TENT-E", 30),
                         ("FLOOD-3", "housing", "TENT-H", 20),
                         ("FLOOD-4", "emergency", "TENT-E", 20)])  # fmt: skip
    assert await available(nats_url, "housing", "TENT-H") == 40
    assert await available(nats_url, "emergency", "TENT-E") == 10
    await assert_no_stock_negative(nats_url)


async def test_stock_added_to_an_item_some_exchange_holds(parties: Parties, nats_url: str) -> None:
    await declare_shelter(parties)
    await draw(parties, [("FLOOD-1", "housing", "TENT-H", 40)])
    await parties.publish("housing", adjust("TENT-H", 25))  # the same fault: an index not read
    assert await available(nats_url, "housing", "TENT-H") == 85


async def test_flood_shelter_from_two_inventories_and_a_double_booking_refused(
    parties: Parties, nats_url: str
) -> None:
    await declare_shelter(parties)
    await draw(parties, [("FLOOD-1", "housing", "TENT-H", 40),
                         ("FLOOD-2", "emergency", "TENT-E", 30)])  # fmt: skip
    assert await available(nats_url, "housing", "TENT-H") == 60
    assert await available(nats_url, "emergency", "TENT-E") == 30
    await race(parties, nats_url, rounds=6)
    await assert_no_stock_negative(nats_url)


# --- 3. a public hazard report through all seven stages --------------------------------------


async def test_a_public_hazard_report_through_all_seven_stages_with_the_right_roles(
    parties: Parties, nats_url: str
) -> None:
    report = "INC-HAZARD-1"

    def step(name: str, **fields: str) -> event_pb2.Event:
        return incident(name, report, **fields)  # type: ignore[arg-type]

    await parties.publish("police", step("reported"))
    await parties.publish("police", step("verified"))
    await parties.refused("fire", step("assigned", lead="fire"), "command_centre")
    await parties.publish("command", step("assigned", lead="housing"))
    await parties.publish("housing", step("handling"))
    await parties.publish("housing", step("feedback"))
    await parties.refused("fire", step("published"), "command_centre")
    await parties.publish("command", step("published"))
    await parties.publish("command", step("rewarded"))
    await parties.publish("command", step("closed"))
    state = await aggregate(nats_url, "incident", report)
    assert (state.state, state.version, state.lead) == ("closed", 8, "housing")


# --- 4. merged duplicate reports -------------------------------------------------------------


async def test_duplicate_reports_merged_both_ids_resolve_and_the_merged_one_refuses_handling(
    parties: Parties, nats_url: str
) -> None:
    await parties.publish("police", incident("reported", "INC-DUP-A"))
    await parties.publish("fire", incident("reported", "INC-DUP-B"))
    await parties.publish("command", incident("merged", "INC-DUP-B", merged_into="INC-DUP-A"))
    await parties.publish("command", incident("verified", "INC-DUP-A"))
    await parties.refused(
        "command",
        incident("assigned", "INC-DUP-B", lead="fire"),
        "incident/actual/INC-DUP-B is 'merged'",
    )
    await parties.refused(
        "fire", incident("handling", "INC-DUP-B"), "incident/actual/INC-DUP-B is 'merged'"
    )
    await parties.publish("command", incident("assigned", "INC-DUP-A", lead="fire"))
    survivor = await aggregate(nats_url, "incident", "INC-DUP-A")
    merged = await aggregate(nats_url, "incident", "INC-DUP-B")
    assert (survivor.state, survivor.opened_by) == ("assigned", "police")
    assert (merged.state, merged.merged_into, merged.opened_by) == ("merged", "INC-DUP-A", "fire")


# --- 5. illegal transitions refused with the state named -------------------------------------


async def test_illegal_transitions_are_refused_with_the_state_named_by_publish_and_batch(
    parties: Parties, nats_url: str
) -> None:
    await parties.publish("police", incident("reported", "INC-ILL-1"))
    error = await parties.refusal(
        "police",
        incident("handling", "INC-ILL-1"),
        "incident/actual/INC-ILL-1 is 'reported' (version 1)",
    )
    details = status_details(error)
    (refusal,) = [d for d in details if isinstance(d, gateway_pb2.StateRefusal)]
    assert (refusal.aggregate, refusal.state, refusal.version) == ("incident/actual/INC-ILL-1",
                                                                   "reported", 1)  # fmt: skip
    assert any(a.startswith("incident.verified") for a in refusal.allowed)
    (failure,) = [d for d in details if isinstance(d, error_details_pb2.PreconditionFailure)]
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("incident", "incident/actual/INC-ILL-1")
    ]
    await parties.refused(
        "transport", task("progress", "TASK-NONE"), "task/actual/TASK-NONE is 'none' (version 0)"
    )

    batch = [
        incident("reported", "INC-ILL-2"),
        incident("verified", "INC-ILL-2"),
        incident("feedback", "INC-ILL-2"),  # illegal: the incident is verified
        incident("updated", "INC-ILL-2"),
    ]
    results = await parties.on(1, "police").publish_batch(batch)
    assert [r.WhichOneof("outcome") for r in results] == ["receipt", "receipt", "error", "receipt"]
    error = results[2].error
    assert error.code == FAILED_PRECONDITION.value[0]
    assert "incident/actual/INC-ILL-2 is 'verified' (version 2)" in error.message
    (batch_refusal,) = error.state_refusals
    assert (batch_refusal.aggregate, batch_refusal.state) == (
        "incident/actual/INC-ILL-2",
        "verified",
    )
    stored = {e.id for e in await stored_events(nats_url)}
    assert {batch[i].id for i in (0, 1, 3)} <= stored and batch[2].id not in stored
    assert await state_of(nats_url, "incident", "INC-ILL-2") == "verified"


async def test_two_replicas_racing_on_one_incident_accept_one_transition(
    parties: Parties, nats_url: str
) -> None:
    for round_ in range(5):
        incident_id = f"INC-RACE-{round_}"
        await parties.publish("police", incident("reported", incident_id))
        steps = (incident("verified", incident_id), incident("rejected", incident_id))
        outcomes = await asyncio.gather(
            *(parties.on(replica, "police").publish(step) for replica, step in enumerate(steps)),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if isinstance(o, gateway_pb2.Receipt)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert (len(accepted), len(refused)) == (1, 1), outcomes
        winner = steps[outcomes.index(accepted[0])].type.removeprefix("incident.")
        assert refused[0].code() == FAILED_PRECONDITION, refused[0]
        named = f"incident/actual/{incident_id} is '{winner}' (version 2)"
        assert named in (refused[0].details() or "")
        state = await aggregate(nats_url, "incident", incident_id)
        assert (state.state, state.version) == (winner, 2)


# --- 6. plane isolation ----------------------------------------------------------------------


async def test_an_exercise_incident_with_an_actual_ones_id_is_a_separate_aggregate(
    parties: Parties, nats_url: str
) -> None:
    same = "INC-PLANE-1"
    await parties.publish("police", incident("reported", same))
    await parties.publish("police", incident("verified", same))
    await parties.publish("command", incident("assigned", same, lead="fire"))
    # The same id on the exercise plane opens its own incident and moves from its own state.
    await parties.publish("police", incident("reported", same, plane=EXERCISE))
    await parties.refused(
        "fire",
        incident("handling", same, plane=EXERCISE),
        f"incident/exercise/{same} is 'reported'",
    )
    await parties.publish("fire", incident("handling", same))
    assert await state_of(nats_url, "incident", same) == "handling"
    assert await state_of(nats_url, "incident", same, plane="exercise") == "reported"

    # An exercise inventory with an actual one's item id is a separate ledger line: the exercise
    # draws its own stock down, never the actual one.
    await parties.publish("health", declare("AMB-P", 3))
    await parties.publish("health", declare("AMB-P", 2, plane=EXERCISE))
    await parties.publish("fire", request("RM-PLANE", 2, plane=EXERCISE))
    await parties.publish("health", commit("RM-PLANE", "AMB-P", "health", 2, plane=EXERCISE))
    await parties.publish("fire", request("RM-PLANE-2", 1, plane=EXERCISE))
    await parties.refused(
        "health",
        commit("RM-PLANE-2", "AMB-P", "health", 1, plane=EXERCISE),
        "ledger/exercise/health/AMB-P",
    )
    assert (await item_line(nats_url, ItemKey(EXERCISE, "health", "AMB-P"))).available == 0
    assert await available(nats_url, "health", "AMB-P") == 3


# --- 7. the ledger rebuilt from the stream equals the live one --------------------------------


def _comparable(line: ItemLine) -> ItemLine:
    return dataclasses.replace(line, recent=(), version=0)


async def test_the_ledger_rebuilt_from_the_stored_events_equals_the_live_key_value_lines(
    parties: Parties, nats_url: str
) -> None:
    await declare_shelter(parties)
    await draw(parties, [("FLOOD-1", "housing", "TENT-H", 40),
                         ("FLOOD-2", "emergency", "TENT-E", 30)])  # fmt: skip
    await race(parties, nats_url, rounds=3)
    # Below its threshold: the gateway's own notice is stored beside the agencies' events.
    await parties.publish("health", declare("COTS-R", 3, kind="cot", unit="tents", threshold=2))
    await draw(parties, [("FLOOD-5", "health", "COTS-R", 2)])
    await parties.publish("command", release("FLOOD-1"))
    stored = await stored_events(nats_url)
    (notice,) = [e for e in stored if e.type == "inventory.replenishment_needed"]
    assert (notice.source, notice.inventory.replenishment_needed.item_id) == ("dutylink", "COTS-R")
    rebuilt = rebuild(stored)
    live = {
        line.key: line
        for line in (
            ledger_codec.decode(v) for v in (await kv_entries(nats_url, "ledger.")).values()
        )
    }
    assert set(rebuilt.items) == set(live)
    assert len(live) == 2 + 3 + 1
    for key, line in live.items():
        assert _comparable(rebuilt.items[key]) == _comparable(line), key


# --- 8. a gateway killed -9 between a reservation and its expiry ------------------------------

# A crashed replica's writer lease lapses at once; the first run checks for expiries too seldom
# to reach this one before it is killed, the restarted ones often.
LONG_CHECKS = {"DUTYLINK_GATEWAY_WRITER_LEASE_SECONDS": "1.0",
               "DUTYLINK_LEDGER_EXPIRY_CHECK_SECONDS": "600"}  # fmt: skip
SHORT_CHECKS = {**LONG_CHECKS, "DUTYLINK_LEDGER_EXPIRY_CHECK_SECONDS": "0.2"}


async def _expiries_stored(nats_url: str, thread: str) -> list[event_pb2.Event]:
    return [
        e
        for e in await stored_events(nats_url)
        if e.type == "inventory.reservation_expired"
        and e.inventory.reservation_expired.originating_message_id == thread
    ]


@pytest.mark.slow
@pytest.mark.parametrize("replicas_after", [1, 2])
async def test_a_gateway_killed_between_a_reservation_and_its_expiry_publishes_it_once(
    nats_url: str, tmp_path: Path, replicas_after: int
) -> None:
    first = GatewayProcess(nats_url, tmp_path / "gw-1", env=LONG_CHECKS)
    second = GatewayProcess(nats_url, tmp_path / "gw-2", gateway_id="gw-2", env=SHORT_CHECKS)
    thread, item = "RM-KILL-1", ItemKey(ACTUAL, "health", "AMB-K")
    try:
        await first.start()
        async with (
            DutyLinkClient(first.address, token=TOKENS["health"]) as health,
            DutyLinkClient(first.address, token=TOKENS["fire"]) as fire,
        ):
            await health.publish(declare("AMB-K", 3))
            await fire.publish(request(thread, 2))
            until = now() + timedelta(seconds=2)
            await health.publish(respond(thread, "AMB-K", "health", 2, reserved_until=until))
        line = await item_line(nats_url, item)
        assert (line.available, [h.stage.value for h in line.holdings]) == (1, ["reserved"])

        await first.kill()
        await asyncio.sleep((until - now()).total_seconds() + 0.2)  # it expires while down
        first.env = SHORT_CHECKS
        await first.start()
        if replicas_after == 2:
            await second.start()
        for _ in range(100):  # about 20 s
            if (await item_line(nats_url, item)).available == 3:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # several more checks by every replica: none publishes again
        (expired,) = await _expiries_stored(nats_url, thread)
        notice = expired.inventory.reservation_expired
        assert (expired.source, notice.agency, notice.item_id, notice.quantity) == (
            "dutylink", "health", "AMB-K", 2,
        )  # fmt: skip
        assert (await item_line(nats_url, item)).holdings == ()
    finally:
        await first.kill()
        await second.kill()


# --- retries, recalls and expired warnings ----------------------------------------------------


async def test_a_retry_on_the_other_replica_moves_nothing_again(
    parties: Parties, nats_url: str
) -> None:
    await parties.publish("health", declare("AMB-X", 4))
    await parties.publish("fire", request("RM-X", 2))
    booking = commit("RM-X", "AMB-X", "health", 2)
    await parties.on(0, "health").publish(booking)
    await parties.on(1, "health").publish(booking)  # the answer was lost: sent again elsewhere
    assert await available(nats_url, "health", "AMB-X") == 2
    done = release("RM-X")
    await parties.on(1, "fire").publish(done)
    await parties.on(0, "fire").publish(done)
    assert await available(nats_url, "health", "AMB-X") == 4
    assert await state_of(nats_url, "resource_line", "RM-X/1") == "released"
    await parties.refused("fire", release("RM-X"), "resource_line/actual/RM-X/1 is 'released'")


async def test_a_recalled_commitment_returns_its_units_and_ends_the_line(
    parties: Parties, nats_url: str
) -> None:
    await parties.publish("health", declare("AMB-Y", 4))
    await parties.publish("fire", request("RM-Y", 3))
    booking = commit("RM-Y", "AMB-Y", "health", 3)
    await parties.publish("health", booking)
    assert await available(nats_url, "health", "AMB-Y") == 1
    await parties.publish("health", recall("RM-Y", booking))
    assert await state_of(nats_url, "resource_line", "RM-Y/1") == "recalled"
    assert await available(nats_url, "health", "AMB-Y") == 4


async def test_an_update_of_an_expired_warning_is_refused(parties: Parties, nats_url: str) -> None:
    sender = "weather.sh.example"
    alert = warning("alert", "HEAT-1", sender)
    alert.warning.infos[0].expires.FromDatetime(now() - timedelta(minutes=1))
    await parties.publish("weather", alert)
    await parties.refused(
        "weather",
        warning("update", "HEAT-2", sender, references=(alert,)),
        f"warning/actual/{sender},HEAT-1",
    )


# --- the other paths of the loops ---------------------------------------------------------------


async def test_a_failed_recheck_raises_accountability_and_the_task_goes_round_again(
    parties: Parties, nats_url: str
) -> None:
    task_id = "TASK-AGAIN-1"
    await parties.publish("police", task("opened", task_id))
    await parties.publish("command", task("assigned", task_id, owner="transport"))
    await parties.publish("transport", task("rectified", task_id))
    await parties.publish("command", task("rechecked", task_id, recheck_by="command", failed=True))
    assert await state_of(nats_url, "task", task_id) == "recheck_failed"
    await parties.refused("police", task("closed", task_id), f"task/actual/{task_id}")
    await parties.publish("command", task("accountability", task_id, owner="transport"))
    await parties.publish("command", task("assigned", task_id, owner="transport"))
    await parties.publish("transport", task("rectified", task_id))
    await parties.publish("police", task("rechecked", task_id, recheck_by="police"))
    await parties.publish("police", task("closed", task_id))
    assert await state_of(nats_url, "task", task_id) == "closed"


async def test_a_closed_incident_reopens_and_its_emergency_phase_only_moves_forward(
    parties: Parties, nats_url: str
) -> None:
    incident_id = "INC-AGAIN-1"
    await parties.publish("police", incident("reported", incident_id))
    await parties.publish("police", incident("closed", incident_id))
    await parties.publish("police", incident("reopened", incident_id))
    await parties.publish("command", incident("assigned", incident_id, lead="police"))
    assert await state_of(nats_url, "incident", incident_id) == "assigned"

    await parties.publish("command", incident("phase_response", incident_id))
    await parties.refused(
        "command",
        incident("phase_monitoring", incident_id),
        f"emergency_phase/actual/{incident_id} is 'response_rescue'",
    )
    await parties.publish("command", incident("phase_recovery", incident_id))
    assert await state_of(nats_url, "emergency_phase", incident_id) == "recovery_reconstruction"


async def test_the_requester_cannot_answer_its_own_request(parties: Parties, nats_url: str) -> None:
    await parties.publish("health", declare("AMB-W", 2))
    await parties.publish("fire", request("RM-W", 1))
    await parties.refused(
        "fire", respond("RM-W", "AMB-W", "health", 1), "resource_line/actual/RM-W/1"
    )
    await parties.publish("health", respond("RM-W", "AMB-W", "health", 1))
    assert await state_of(nats_url, "resource_line", "RM-W/1") == "offered"


async def test_a_batch_that_books_one_item_twice_stores_the_first_and_refuses_the_second(
    parties: Parties, nats_url: str
) -> None:
    await parties.publish("emergency", declare("PUMP-1", 10, kind="pump", unit="tents"))
    for thread in ("RM-B1", "RM-B2"):
        await parties.publish("command", request(thread, 6, unit="tents"))
    batch = [commit(t, "PUMP-1", "emergency", 6, unit="tents") for t in ("RM-B1", "RM-B2")]
    results = await parties.on(0, "emergency").publish_batch(batch)
    assert [r.WhichOneof("outcome") for r in results] == ["receipt", "error"]
    assert results[1].error.code == FAILED_PRECONDITION.value[0]
    assert "ledger/actual/emergency/PUMP-1" in results[1].error.message
    assert await available(nats_url, "emergency", "PUMP-1") == 4


async def test_an_update_of_another_senders_warning_is_refused(
    parties: Parties, nats_url: str
) -> None:
    alert = warning("alert", "AQ-9", "ecology.sh.example")
    await parties.publish("ecology", alert)
    hijack = warning("update", "AQ-9-W", "weather.sh.example", references=(alert,))
    await parties.refused("weather", hijack, "ecology.sh.example,AQ-9")
    assert await state_of(nats_url, "warning", "ecology.sh.example,AQ-9") == "active"
