"""The `fanout` section: 20 agencies receiving every event."""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import SecretStr

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import (
    OPEN_LOOP_IN_FLIGHT,
    acking,
    cancel_all,
    gateway_at,
    gateway_config,
    make_events,
    nats_at,
    open_loop,
    repeat,
    slope,
    unique,
    until,
)
from gateway.core.settings import Agency


@dataclass(frozen=True)
class Fanout:
    published: float  # events/s
    delivered: float  # events/s per agency, median over agencies
    end_lag: float  # events, worst agency, when publishing ended
    lag_slope: float  # events/s, the worst agency's least-squares lag growth


def _fanout_agencies(count: int) -> tuple[Agency, ...]:
    """A publishing agency and `count` receiving ones, each with its own token."""
    ids = ["source", *(f"agency-{i:02d}" for i in range(1, count + 1))]
    return tuple(Agency(i, i, token=SecretStr(f"bench-token-{i}")) for i in ids)


def _permissive_policy(directory: Path, agencies: Sequence[Agency]) -> Path:
    """A policy declaring these agencies, each allowed to publish and receive everything."""
    rule = {"effect": "allow", "agencies": "*", "types": "*"}
    policy = {
        "agencies": [{"id": a.id, "name": a.name} for a in agencies],
        "rules": [
            {"id": "bench-publishes", "action": "publish", **rule},
            {
                "id": "bench-receives",
                "action": "receive",
                **rule,
                "max_classification": "CONFIDENTIAL",
                "purpose": "benchmark",
            },
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.yaml").write_text(yaml.safe_dump(policy, sort_keys=False), "utf-8")
    return directory


async def _fanout(
    directory: Path,
    *,
    receivers: int,
    rate: float,
    seconds: float,
    nats_url: str,
    in_process: bool = False,
) -> Fanout:
    agencies = _fanout_agencies(receivers)
    config = gateway_config(
        directory, policy_dir=_permissive_policy(directory / "policy", agencies), agencies=agencies
    )
    async with (
        nats_at(directory, nats_url) as url,
        gateway_at(config, url, in_process=in_process) as address,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [
            await stack.enter_async_context(
                DutyLinkClient(address, token=a.token.get_secret_value())
            )
            for a in agencies
        ]
        name = unique("bench")
        subscriptions = [
            await stack.enter_async_context(
                client.subscribe(name, planes=[event_pb2.PLANE_EXERCISE])
            )
            for client in clients[1:]
        ]
        delivered = [0] * receivers
        published = 0

        def counter(index: int) -> Callable[[gateway_pb2.Delivery], None]:
            def count(_: gateway_pb2.Delivery) -> None:
                delivered[index] += 1

            return count

        readers = [asyncio.create_task(acking(s, counter(i))) for i, s in enumerate(subscriptions)]
        try:
            await clients[0].publish(make_events(1)[0])  # warm up every connection and consumer
            await until(lambda: min(delivered) >= 1, 30, "fan-out of the warm-up event")
            delivered[:] = [0] * receivers
            events = make_events(max(2, round(rate * seconds)))

            async def publish(index: int) -> None:
                nonlocal published
                await clients[0].publish(events[index])
                published += 1

            # (seconds since start, published so far, delivered so far to each agency), every
            # second of the schedule and at its end; the publisher may finish later when the
            # gateway holds it back, which the lag then shows.
            snapshots: list[tuple[float, int, list[int]]] = []
            start = time.perf_counter()

            async def sample() -> None:
                for tick in [*range(1, math.ceil(seconds)), seconds]:
                    await asyncio.sleep(max(0.0, start + tick - time.perf_counter()))
                    snapshots.append((time.perf_counter() - start, published, list(delivered)))

            def lags(at: float, received: list[int]) -> list[int]:
                """Per agency: events due on the schedule by `at` - events delivered."""
                due = min(len(events), math.floor(at * rate) + 1)
                return [due - d for d in received]

            sampler = asyncio.create_task(sample())
            try:
                await open_loop(rate, len(events), publish, in_flight=OPEN_LOOP_IN_FLIGHT)
                await sampler
            finally:
                await cancel_all(sampler)
            series = [(at, lags(at, received)) for at, _, received in snapshots]
            at, sent, received = snapshots[-1]
            return Fanout(
                published=sent / at,
                delivered=statistics.median(received) / at,
                end_lag=max(series[-1][1]),
                lag_slope=max(slope([(t, lag[k]) for t, lag in series]) for k in range(receivers)),
            )
        finally:
            await cancel_all(*readers)


async def fanout_figures(settings: Settings) -> list[Figure]:
    count, rate = settings.fanout_agencies, settings.fanout_rate
    runs = await repeat(
        settings.runs,
        lambda d: _fanout(
            d,
            receivers=count,
            rate=rate,
            seconds=settings.seconds,
            nats_url=settings.nats_url,
            in_process=settings.in_process,
        ),
    )
    return [
        make_figure(
            "fanout",
            f"fan-out to {count} agencies at {rate:,.0f} events/s: delivered per agency (median)",
            "events/s",
            [r.delivered for r in runs],
            ("published", [r.published for r in runs]),
        ),
        make_figure(
            "fanout", "fan-out lag at the end, worst agency", "events", [r.end_lag for r in runs]
        ),
        make_figure(
            "fanout",
            "fan-out lag growth, worst agency",
            "events/s",
            [r.lag_slope for r in runs],
            target=Target(0.02 * rate, at_most=True),
        ),
    ]
