"""The `workers` section: PublishBatch through one replica run as `dutylink serve --workers N`
(N = this machine's cores, at least 2, at most 8) vs the same with `--workers 1`.

Both sides run the same way: a `dutylink serve` process (gateway.testkit.inprocess.GatewayProcess)
with the sample policies, the audit log and the lifecycle guard on, on a fresh embedded
nats-server (or `--nats-url`); the clients in this process send ready-serialised
PublishBatchRequests on `CHANNELS` channels, each its own TCP connection (a local subchannel
pool), one call in flight on each: the kernel spreads connections, not calls, among workers, so
one channel would keep a single worker busy. A worker that got more channels than another is
still saturated by them, so the figure is the replica's capacity with these clients on this
machine. The target (at least 1.6x one worker, set for 2 workers on 2 cores) assumes the clients
and nats-server on other cores: on a 2-core machine they share them with the workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import gateway_pb2
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import BATCH, PUBLISHER, Series, interleave, make_events, nats_at, unique
from gateway.config import sample_tokens
from gateway.testkit.inprocess import GatewayProcess, free_port

CHANNELS = 8
PUBLISH_BATCH_METHOD = "/dutylink.v1.PublisherService/PublishBatch"
MOST_WORKERS = 8
READY_SECONDS = 60.0


def bench_workers(cores: int | None) -> int:
    """The workers measured against one: one per core, at least 2, at most MOST_WORKERS."""
    return max(2, min(cores or 1, MOST_WORKERS))


async def _every_worker_ready(metrics: str, workers: int) -> None:
    """Until the replica's metrics show `workers` workers (a worker is listed once ready)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://{metrics}/metrics") as answer:
                text = await answer.text()
            ready = {
                sample.labels.get("worker", "w0")
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
            if len(ready) >= workers:
                return
            if loop.time() > deadline:
                raise RuntimeError(f"bench: {len(ready)} of {workers} workers ready")
            await asyncio.sleep(0.1)


async def _batch_rate(directory: Path, *, count: int, workers: int, nats_url: str) -> float:
    """Stored events/s of PublishBatch on CHANNELS connections to a `--workers` replica."""
    size = max(1, min(BATCH, count // (2 * CHANNELS)))
    requests = [
        gateway_pb2.PublishBatchRequest(events=make_events(size)).SerializeToString()
        for _ in range(max(2 * CHANNELS, count // size))
    ]
    metadata = (("authorization", f"Bearer {sample_tokens()[PUBLISHER]}"),)
    metrics = f"127.0.0.1:{free_port()}"
    async with nats_at(directory, nats_url) as url:
        process = GatewayProcess(
            url,
            directory / "gateway",
            gateway_id=unique("bench"),
            policy_dir=SAMPLE_DIR,
            env={"DUTYLINK_GATEWAY_WORKERS": str(workers),
                 "DUTYLINK_GATEWAY_METRICS_LISTEN": metrics},
            log_level="error",
        )  # fmt: skip
        async with process:
            await _every_worker_ready(metrics, workers)
            channels = [
                grpc.aio.insecure_channel(
                    process.address, options=[("grpc.use_local_subchannel_pool", 1)]
                )
                for _ in range(CHANNELS)
            ]
            try:
                for channel in channels:  # connected before the clock starts
                    await asyncio.wait_for(channel.channel_ready(), 10)
                answers: list[bytes] = []

                async def send(channel: grpc.aio.Channel, mine: list[bytes]) -> None:
                    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                        PUBLISH_BATCH_METHOD
                    )
                    for request in mine:
                        answers.append(await call(request, metadata=metadata, timeout=60.0))

                started = time.perf_counter()
                await asyncio.gather(
                    *(send(c, requests[i::CHANNELS]) for i, c in enumerate(channels))
                )
                rate = size * len(requests) / (time.perf_counter() - started)
            finally:
                for channel in channels:
                    await channel.close()
    for answer in answers:
        response = gateway_pb2.PublishBatchResponse.FromString(answer)
        if refused := [r for r in response.results if r.HasField("error")]:
            raise RuntimeError(f"bench: {len(refused)} events refused: {refused[0].error.message}")
    return rate


async def workers_figures(settings: Settings) -> list[Figure]:
    cores = os.cpu_count()
    workers = bench_workers(cores)

    def rates(count: int) -> Series[float]:
        return Series(
            lambda d: _batch_rate(
                d, count=4 * settings.count, workers=count, nats_url=settings.nats_url
            )
        )

    many, one = rates(workers), rates(1)
    await interleave(settings.runs, [many, one])
    return [
        make_figure(
            "workers",
            f"PublishBatch, `serve --workers {workers}` on {cores} cores, {CHANNELS} channels",
            "events/s",
            many.samples,
            ("--workers 1", one.samples),
            Target(1.6, of_ratio=True),
        )
    ]
