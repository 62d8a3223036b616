"""The `soak` section: two measurements of the scale-out issue, each with gateways as real subprocesses
(`gateway.testkit.inprocess.GatewayProcess`), so a figure belongs to one gateway process (its memory,
its CPU) and replicas do not share one interpreter's GIL.

Long because this docstring defines every figure the two measurements report, so a reader of the
numbers needs no other page; the code itself is well under 400 lines.

`rss_with_stalled_subscriber` — memory under a stalled subscriber. One gateway (sample
policies, defaults otherwise) on an embedded nats-server (`sync_interval: always`); a publisher
sends `rate` events/s open loop (a PublishBatch of the events due every 50 ms, not waiting for
the previous call) for `seconds`; a healthy subscriber receives and acks everything; a stalled
subscriber opens a subscription with `max_in_flight` 1000, reads the first few deliveries and
then never reads its gRPC stream again nor acks, staying open until the end (so HTTP/2 flow
control pushes back on the gateway's writes and JetStream keeps the rest). The gateway's own
resident memory (VmRSS of its process, /proc/<pid>/status) is sampled every `seconds`/100
(0.5 to 5 s). The first 10 % of the run is warm-up and discarded; over the rest:
- `start_mb`, `end_mb`, `peak_mb`: the first, last and largest sample, MB = 2**20 bytes;
- `slope_mb_per_min`: the least-squares slope of RSS over time. Flat memory (no unbounded
  buffering) means a slope near 0 and `end_mb` near `start_mb`;
- `late_slope_mb_per_min`: the same over the last half of the run only. A bounded cache that
  is still filling after the warm-up raises `slope_mb_per_min` but not this one; unbounded
  growth raises both.
`samples` holds every sample (warm-up included, `warmup_samples` of them first, one every
`interval_seconds`); `published`, `delivered`, `stalled_received` and `publish_errors` show
that the load was what was asked for (`max_outstanding` calls in flight at once: more than a
few means the gateway fell behind the open-loop schedule).

`replica_scaling` — PublishBatch throughput through one gateway replica vs two. A three-node
JetStream cluster (`gateway.testkit.cluster.LocalCluster`, R3, sync always) and two gateway replicas
(`gw-1`, `gw-2`, `nats.stream_replicas = 3`, sample policies). `clients` concurrent publishers
in this process (own channel each) send `count` events in PublishBatch calls of 500, first all
through `gw-1`, then split evenly between `gw-1` and `gw-2`. Runs go one, two, two, one (so
drift hits both alike); each rate is the mean of its two runs, in events/s:
- `one_replica`, `two_replicas`, and `ratio` = two_replicas / one_replica (2.0 would be
  perfect scaling; on a machine with fewer cores than busy processes, expect near 1.0).
- `cpu_one_replica`, `cpu_two_replicas`: CPU used per process during the timed runs, in cores
  (CPU seconds per wall second): each gateway, each nats node, and this process (the clients).
  Their sum near the machine's core count means the machine, not one process, is the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import (
    BATCH,
    PUBLISHER,
    RECEIVER,
    cpu_seconds,
    incident_report,
    refusals,
    renew,
    repeat,
)
from gateway.config import sample_tokens
from gateway.store.nats_server import NatsServer
from gateway.testkit.cluster import LocalCluster
from gateway.testkit.inprocess import GatewayProcess

STALLED_IN_FLIGHT = 1000
STALLED_READS = 10  # deliveries the stalled subscriber reads before it stops reading
WARMUP_FRACTION = 0.1
RSS_FLAT_MB_PER_MIN = 0.5  # "flat": under 5 MB over the ten-minute run
TICK_SECONDS = 0.05


@dataclass(frozen=True)
class RssFigures:
    start_mb: float
    end_mb: float
    peak_mb: float
    slope_mb_per_min: float
    samples: tuple[float, ...]
    interval_seconds: float = 0.0
    warmup_samples: int = 0
    late_slope_mb_per_min: float = 0.0
    published: int = 0
    delivered: int = 0
    stalled_received: int = 0
    publish_errors: int = 0
    max_outstanding: int = 0


@dataclass(frozen=True)
class ScalingFigures:
    one_replica: float
    two_replicas: float
    ratio: float
    cpu_one_replica: Mapping[str, float] = field(default_factory=dict)
    cpu_two_replicas: Mapping[str, float] = field(default_factory=dict)


def _event_factory() -> Iterator[event_pb2.Event]:
    """Fresh copies of the bench's incident report, each with its own id and incident."""
    template = incident_report(datetime.now(UTC))
    prefix = f"soak-{time.time_ns()}"
    index = 0
    while True:
        event = event_pb2.Event()
        event.CopyFrom(template)
        renew(event, f"{prefix}-{index}")
        index += 1
        yield event


