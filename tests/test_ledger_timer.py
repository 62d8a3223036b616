"""The reservation-expiry timer over a key-value store: a reservation written to the store
returns to available once the clock passes its expiry, its event stored once whatever the
number of timers, restarts and failed publishes; unreadable entries are skipped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from structlog.testing import capture_logs

from dutylink.catalogue import load_catalogue
from dutylink.v1 import common_pb2, event_pb2
from gateway.core.kv import ConflictError, KeyValueStore, Versioned
from gateway.core.settings import LedgerSettings
from gateway.core.streams import AGGREGATES_BUCKET, BucketSpec
from gateway.core.validation import Validator
from gateway.core.workflows import ledger_codec
from gateway.core.workflows.ledger import apply
from gateway.core.workflows.ledger_state import (
    Holding,
    ItemKey,
    ItemLine,
    Ledger,
    LineKey,
    Stage,
)
from gateway.store.kv import JetStreamKeyValue
from gateway.store.ledger_timer import ReservationExpiryTimer, reservation_expiry_timer
from gateway.testkit.inprocess import nats_for_tests
from gateway.testkit.memory_kv import MemoryKeyValue

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(minutes=30)
ACTUAL, EXERCISE = event_pb2.PLANE_ACTUAL, event_pb2.PLANE_EXERCISE
TENTS = ItemKey(ACTUAL, "emergency", "tents")
SETTINGS = LedgerSettings(expiry_check_seconds=0.01, max_items=100, division_code="310000")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class GatewayDied(Exception):
    pass


class FakeGateway:
    """Stands in for the gateway's publish pipeline: refuses an invalid event, stores an event
    once per (source, id) as JetStream's de-duplication does, and folds it into the ledger
    entry it names with compare-and-set, as the admission guard does."""

    def __init__(self, store: KeyValueStore, *, publishers: int = 1) -> None:
        self.store = store
        self.stored: list[event_pb2.Event] = []
        self.calls = 0
        self.fail_next = 0  # publishes that fail before anything is done
        self.die_after_store = 0  # publishes that store, then die before the fold
        self.stored_any = asyncio.Event()
        # Every publisher reaches the gateway before any is served: they all read one state.
        self._together = asyncio.Barrier(publishers) if publishers > 1 else None
        self._validator = Validator()
        self._catalogue = load_catalogue()

    async def publish(self, events: Sequence[event_pb2.Event]) -> None:
        self.calls += 1
        if self._together is not None:
            await self._together.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("NATS away")
        for event in events:
            assert self._validator.problems(event) == []
            declared = self._catalogue.get(event.type)
            assert declared is not None and declared.missing_fields(event) == []
            if all((e.source, e.id) != (event.source, event.id) for e in self.stored):
                self.stored.append(event)
                self.stored_any.set()
            if self.die_after_store:
                self.die_after_store -= 1
                raise GatewayDied("killed after the store, before the fold")
            await self._fold(event)

    async def _fold(self, event: event_pb2.Event) -> None:
        notice = event.inventory.reservation_expired
        key = ledger_codec.kv_key(ItemKey(event.plane, notice.agency, notice.item_id))
        while True:
            current = await self.store.get(key)
            assert current is not None
            line = ledger_codec.decode(current.value)
            applied = apply(Ledger({line.key: line}), event)
            assert applied.accepted
            if not applied.changed:
                return
            try:
                new = applied.ledger.items[line.key]
                await self.store.update(key, ledger_codec.encode(new), current.revision)
                return
            except ConflictError:
                continue


def reservation(thread: str = "flood-req-3", amount: int = 4, expires: datetime = EXPIRES,
                key: ItemKey = TENTS) -> ItemLine:  # fmt: skip
    holding = Holding(LineKey(thread, "1"), Stage.RESERVED, Decimal(amount), expires,
                      f"health/{thread}-m1")  # fmt: skip
    return ItemLine(key, total=Decimal(10), unit="pcs", holdings=(holding,), version=2)


async def put(store: KeyValueStore, item: ItemLine) -> None:
    await store.create(ledger_codec.kv_key(item.key), ledger_codec.encode(item))


async def line(store: KeyValueStore, key: ItemKey = TENTS) -> ItemLine:
    entry = await store.get(ledger_codec.kv_key(key))
    assert entry is not None
    return ledger_codec.decode(entry.value)


def timer(store: KeyValueStore, gateway: FakeGateway, clock: Clock) -> ReservationExpiryTimer:
    return reservation_expiry_timer(store, gateway.publish, SETTINGS, clock=clock)


@pytest.fixture
def store() -> MemoryKeyValue:
    return MemoryKeyValue(BucketSpec(AGGREGATES_BUCKET))


class TestExpiry:
    async def test_a_reservation_returns_to_available_once_the_clock_passes_its_expiry(
        self, store: MemoryKeyValue
    ) -> None:
        await put(store, reservation())
        gateway, clock = FakeGateway(store), Clock()
        expiry = timer(store, gateway, clock)
        assert await expiry.check() == 0
        assert gateway.calls == 0 and (await line(store)).available == 6
        clock.now = EXPIRES
        assert await expiry.check() == 1
        (event,) = gateway.stored
        assert event.type == "inventory.reservation_expired" and event.source == "dutylink"
        assert event.jurisdiction == common_pb2.Jurisdiction(division_code="310000")
        assert (await line(store)).available == 10
        clock.now += timedelta(hours=1)
        assert await expiry.check() == 0
        assert len(gateway.stored) == 1

    async def test_two_timers_over_one_store_get_the_expiry_stored_once(
        self, store: MemoryKeyValue
    ) -> None:
        await put(store, reservation("a"))
        await put(store, reservation("b", key=ItemKey(ACTUAL, "fire", "pumps")))
        gateway, clock = FakeGateway(store, publishers=2), Clock()
        clock.now = EXPIRES
        first, second = timer(store, gateway, clock), timer(store, gateway, clock)
        published = await asyncio.gather(first.check(), second.check())
        assert published == [2, 2]  # both published both, the same events
        assert sorted(e.inventory.reservation_expired.item_id for e in gateway.stored) == [
            "pumps",
            "tents",
        ]
        assert (await line(store)).available == 10

    async def test_a_timer_restarted_after_the_gateway_died_mid_publish_fires_once(
        self, store: MemoryKeyValue
    ) -> None:
        await put(store, reservation())
        gateway, clock = FakeGateway(store), Clock()
        clock.now = EXPIRES
        gateway.die_after_store = 1
        assert await timer(store, gateway, clock).check() == 0
        assert len(gateway.stored) == 1 and (await line(store)).available == 6
        # A new replica (or the same one restarted) finds the reservation still due.
        assert await timer(store, gateway, clock).check() == 1
        assert len(gateway.stored) == 1
        assert (await line(store)).available == 10

    async def test_a_failed_publish_is_tried_again_at_the_next_check(
        self, store: MemoryKeyValue
    ) -> None:
        await put(store, reservation())
        gateway, clock = FakeGateway(store), Clock()
        clock.now = EXPIRES
        gateway.fail_next = 1
        expiry = timer(store, gateway, clock)
        with capture_logs() as logs:
            assert await expiry.check() == 0
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "ledger_timer.publish_failed"
        ]
        assert gateway.stored == [] and (await line(store)).available == 6
        assert await expiry.check() == 1
        assert len(gateway.stored) == 1 and (await line(store)).available == 10

    async def test_an_expiry_published_but_still_due_is_published_again_and_said(
        self, store: MemoryKeyValue
    ) -> None:
        await put(store, reservation())
        stored: list[event_pb2.Event] = []

        async def forgetful(events: Sequence[event_pb2.Event]) -> None:
            stored.extend(events)  # accepted, but the ledger entry never changes

        clock = Clock()
        clock.now = EXPIRES
        expiry = reservation_expiry_timer(store, forgetful, SETTINGS, clock=clock)
        await expiry.check()
        with capture_logs() as logs:
            await expiry.check()
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "ledger_timer.still_due"
        ]
        assert [e.id for e in stored] == [stored[0].id] * 2

    async def test_many_expiries_are_published_in_batches(self, store: MemoryKeyValue) -> None:
        for n in range(5):
            await put(store, reservation(key=ItemKey(ACTUAL, "fire", f"pumps-{n}")))
        gateway, clock = FakeGateway(store), Clock()
        clock.now = EXPIRES
        batched = reservation_expiry_timer(
            store, gateway.publish, SETTINGS, clock=clock, batch_size=2
        )
        assert await batched.check() == 5
        assert gateway.calls == 3 and len(gateway.stored) == 5


class TestWhatItReads:
    async def test_an_unreadable_entry_is_logged_and_skipped(self, store: MemoryKeyValue) -> None:
        await store.create("ledger.actual.fire.pumps", b"{not json")
        misplaced = reservation(key=ItemKey(ACTUAL, "fire", "hoses"))
        await store.create("ledger.actual.fire.ladders", ledger_codec.encode(misplaced))
        await put(store, reservation())
        gateway, clock = FakeGateway(store), Clock()
        clock.now = EXPIRES
        with capture_logs() as logs:
            assert await timer(store, gateway, clock).check() == 1
        unreadable = [e["key"] for e in logs if e["event"] == "ledger_timer.unreadable_entry"]
        assert sorted(unreadable) == ["ledger.actual.fire.ladders", "ledger.actual.fire.pumps"]
        assert [e.inventory.reservation_expired.item_id for e in gateway.stored] == ["tents"]

    async def test_other_keys_under_the_prefix_are_left_alone(self, store: MemoryKeyValue) -> None:
        await store.create("ledger.actual.index.flood-req-3.items", b"not an item line")
        await put(store, reservation())
        gateway, clock = FakeGateway(store), Clock()
        clock.now = EXPIRES
        with capture_logs() as logs:
            assert await timer(store, gateway, clock).check() == 1
        assert not [e for e in logs if e["log_level"] in ("warning", "error")]

    async def test_a_plane_past_the_item_limit_waits_and_the_others_go_on(
        self, store: MemoryKeyValue
    ) -> None:
        for n in range(3):
            await put(store, reservation(key=ItemKey(EXERCISE, "fire", f"drill-{n}")))
        await put(store, reservation())
        gateway, clock = FakeGateway(store), Clock()
        clock.now = EXPIRES
        bounded = ReservationExpiryTimer(
            store,
            gateway.publish,
            interval=1,
            max_items=2,
            jurisdiction=common_pb2.Jurisdiction(division_code="310000"),
            clock=clock,
        )
        with capture_logs() as logs:
            assert await bounded.check() == 1
        (too_many,) = [e for e in logs if e["event"] == "ledger_timer.too_many_items"]
        assert (too_many["log_level"], too_many["plane"]) == ("error", "exercise")
        assert [e.plane for e in gateway.stored] == [ACTUAL]


class TestRunning:
    async def test_started_it_checks_until_stopped(self, store: MemoryKeyValue) -> None:
        await put(store, reservation())
        gateway, clock = FakeGateway(store), Clock()
        async with timer(store, gateway, clock):
            clock.now = EXPIRES
            await asyncio.wait_for(gateway.stored_any.wait(), timeout=10)
        calls = gateway.calls
        await asyncio.sleep(SETTINGS.expiry_check_seconds * 3)
        assert gateway.calls == calls  # stopped: no more checks
        assert len(gateway.stored) == 1

    async def test_run_returns_when_stopping_is_set_and_ends_on_cancel(
        self, store: MemoryKeyValue
    ) -> None:
        expiry = timer(store, FakeGateway(store), Clock())
        stopping = asyncio.Event()
        running = asyncio.create_task(expiry.run(stopping))
        stopping.set()
        await asyncio.wait_for(running, timeout=10)
        cancelled = asyncio.create_task(expiry.run())
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    async def test_a_failing_store_does_not_stop_the_loop(self, store: MemoryKeyValue) -> None:
        broken = BrokenOnce(store.spec)
        await put(broken, reservation())
        gateway, clock = FakeGateway(broken), Clock()
        clock.now = EXPIRES
        async with reservation_expiry_timer(broken, gateway.publish, SETTINGS, clock=clock):
            await asyncio.wait_for(gateway.stored_any.wait(), timeout=10)
        assert broken.failed and len(gateway.stored) == 1


class BrokenOnce(MemoryKeyValue):
    """A store whose first listing raises something unexpected."""

    failed = False

    async def entries(self, prefix: str, *, limit: int) -> dict[str, Versioned]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug below")
        return await super().entries(prefix, limit=limit)


@pytest.fixture
async def jetstream_kv(tmp_path: Path) -> AsyncIterator[JetStreamKeyValue]:
    async with nats_for_tests(tmp_path / "nats") as url:
        client = await nats.connect(url)
        try:
            # A fresh bucket: a shared NATS_URL server keeps buckets between tests.
            spec = BucketSpec(f"TEST_{uuid.uuid4().hex[:12]}")
            yield await JetStreamKeyValue.open(client.jetstream(), spec)
        finally:
            await client.close()


async def test_on_jetstream_kv_two_timers_store_each_expiry_once_and_skip_what_is_unreadable(
    jetstream_kv: JetStreamKeyValue,
) -> None:
    store = jetstream_kv
    await put(store, reservation())
    await put(store, reservation("b", key=ItemKey(EXERCISE, "fire", "pumps")))
    await store.create("ledger.actual.fire.hoses", b"\xff")
    gateway, clock = FakeGateway(store, publishers=2), Clock()
    first, second = timer(store, gateway, clock), timer(store, gateway, clock)
    assert await first.check() == 0  # the barrier is not reached: nothing due yet
    clock.now = EXPIRES
    assert await asyncio.gather(first.check(), second.check()) == [2, 2]
    assert len({(e.source, e.id) for e in gateway.stored}) == len(gateway.stored) == 2
    assert (await line(store)).available == 10
    assert (await line(store, ItemKey(EXERCISE, "fire", "pumps"))).available == 10
