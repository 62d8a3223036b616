"""The internal-consumer runner on a real nats-server: order, restarts, retries, and the
one-replica and every-replica modes."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.js import JetStreamContext, api

from gateway.core.streams import ConsumerSpec, Mode
from gateway.store.consumers import ConsumerRunner, Delivery
from tests.drill_support import until

# Generous: how long a test waits for what it expects before it fails (not a speed claim).
WAIT_SECONDS = 20.0


@dataclass
class Stream:
    js: JetStreamContext
    name: str
    prefix: str

    async def publish(self, *payloads: str, subject: str = "work") -> None:
        for payload in payloads:
            await self.js.publish(f"{self.prefix}.{subject}", payload.encode(), stream=self.name)

    def spec(
        self,
        mode: Mode = Mode.EVERY_REPLICA,
        *,
        max_deliveries: int = 5,
        replay: bool = False,
        ack_wait: float = 30.0,
    ) -> ConsumerSpec:
        return ConsumerSpec(
            stream=self.name,
            filter_subject=f"{self.prefix}.work",
            durable="projection",
            mode=mode,
            max_deliveries=max_deliveries,
            backoff=(0.05,),
            poll_seconds=0.2,
            replay_on_start=replay,
            ack_wait=ack_wait,
        )


@pytest.fixture
async def stream(nats_url: str) -> AsyncIterator[Stream]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    token = uuid.uuid4().hex[:12]  # a shared NATS_URL server keeps streams between tests
    name, prefix = f"TEST_{token}", f"test.{token}"
    await js.add_stream(
        api.StreamConfig(name=name, subjects=[f"{prefix}.>"], storage=api.StorageType.FILE)
    )
    try:
        yield Stream(js, name, prefix)
    finally:
        await client.close()


class Recorder:
    """A handler that keeps what it was given."""

    def __init__(self) -> None:
        self.handled: list[str] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.handled.append(delivery.data.decode())


async def test_messages_are_handled_in_stream_order_and_only_on_the_filter_subject(
    stream: Stream,
) -> None:
    payloads = [f"m{n}" for n in range(10)]
    await stream.publish(*payloads[:5])
    await stream.publish("elsewhere", subject="other")
    await stream.publish(*payloads[5:])
    recorder = Recorder()
    async with ConsumerRunner(stream.js, stream.spec(), recorder, replica="a"):
        await until(lambda: len(recorder.handled) == 10, WAIT_SECONDS)
    assert recorder.handled == payloads


async def test_a_restarted_runner_resumes_after_the_last_acked_message(stream: Stream) -> None:
    await stream.publish("m0", "m1", "m2")
    first = Recorder()
    async with ConsumerRunner(stream.js, stream.spec(), first, replica="a"):
        await until(lambda: len(first.handled) == 3, WAIT_SECONDS)
    await stream.publish("m3", "m4")
    second = Recorder()
    async with ConsumerRunner(stream.js, stream.spec(), second, replica="a"):
        await until(lambda: len(second.handled) == 2, WAIT_SECONDS)
        await stream.publish("m5")
        await until(lambda: len(second.handled) == 3, WAIT_SECONDS)
    assert first.handled == ["m0", "m1", "m2"]
    assert second.handled == ["m3", "m4", "m5"]


async def test_a_replaying_runner_reads_the_stream_again_from_its_beginning(
    stream: Stream,
) -> None:
    await stream.publish("m0", "m1")
    first, second = Recorder(), Recorder()
    async with ConsumerRunner(stream.js, stream.spec(replay=True), first, replica="a"):
        await until(lambda: len(first.handled) == 2, WAIT_SECONDS)
    await stream.publish("m2")
    async with ConsumerRunner(stream.js, stream.spec(replay=True), second, replica="a"):
        await until(lambda: len(second.handled) == 3, WAIT_SECONDS)
    assert second.handled == ["m0", "m1", "m2"]


async def test_a_failing_handlers_message_is_retried_before_the_next(stream: Stream) -> None:
    await stream.publish("m0", "m1")
    attempts: list[tuple[str, int]] = []

    async def flaky(delivery: Delivery) -> None:
        attempts.append((delivery.data.decode(), delivery.attempt))
        if delivery.data == b"m0" and delivery.attempt < 3:
            raise RuntimeError("projection not ready")

    async with ConsumerRunner(stream.js, stream.spec(), flaky, replica="a"):
        await until(lambda: ("m1", 1) in attempts, WAIT_SECONDS)
    assert attempts == [("m0", 1), ("m0", 2), ("m0", 3), ("m1", 1)]


async def test_a_message_that_keeps_failing_is_reported_and_the_rest_go_on(
    stream: Stream,
) -> None:
    await stream.publish("poison", "m1")
    handled: list[str] = []
    reported: list[tuple[str, int, str]] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.data == b"poison":
            raise ValueError("cannot fold this")
        handled.append(delivery.data.decode())

    async def gave_up(delivery: Delivery, error: BaseException) -> None:
        reported.append((delivery.data.decode(), delivery.attempt, str(error)))

    spec = stream.spec(max_deliveries=3)
    async with ConsumerRunner(stream.js, spec, handler, replica="a", on_gave_up=gave_up):
        await until(lambda: handled == ["m1"], WAIT_SECONDS)
    assert reported == [("poison", 3, "cannot fold this")]


async def test_one_replica_mode_handles_each_message_once_across_two_runners(
    stream: Stream,
) -> None:
    payloads = [f"m{n}" for n in range(30)]
    first, second = Recorder(), Recorder()
    spec = stream.spec(Mode.ONE_REPLICA)
    async with (
        ConsumerRunner(stream.js, spec, first, replica="a"),
        ConsumerRunner(stream.js, spec, second, replica="b"),
    ):
        await stream.publish(*payloads)
        await until(lambda: len(first.handled) + len(second.handled) >= 30, WAIT_SECONDS)
        await stream.publish("last")  # anything handled twice would have come before it
        await until(lambda: "last" in first.handled + second.handled, WAIT_SECONDS)
    both = Counter(first.handled + second.handled)
    assert both == Counter([*payloads, "last"])
    # Each runner's share is in stream order.
    for recorder in (first, second):
        assert recorder.handled == sorted(recorder.handled, key=[*payloads, "last"].index)


async def test_every_replica_mode_handles_each_message_in_each_runner(stream: Stream) -> None:
    payloads = [f"m{n}" for n in range(10)]
    first, second = Recorder(), Recorder()
    spec = stream.spec(Mode.EVERY_REPLICA)
    async with (
        ConsumerRunner(stream.js, spec, first, replica="a"),
        ConsumerRunner(stream.js, spec, second, replica="b"),
    ):
        await stream.publish(*payloads)
        await until(lambda: len(first.handled) == 10 and len(second.handled) == 10, WAIT_SECONDS)
    assert first.handled == payloads
    assert second.handled == payloads


async def test_a_handler_slower_than_ack_wait_keeps_its_message_from_other_replicas(
    stream: Stream,
) -> None:
    await stream.publish("slow", "m1")
    attempts: list[tuple[str, int]] = []

    async def slow(delivery: Delivery) -> None:
        attempts.append((delivery.data.decode(), delivery.attempt))
        if delivery.data == b"slow":
            await asyncio.sleep(2.5)

    spec = stream.spec(Mode.ONE_REPLICA, ack_wait=1.0)
    async with (
        ConsumerRunner(stream.js, spec, slow, replica="a"),
        ConsumerRunner(stream.js, spec, slow, replica="b"),
    ):
        await until(lambda: ("m1", 1) in attempts, WAIT_SECONDS)
    assert attempts == [("slow", 1), ("m1", 1)]


async def test_stopping_waits_for_the_handler_at_work(stream: Stream) -> None:
    await stream.publish("m0")
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    runner = ConsumerRunner(stream.js, stream.spec(), slow, replica="a")
    async with runner:
        await started.wait()
    assert finished.is_set()
    again = Recorder()  # and what it handled was acked before the stop returned
    await stream.publish("m1")
    async with ConsumerRunner(stream.js, stream.spec(), again, replica="a"):
        await until(lambda: again.handled == ["m1"], WAIT_SECONDS)


def test_every_replica_durables_are_per_replica_and_one_replica_durables_shared() -> None:
    every = ConsumerSpec("S", "s.>", "board", Mode.EVERY_REPLICA)
    one = ConsumerSpec("S", "s.>", "timers", Mode.ONE_REPLICA)
    assert every.durable_for("gw-1") != every.durable_for("gw-2")
    assert one.durable_for("gw-1") == one.durable_for("gw-2") == "timers"
    with pytest.raises(ValueError, match="consumer name"):
        every.durable_for("gw.1")
    with pytest.raises(ValueError, match="replay"):
        ConsumerSpec("S", "s.>", "timers", Mode.ONE_REPLICA, replay_on_start=True)