def _take(events: Iterator[event_pb2.Event], count: int) -> list[event_pb2.Event]:
    return [next(events) for _ in range(count)]


def rss_mb(pid: int) -> float:
    """The resident set size of process `pid` in MB (2**20 bytes), from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_per_minute(times: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of `values` over `times` (seconds), per minute; 0 for fewer
    than two distinct times."""
    if len(set(times)) < 2:
        return 0.0
    return statistics.linear_regression([t / 60 for t in times], values).slope


class _OpenLoopPublisher:
    """Publishes `rate` events/s as a PublishBatch of whatever is due every tick, each call a
    task of its own: a slow gateway makes calls pile up rather than the rate drop."""

    def __init__(self, client: DutyLinkClient, rate: float) -> None:
        self.client = client
        self.rate = rate
        self.published = 0
        self.errors = 0
        self.refused = ""  # a refusal other than "not now": the load was not what was asked
        self.max_outstanding = 0
        self._calls: set[asyncio.Task[None]] = set()

    async def _call(self, events: list[event_pb2.Event]) -> None:
        try:
            results = await self.client.publish_batch(events)
        except grpc.aio.AioRpcError:
            self.errors += len(events)
            return
        if refused := refusals(results, but_retryable=True):
            self.refused = refused
        failed = sum(result.HasField("error") for result in results)
        self.errors += failed
        self.published += len(events) - failed

    async def run(self, seconds: float) -> None:
        events = _event_factory()
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while (now := loop.time()) < started + seconds:
            due = int(self.rate * (now - started)) - sent
            for offset in range(0, due, BATCH):
                call = asyncio.create_task(self._call(_take(events, min(BATCH, due - offset))))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)
            sent += max(due, 0)
            self.max_outstanding = max(self.max_outstanding, len(self._calls))
            await asyncio.sleep(TICK_SECONDS)
        if self._calls:
            await asyncio.wait(self._calls)


async def _stall(call: Any, reads: int, received: list[int]) -> None:
    """Read `reads` deliveries of an open Subscribe call, then nothing ever again."""
    while received[0] < reads:
        response = await call.read()
        if response is grpc.aio.EOF:
            return
        if response.HasField("delivery"):
            received[0] += 1


