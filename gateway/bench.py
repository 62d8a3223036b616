"""`dutylink bench`: figures for the publish path, each a median over repeated runs.

Measured on whatever machine runs it, against fresh embedded nats-servers on loopback:
- the cost of `sync_interval: always`: raw nats-py acked JetStream publishes, one at a time,
  with fsync on every write vs JetStream's default (fsync every two minutes);
- gateway unary Publish with 16 calls in flight, and PublishBatch, in events/s (validation on,
  `sync_interval: always`), against raw nats-py pipelined publishing of the same events with
  the same server settings.
- batch publish and subscribe delivery under the sample policies (20-odd rules, redaction) vs
  a permissive one-rule policy, in the same run: the cost of access control.
The cluster, fan-out, latency and memory figures come with the scale-out issue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import nats

from adapters.client import DutyLinkClient
from dutylink.v1 import event_pb2
from gateway.config import load, sample_tokens
from gateway.demo import scenario
from gateway.nats_server import NatsServer
from gateway.server import Gateway
from gateway.testing import OPEN_POLICY
from policies.loader import SAMPLE_DIR

PAYLOAD = b"x" * 512


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    median: float
    samples: tuple[float, ...]


def _events(count: int) -> list[event_pb2.Event]:
    template = scenario(datetime.now(UTC))[0].event
    events = []
    for index in range(count):
        event = event_pb2.Event()
        event.CopyFrom(template)
        event.id = f"bench-{time.time_ns()}-{index}"
        events.append(event)
    return events


async def _raw_publish_latency_ms(directory: Path, *, sync_always: bool, count: int) -> float:
    async with NatsServer(directory, sync_always=sync_always) as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.>"])
        latencies = []
        for index in range(count):
            started = time.perf_counter()
            await js.publish(f"bench.{index % 16}", PAYLOAD)
            latencies.append(time.perf_counter() - started)
        await client.close()
    return statistics.median(latencies) * 1000


async def _raw_pipelined_rate(directory: Path, *, count: int) -> float:
    """The baseline for PublishBatch: nats-py publishing without waiting for each ack."""
    async with NatsServer(directory) as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.>"], duplicate_window=120)
        data = _events(1)[0].SerializeToString()
        started = time.perf_counter()
        futures = [
            await js.publish_async(f"bench.{i % 16}", data, headers={"Nats-Msg-Id": f"raw-{i}"})
            for i in range(count)
        ]
        await asyncio.gather(*futures)
        rate = count / (time.perf_counter() - started)
        await client.close()
    return rate


@dataclass(frozen=True)
class GatewayRates:
    unary: float
    batched: float
    delivered: float


async def _gateway_rates(
    directory: Path, *, count: int, in_flight: int, batch: int, policy_dir: Path
) -> GatewayRates:
    config = load(None, environ={})
    config = dataclasses.replace(
        config, policy=dataclasses.replace(config.policy, dir=str(policy_dir))
    )
    async with NatsServer(directory) as server, Gateway(config, nats_url=server.url) as gateway:
        tokens = sample_tokens()
        client = DutyLinkClient(gateway.address, token=tokens["fire"])
        receiver = DutyLinkClient(gateway.address, token=tokens["transport"])
        # Transport receives the fire's incidents with the reporter withheld (sample policy).
        subscription = receiver.subscribe(
            "bench", families=["incident"], planes=[event_pb2.PLANE_EXERCISE], max_in_flight=batch
        )
        await subscription.open()
        limit = asyncio.Semaphore(in_flight)

        async def one(event: event_pb2.Event) -> None:
            async with limit:
                await client.publish(event)

        events = _events(count)
        started = time.perf_counter()
        await asyncio.gather(*(one(e) for e in events))
        unary = count / (time.perf_counter() - started)

        events = _events(count)
        started = time.perf_counter()
        for offset in range(0, count, batch):
            results = await client.publish_batch(events[offset : offset + batch])
            if any(r.HasField("error") for r in results):
                raise RuntimeError(f"batch publish failed: {results[0].error.message}")
        batched = count / (time.perf_counter() - started)

        started = time.perf_counter()
        for _ in range(2 * count):  # everything published above, acked one by one
            delivery = await subscription.next(timeout=30)
            if delivery is None:
                raise RuntimeError("the subscription ended early")
            await subscription.ack(delivery)
        delivered = 2 * count / (time.perf_counter() - started)
        await subscription.close()
        await receiver.close()
        await client.close()
    return GatewayRates(unary, batched, delivered)


T = TypeVar("T")


async def _repeat(runs: int, measure: Callable[[Path], Awaitable[T]]) -> list[T]:
    samples: list[T] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="dutylink-bench-") as directory:
            samples.append(await measure(Path(directory)))
    return samples


async def run(runs: int = 3, count: int = 2000) -> list[Figure]:
    def figure(name: str, unit: str, samples: list[float]) -> Figure:
        return Figure(name, unit, statistics.median(samples), tuple(samples))

    synced = await _repeat(runs, lambda d: _raw_publish_latency_ms(d, sync_always=True, count=1000))
    default = await _repeat(
        runs, lambda d: _raw_publish_latency_ms(d, sync_always=False, count=1000)
    )
    sample = await _repeat(
        runs,
        lambda d: _gateway_rates(d, count=count, in_flight=16, batch=500, policy_dir=SAMPLE_DIR),
    )
    permissive = await _repeat(
        runs,
        lambda d: _gateway_rates(d, count=count, in_flight=16, batch=500, policy_dir=OPEN_POLICY),
    )
    raw = await _repeat(runs, lambda d: _raw_pipelined_rate(d, count=count))
    return [
        figure("raw JetStream publish, sync_interval: always", "ms/publish", synced),
        figure("raw JetStream publish, default (2 min fsync)", "ms/publish", default),
        figure("gateway Publish, 16 in flight", "events/s", [r.unary for r in sample]),
        figure("gateway PublishBatch, 500 per call", "events/s", [r.batched for r in sample]),
        figure("raw nats-py pipelined JetStream publish", "events/s", raw),
        figure(
            "PublishBatch, permissive one-rule policy", "events/s", [r.batched for r in permissive]
        ),
        figure(
            "Subscribe delivery + ack, sample policy (redacting)",
            "events/s",
            [r.delivered for r in sample],
        ),
        figure(
            "Subscribe delivery + ack, permissive policy",
            "events/s",
            [r.delivered for r in permissive],
        ),
    ]
