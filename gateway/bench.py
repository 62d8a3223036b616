"""`dutylink bench`: figures for the publish path, each a median over repeated runs.

Measured on whatever machine runs it, against fresh embedded nats-servers on loopback:
- the cost of `sync_interval: always`: raw nats-py acked JetStream publishes, one at a time,
  with fsync on every write vs JetStream's default (fsync every two minutes);
- gateway unary Publish with 16 calls in flight, and PublishBatch, in events/s (validation on,
  `sync_interval: always`), against raw nats-py pipelined publishing of the same events with
  the same server settings.
- batch publish and subscribe delivery under the sample policies (20-odd rules, redaction) vs
  a permissive one-rule policy, in the same run: the cost of access control.
- PublishBatch with the audit log on vs off, runs alternating so machine noise hits both alike:
  the cost of the audit log (target: under 15 %);
- checkpoint latency under a steady publish load at the default `checkpoint_seconds`: from a
  Publish acknowledgement (its audit entry is durable by then) until a signed checkpoint covers
  that entry, p50 and p99 (target: p99 under 1.5 s).
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
from nats.aio.msg import Msg

from adapters.client import DutyLinkClient
from dutylink.v1 import event_pb2
from gateway import subjects
from gateway.audit.note import Checkpoint, Verifier, open_note
from gateway.config import Config, load, sample_tokens
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


def _gateway_config(directory: Path, *, policy_dir: Path, audit: bool = True) -> Config:
    """Defaults with this policy and audit switch, on a free port, with the gateway's files (audit
    keys) in the run's directory: never a real deployment's `.dutylink` or its port."""
    config = load(None, environ={})
    return dataclasses.replace(
        config,
        gateway=dataclasses.replace(config.gateway, listen="127.0.0.1:0"),
        nats=dataclasses.replace(config.nats, data_dir=str(directory / "gateway")),
        policy=dataclasses.replace(config.policy, dir=str(policy_dir)),
        audit=dataclasses.replace(config.audit, enabled=audit),
    )


async def _gateway_rates(
    directory: Path, *, count: int, in_flight: int, batch: int, policy_dir: Path, audit: bool = True
) -> GatewayRates:
    config = _gateway_config(directory, policy_dir=policy_dir, audit=audit)
    async with (
        NatsServer(directory / "nats") as server,
        Gateway(config, nats_url=server.url) as gateway,
    ):
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


@dataclass(frozen=True)
class CheckpointLatency:
    p50: float
    p99: float


async def _checkpoint_latency(directory: Path, *, rate: float, seconds: float) -> CheckpointLatency:
    """Publish one event at a time on a steady schedule (default `checkpoint_seconds`); for each,
    the time from its Publish acknowledgement until a signed checkpoint covers its audit entry,
    as a NATS subscriber to the checkpoint subject sees it arrive (signature checked)."""
    config = _gateway_config(directory, policy_dir=SAMPLE_DIR)
    gateway_id = config.gateway.gateway_id
    async with (
        NatsServer(directory / "nats") as server,
        Gateway(config, nats_url=server.url) as gateway,
    ):
        audit = gateway.audit
        if audit is None:
            raise RuntimeError("the audit log did not open")
        # The verifier key the gateway wrote beside its checkpoint key on first start.
        public = Path(config.nats.data_dir, "audit", f"{gateway_id}.pub")
        trusted = [Verifier.from_key_string((await asyncio.to_thread(public.read_text)).strip())]
        signed: list[tuple[float, int]] = []  # (arrival, tree size): sizes only grow
        arrived = asyncio.Event()

        async def on_checkpoint(message: Msg) -> None:
            at = time.perf_counter()
            text, _ = open_note(message.data, trusted)
            signed.append((at, Checkpoint.parse(text).size))
            arrived.set()

        observer = await nats.connect(server.url)
        await observer.subscribe(subjects.audit_checkpoints(gateway_id), cb=on_checkpoint)
        await observer.flush()
        client = DutyLinkClient(gateway.address, token=sample_tokens()["fire"])
        # (ack time, log size just after). One publish at a time and nothing else appending, so
        # an event's entry is leaf size - 1: covered by the first checkpoint of size >= size. An
        # entry appended by anything else meanwhile could only make the figure err high.
        acked: list[tuple[float, int]] = []
        started = time.perf_counter()
        for index, event in enumerate(_events(max(2, round(rate * seconds)))):
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            await client.publish(event)
            acked.append((time.perf_counter(), audit.size))
        async with asyncio.timeout(3 * config.audit.checkpoint_seconds + 10):
            while not signed or signed[-1][1] < acked[-1][1]:
                arrived.clear()
                await arrived.wait()
        await client.close()
        await observer.close()
    latencies = []
    covering = 0
    for at, size in acked:
        while signed[covering][1] < size:
            covering += 1
        # A checkpoint signed between the entry's append and the ack covers it at once.
        latencies.append(max(0.0, signed[covering][0] - at))
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return CheckpointLatency(p50=cuts[49], p99=cuts[98])


T = TypeVar("T")


async def _repeat(runs: int, measure: Callable[[Path], Awaitable[T]]) -> list[T]:
    samples: list[T] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="dutylink-bench-") as directory:
            samples.append(await measure(Path(directory)))
    return samples


async def _alternate(
    runs: int, first: Callable[[Path], Awaitable[T]], second: Callable[[Path], Awaitable[T]]
) -> tuple[list[T], list[T]]:
    """Both measurements `runs` times, alternating AB BA AB ..., so that drift and machine noise
    hit both alike and neither always runs first (warm caches, CPU frequency)."""
    firsts: list[T] = []
    seconds: list[T] = []
    for index in range(runs):
        pair = [(first, firsts), (second, seconds)]
        for measure, samples in pair if index % 2 == 0 else pair[::-1]:
            samples += await _repeat(1, measure)
    return firsts, seconds


async def run(runs: int = 3, count: int = 2000, load_seconds: float = 10.0) -> list[Figure]:
    """The figures, in the order `dutylink bench` prints and compares them."""

    def figure(name: str, unit: str, samples: list[float]) -> Figure:
        return Figure(name, unit, statistics.median(samples), tuple(samples))

    def rates(policy_dir: Path, *, audit: bool = True) -> Callable[[Path], Awaitable[GatewayRates]]:
        return lambda d: _gateway_rates(
            d, count=count, in_flight=16, batch=500, policy_dir=policy_dir, audit=audit
        )

    synced = await _repeat(runs, lambda d: _raw_publish_latency_ms(d, sync_always=True, count=1000))
    default = await _repeat(
        runs, lambda d: _raw_publish_latency_ms(d, sync_always=False, count=1000)
    )
    sample, unaudited = await _alternate(runs, rates(SAMPLE_DIR), rates(SAMPLE_DIR, audit=False))
    permissive = await _repeat(runs, rates(OPEN_POLICY))
    raw = await _repeat(runs, lambda d: _raw_pipelined_rate(d, count=count))
    latency = await _repeat(runs, lambda d: _checkpoint_latency(d, rate=200, seconds=load_seconds))
    # Per pair of neighbouring runs, so the noise of one moment does not end up in one side only.
    overhead = [
        100 * (1 - on.batched / off.batched) for on, off in zip(sample, unaudited, strict=True)
    ]
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
        figure("PublishBatch, audit log off", "events/s", [r.batched for r in unaudited]),
        figure("audit log overhead on PublishBatch, 1 - on/off (target < 15 %)", "%", overhead),
        figure(
            "checkpoint latency p50, publish ack → signed checkpoint", "s", [r.p50 for r in latency]
        ),
        figure("checkpoint latency p99 (target < 1.5 s)", "s", [r.p99 for r in latency]),
    ]