async def rss_with_stalled_subscriber(
    directory: Path, *, seconds: float, rate: float
) -> RssFigures:
    """The gateway's resident memory over `seconds` of `rate` events/s with one healthy and one
    stalled subscriber (see the module docstring)."""
    tokens = sample_tokens()
    interval = min(5.0, max(0.5, seconds / 100))
    async with (
        NatsServer(directory / "nats") as server,
        GatewayProcess(server.url, directory / "gateway", policy_dir=SAMPLE_DIR) as gateway,
        DutyLinkClient(gateway.address, token=tokens[PUBLISHER]) as publishing,
        DutyLinkClient(gateway.address, token=tokens[RECEIVER]) as receiving,
        # Its own connection: a stalled stream holds its HTTP/2 connection's window too.
        grpc.aio.insecure_channel(gateway.address) as stalled_channel,
    ):
        healthy = receiving.subscribe(
            "soak-healthy", families=["incident"], planes=[event_pb2.PLANE_EXERCISE]
        )
        await healthy.open()
        stalled = gateway_pb2_grpc.SubscriberServiceStub(stalled_channel).Subscribe(
            metadata=(("authorization", f"Bearer {tokens[RECEIVER]}"),)
        )
        opening = gateway_pb2.SubscriptionOpen(
            name="soak-stalled",
            filter=gateway_pb2.SubscriptionFilter(
                families=["incident"], planes=[event_pb2.PLANE_EXERCISE]
            ),
            max_in_flight=STALLED_IN_FLIGHT,
        )
        await stalled.write(gateway_pb2.SubscribeRequest(open=opening))
        ready = await stalled.read()
        if not isinstance(ready, gateway_pb2.SubscribeResponse) or not ready.HasField("ready"):
            raise RuntimeError(f"the stalled subscription did not open: {ready}")
        stalled_received = [0]
        stalling = asyncio.create_task(_stall(stalled, STALLED_READS, stalled_received))

        delivered = 0

        async def receive() -> None:
            nonlocal delivered
            async for delivery in healthy:
                await healthy.ack(delivery)
                delivered += 1

        receiver = asyncio.create_task(receive())
        times: list[float] = []
        samples: list[float] = []

        async def sample() -> None:
            started = time.monotonic()
            while True:
                times.append(time.monotonic() - started)
                samples.append(rss_mb(gateway.pid))
                await asyncio.sleep(interval)

        sampler = asyncio.create_task(sample())
        publisher = _OpenLoopPublisher(publishing, rate)
        try:
            await publisher.run(seconds)
            # Let the healthy subscriber catch up a little: what it still lacks is its lag.
            await asyncio.sleep(min(2.0, interval))
        finally:
            for task in (sampler, receiver, stalling):
                task.cancel()
            await asyncio.gather(sampler, receiver, stalling, return_exceptions=True)
            stalled.cancel()
            await healthy.close()
    if publisher.refused:
        raise RuntimeError(f"bench: the soak's publisher was refused: {publisher.refused}")
    kept = [i for i, t in enumerate(times) if t >= WARMUP_FRACTION * seconds] or [len(times) - 1]
    late = [i for i, t in enumerate(times) if t >= seconds / 2] or [len(times) - 1]
    window = [samples[i] for i in kept]
    return RssFigures(
        start_mb=window[0],
        end_mb=window[-1],
        peak_mb=max(window),
        slope_mb_per_min=slope_per_minute([times[i] for i in kept], window),
        samples=tuple(samples),
        interval_seconds=interval,
        warmup_samples=kept[0],
        late_slope_mb_per_min=slope_per_minute(
            [times[i] for i in late], [samples[i] for i in late]
        ),
        published=publisher.published,
        delivered=delivered,
        stalled_received=stalled_received[0],
        publish_errors=publisher.errors,
        max_outstanding=publisher.max_outstanding,
    )


async def _publish_all(client: DutyLinkClient, events: Sequence[event_pb2.Event]) -> None:
    for offset in range(0, len(events), BATCH):
        results = await client.publish_batch(events[offset : offset + BATCH])
        if refused := refusals(results):
            raise RuntimeError(f"bench: {refused}")


async def _timed_rate(
    targets: Sequence[DutyLinkClient],
    count: int,
    events: Iterator[event_pb2.Event],
    pids: Mapping[str, int],
) -> tuple[float, dict[str, float]]:
    """Events/s for `count` events split evenly over the clients, all at once; and the CPU each
    process used meanwhile, in cores."""
    share = count // len(targets)
    batches = [_take(events, share) for _ in targets]
    used = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(_publish_all(c, b) for c, b in zip(targets, batches, strict=True)))
    elapsed = time.perf_counter() - started
    cores = {name: (cpu_seconds(pid) - used[name]) / elapsed for name, pid in pids.items()}
    cores["clients (bench process)"] = (time.process_time() - own) / elapsed
    return share * len(targets) / elapsed, cores


