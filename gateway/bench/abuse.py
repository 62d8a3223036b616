"""The `abuse` section: another agency's Publish latency while one agency loops maximum-size
PublishBatch calls, vs the same agency's latency alone, in the same run on the same gateway."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient
from dutylink.v1 import event_pb2
from gateway.bench.figures import Figure, Settings, make_figure
from gateway.bench.harness import (
    OPEN_LOOP_IN_FLIGHT,
    RETRYABLE_CODES,
    Latency,
    Series,
    cancel_all,
    gateway_at,
    gateway_config,
    interleave,
    make_events,
    nats_at,
    open_loop,
    refusals,
    renew,
)
from gateway.config import sample_tokens
from gateway.core.settings import GatewaySettings
from gateway.testkit.inprocess import OPEN_POLICY

MODEST = "fire"  # publishes one event at a time at a modest rate ...
ABUSER = "police"  # ... while this one loops the largest batches the gateway takes
ABUSER_LOOPS = 4  # batches the abuser keeps in flight
# Events of a maximum-size batch: the most per batch (max_batch_events), each padded so that
# the request comes close to the largest the gateway receives (4 MiB for 1 MiB events).
DESCRIPTION_BYTES = 3600


def maximum_batch(count: int) -> list[event_pb2.Event]:
    events = make_events(count)
    for event in events:
        event.incident.description = "x" * DESCRIPTION_BYTES
    return events


@dataclass(frozen=True)
class Answers:
    latency: Latency
    failed: int  # calls answered with an error (their time to the answer counts as latency)


@dataclass(frozen=True)
class AbuseLatency:
    alone: Answers
    abused: Answers
    abuser_events: int  # the abuser's events stored during the abused phase


async def _modest_latency(client: DutyLinkClient, *, rate: float, seconds: float) -> Answers:
    """ms from each publish's scheduled time (open loop) to its answer: a receipt, or an error
    (UNAVAILABLE when JetStream did not acknowledge within publish_timeout_seconds)."""
    events = make_events(max(2, round(rate * seconds)))
    done: list[float] = [0.0] * len(events)
    failed = 0

    async def send(index: int) -> None:
        nonlocal failed
        try:
            await client.publish(events[index])
        except grpc.aio.AioRpcError as error:
            if error.code().value[0] not in RETRYABLE_CODES:
                raise RuntimeError(
                    f"bench: a modest Publish was refused: {error.details()}"
                ) from error
            failed += 1
        done[index] = time.perf_counter()

    start = await open_loop(rate, len(events), send, in_flight=OPEN_LOOP_IN_FLIGHT)
    latencies = [(done[i] - (start + i / rate)) * 1000 for i in range(len(events))]
    return Answers(Latency.of(latencies), failed)


async def _abuse(client: DutyLinkClient, batch: int, stored: list[int]) -> None:
    """Maximum-size batches back to back, until cancelled; "not now" refusals only slow it
    down, any other ends the run. The same events each time under fresh ids and incidents
    (building them anew would load the bench's loop, which also times the modest agency's
    calls)."""
    events = maximum_batch(batch)
    for round_ in itertools.count():
        for index, event in enumerate(events):
            renew(event, f"abuse-{id(events)}-{round_}-{index}")
        try:
            results = await client.publish_batch(events, timeout=60)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.01)
            continue
        if refused := refusals(results, but_retryable=True):
            raise RuntimeError(f"bench: the abuser was refused: {refused}")
        stored[0] += sum(1 for r in results if r.HasField("receipt"))


async def _abuse_latency(
    directory: Path, *, rate: float, seconds: float, nats_url: str, in_process: bool
) -> AbuseLatency:
    config = gateway_config(directory, policy_dir=OPEN_POLICY)
    tokens = sample_tokens()
    batch = GatewaySettings().max_batch_events
    async with (
        nats_at(directory, nats_url) as url,
        gateway_at(config, url, in_process=in_process) as address,
        DutyLinkClient(address, token=tokens[MODEST], retry=NO_RETRY) as modest,
        DutyLinkClient(address, token=tokens[ABUSER], retry=NO_RETRY) as abuser,
    ):
        for event in make_events(10):  # warm up: connections, streams
            await modest.publish(event)
        alone = await _modest_latency(modest, rate=rate, seconds=seconds)
        stored = [0]
        loops = [asyncio.create_task(_abuse(abuser, batch, stored)) for _ in range(ABUSER_LOOPS)]
        try:
            with contextlib.suppress(TimeoutError):  # the abuse must be under way first
                async with asyncio.timeout(30):
                    while not stored[0]:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            before = stored[0]
            abused = await _modest_latency(modest, rate=rate, seconds=seconds)
            during = stored[0] - before
            for loop in loops:  # an abuser refused for good ended early: say so
                if loop.done() and (failure := loop.exception()) is not None:
                    raise failure
        finally:
            await cancel_all(*loops)
    return AbuseLatency(alone, abused, during)


async def abuse_figures(settings: Settings) -> list[Figure]:
    rate, seconds = settings.abuse_rate, settings.seconds
    series = Series(
        lambda d: _abuse_latency(
            d,
            rate=rate,
            seconds=seconds,
            nats_url=settings.nats_url,
            in_process=settings.in_process,
        )
    )
    await interleave(settings.runs, [series])
    runs = series.samples
    alone = "alone"
    return [
        make_figure(
            "abuse",
            f"other agency's Publish p50 under one abusive agency ({rate:g}/s; "
            f"abuser: {ABUSER_LOOPS} maximum-size batches in flight)",
            "ms",
            [r.abused.latency.p50 for r in runs],
            (alone, [r.alone.latency.p50 for r in runs]),
        ),
        make_figure(
            "abuse",
            "other agency's Publish p99 under one abusive agency",
            "ms",
            [r.abused.latency.p99 for r in runs],
            (alone, [r.alone.latency.p99 for r in runs]),
        ),
        make_figure(
            "abuse",
            "other agency's Publish calls failed under abuse",
            "calls",
            [r.abused.failed for r in runs],
        ),
        make_figure(
            "abuse",
            "abusive agency's events stored meanwhile",
            "events/s",
            [r.abuser_events / seconds for r in runs],
        ),
    ]
