"""The `latency` section: end to end, publish -> subscriber delivery, open loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.msg import Msg

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import (
    OPEN_LOOP_IN_FLIGHT,
    PUBLISHER,
    RECEIVER,
    Latency,
    Series,
    acking,
    cancel_all,
    gateway_at,
    gateway_config,
    interleave,
    make_events,
    nats_at,
    open_loop,
    unique,
    until,
)
from gateway.bench.raw import raw_stream
from gateway.config import sample_tokens


async def _latencies(
    publish: Callable[[event_pb2.Event], Awaitable[object]],
    arrivals: dict[str, float],
    *,
    rate: float,
    seconds: float,
) -> Latency:
    """Warm up (connections, consumers), then publish on the open-loop schedule; ms from each
    event's scheduled send time to its first arrival, which the subscriber notes in
    `arrivals` (event id -> perf_counter)."""
    warm = make_events(10)
    for event in warm:
        await publish(event)
    await until(lambda: len(arrivals) >= len(warm), 30, "delivery of the warm-up events")
    events = make_events(max(2, round(rate * seconds)))
    start = await open_loop(
        rate, len(events), lambda i: publish(events[i]), in_flight=OPEN_LOOP_IN_FLIGHT
    )
    await until(
        lambda: len(arrivals) >= len(warm) + len(events), 30 + seconds, "delivery of every event"
    )
    return Latency.of([(arrivals[e.id] - (start + i / rate)) * 1000 for i, e in enumerate(events)])


async def _gateway_latency(
    directory: Path, *, rate: float, seconds: float, nats_url: str, in_process: bool
) -> Latency:
    """Fire publishes (unary), transport receives and acks each delivery."""
    config = gateway_config(directory, policy_dir=SAMPLE_DIR)
    tokens = sample_tokens()
    async with (
        nats_at(directory, nats_url) as url,
        gateway_at(config, url, in_process=in_process) as address,
        DutyLinkClient(address, token=tokens[PUBLISHER]) as sender,
        DutyLinkClient(address, token=tokens[RECEIVER]) as receiver,
    ):
        subscription = receiver.subscribe(
            unique("bench"), families=["incident"], planes=[event_pb2.PLANE_EXERCISE]
        )
        arrivals: dict[str, float] = {}

        def note(delivery: gateway_pb2.Delivery) -> None:
            arrivals.setdefault(delivery.event.id, time.perf_counter())

        async with subscription:
            reader = asyncio.create_task(acking(subscription, note))
            try:
                return await _latencies(sender.publish, arrivals, rate=rate, seconds=seconds)
            finally:
                await cancel_all(reader)


async def _raw_latency(directory: Path, *, rate: float, seconds: float, nats_url: str) -> Latency:
    """The same schedule of acked nats-py `js.publish` calls, the same bytes and headers, into a
    JetStream push consumer that acks each message."""
    async with nats_at(directory, nats_url) as url, raw_stream(url) as raw:
        arrivals: dict[str, float] = {}

        async def on_message(message: Msg) -> None:
            arrivals.setdefault((message.headers or {}).get("ce-id", ""), time.perf_counter())
            await message.ack()

        subscription = await raw.js.subscribe(
            f"{raw.prefix}.>", stream=raw.name, cb=on_message, manual_ack=True
        )

        async def publish(event: event_pb2.Event) -> None:
            ((subject, data, headers),) = raw.messages([event])
            await raw.js.publish(subject, data, headers=headers)

        try:
            return await _latencies(publish, arrivals, rate=rate, seconds=seconds)
        finally:
            await subscription.unsubscribe()


async def latency_figures(settings: Settings) -> list[Figure]:
    rate, seconds, url = settings.latency_rate, settings.seconds, settings.nats_url
    gateway = Series(
        lambda d: _gateway_latency(
            d, rate=rate, seconds=seconds, nats_url=url, in_process=settings.in_process
        )
    )
    raw = Series(lambda d: _raw_latency(d, rate=rate, seconds=seconds, nats_url=url))
    # The same path below saturation: how much of the figure at `rate` is queueing.
    light_rate = rate / 4
    light = Series(
        lambda d: _gateway_latency(
            d, rate=light_rate, seconds=seconds, nats_url=url, in_process=settings.in_process
        )
    )
    await interleave(settings.runs, [gateway, raw, light])
    where = f"publish → delivery at {rate:,.0f} events/s"
    baseline = "raw nats-py"
    return [
        make_figure(
            "latency",
            f"end-to-end latency p50, {where}",
            "ms",
            [r.p50 for r in gateway.samples],
            (baseline, [r.p50 for r in raw.samples]),
        ),
        make_figure(
            "latency",
            "end-to-end latency p99",
            "ms",
            [r.p99 for r in gateway.samples],
            (baseline, [r.p99 for r in raw.samples]),
            Target(10, at_most=True),
        ),
        make_figure(
            "latency",
            "end-to-end latency max",
            "ms",
            [r.max for r in gateway.samples],
            (baseline, [r.max for r in raw.samples]),
        ),
        make_figure(
            "latency",
            f"end-to-end latency p50, at {light_rate:,.0f} events/s",
            "ms",
            [r.p50 for r in light.samples],
        ),
        make_figure("latency", "end-to-end latency p99", "ms", [r.p99 for r in light.samples]),
    ]