def _mean_cores(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {name: statistics.fmean(run[name] for run in runs) for name in runs[0]}


async def replica_scaling(directory: Path, *, count: int, clients: int = 4) -> ScalingFigures:
    """PublishBatch events/s through one gateway replica vs two on a three-node cluster (see the
    module docstring)."""
    if clients < 2 or clients % 2:
        raise ValueError("clients must be an even number, at least 2, to split over two replicas")
    token = sample_tokens()[PUBLISHER]
    replicas = {"DUTYLINK_NATS_STREAM_REPLICAS": "3"}
    async with contextlib.AsyncExitStack() as stack:
        cluster = await stack.enter_async_context(LocalCluster(directory / "cluster"))
        gateways: list[GatewayProcess] = []
        for gateway_id in ("gw-1", "gw-2"):
            gateways.append(
                await stack.enter_async_context(
                    GatewayProcess(
                        cluster.gateway_urls,
                        directory / gateway_id,
                        gateway_id=gateway_id,
                        policy_dir=SAMPLE_DIR,
                        env=replicas,
                    )
                )
            )
        pids = {f"gateway {g.gateway_id}": g.pid for g in gateways} | {
            f"nats {node.name}": cluster.pid(i) for i, node in enumerate(cluster.plan.nodes)
        }
        on_one = [
            await stack.enter_async_context(DutyLinkClient(gateways[0].address, token=token))
            for _ in range(clients)
        ]
        on_two = on_one[: clients // 2] + [
            await stack.enter_async_context(DutyLinkClient(gateways[1].address, token=token))
            for _ in range(clients // 2)
        ]
        events = _event_factory()
        # Warm-up: connections, streams, consumers' first writes, the policy caches.
        await asyncio.gather(*(_publish_all(c, _take(events, BATCH)) for c in on_two))
        one: list[tuple[float, dict[str, float]]] = []
        two: list[tuple[float, dict[str, float]]] = []
        for results, targets in ((one, on_one), (two, on_two), (two, on_two), (one, on_one)):
            results.append(await _timed_rate(targets, count, events, pids))
    one_rate = statistics.fmean(rate for rate, _ in one)
    two_rate = statistics.fmean(rate for rate, _ in two)
    return ScalingFigures(
        one_replica=one_rate,
        two_replicas=two_rate,
        ratio=two_rate / one_rate,
        cpu_one_replica=_mean_cores([cores for _, cores in one]),
        cpu_two_replicas=_mean_cores([cores for _, cores in two]),
    )


# --- the `soak` section --------------------------------------------------------------------------


async def soak_figures(settings: Settings) -> list[Figure]:
    """The memory run once (`rss_seconds` long: fitted after its 10 % warm-up),
    the replica comparison `runs` times. Both start their own embedded servers."""
    figures = []
    if settings.rss_seconds > 0:
        (memory,) = await repeat(
            1,
            lambda d: rss_with_stalled_subscriber(
                d, seconds=settings.rss_seconds, rate=settings.rss_rate
            ),
        )
        load = f"{settings.rss_seconds / 60:g} min at {settings.rss_rate:,.0f} events/s"
        figures += [
            make_figure(
                "soak",
                f"gateway RSS with a stalled subscriber, {load}: at the end",
                "MB",
                [memory.end_mb],
                ("start", [memory.start_mb]),
            ),
            make_figure("soak", "gateway RSS peak", "MB", [memory.peak_mb]),
            make_figure(
                "soak",
                "gateway RSS growth",
                "MB/min",
                [memory.slope_mb_per_min],
                target=Target(RSS_FLAT_MB_PER_MIN, at_most=True),
            ),
        ]
    scaling = await repeat(settings.runs, lambda d: replica_scaling(d, count=settings.count))
    figures.append(
        make_figure(
            "soak",
            f"PublishBatch through 2 gateway replicas (3-node cluster, R3), {BATCH} per call",
            "events/s",
            [s.two_replicas for s in scaling],
            ("1 replica", [s.one_replica for s in scaling]),
        )
    )
    return figures
