"""The `publish`, `policy` and `audit` sections: one interleaved set of gateway runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import (
    BATCH,
    IN_FLIGHT,
    PUBLISHER,
    RECEIVER,
    Measured,
    Series,
    gateway_at,
    gateway_config,
    interleave,
    make_events,
    nats_at,
    refusals,
    unique,
)
from gateway.bench.raw import echo_rate, raw_pipelined_rate, relay_rate, unary_rate
from gateway.config import sample_tokens
from gateway.core.settings import CryptoProfileName
from gateway.testkit.inprocess import OPEN_POLICY


@dataclass(frozen=True)
class GatewayRates:
    unary: Measured
    batched: float
    delivered: float
    confirmed: float  # delivery + ack with confirm_acks, acks awaited concurrently


async def gateway_rates(
    directory: Path,
    *,
    count: int,
    policy_dir: Path,
    audit: bool = True,
    nats_url: str = "",
    in_process: bool = False,
    crypto_profile: CryptoProfileName = "international",
) -> GatewayRates:
    """Unary Publish (IN_FLIGHT at once, called as the baselines are), then PublishBatch (BATCH per call), then delivery +
    ack of everything published to transport's subscription, then the same through a second
    subscription with confirmed acks (each ack awaited, up to BATCH at once)."""
    config = gateway_config(
        directory, policy_dir=policy_dir, audit=audit, crypto_profile=crypto_profile
    )
    async with (
        nats_at(directory, nats_url) as url,
        gateway_at(config, url, in_process=in_process) as address,
    ):
        tokens = sample_tokens()
        client = DutyLinkClient(address, token=tokens[PUBLISHER])
        receiver = DutyLinkClient(address, token=tokens[RECEIVER])
        subscription = receiver.subscribe(
            unique("bench"),
            families=["incident"],
            planes=[event_pb2.PLANE_EXERCISE],
            max_in_flight=BATCH,
        )
        await subscription.open()
        confirming = receiver.subscribe(
            unique("bench"),
            families=["incident"],
            planes=[event_pb2.PLANE_EXERCISE],
            max_in_flight=BATCH,
            confirm_acks=True,
        )
        await confirming.open()

        # Unary Publish through the raw relay's client: the same client CPU for both.
        unary = await unary_rate(address, count)

        events = make_events(count)
        started = time.perf_counter()
        for offset in range(0, count, BATCH):
            results = await client.publish_batch(events[offset : offset + BATCH])
            if refused := refusals(results):
                raise RuntimeError(f"bench: {refused}")
        batched = count / (time.perf_counter() - started)

        started = time.perf_counter()
        for _ in range(2 * count):  # everything published above, acked one by one
            delivery = await subscription.next(timeout=30)
            if delivery is None:
                raise RuntimeError("the subscription ended early")
            await subscription.ack(delivery)
        delivered = 2 * count / (time.perf_counter() - started)
        await subscription.close()

        started = time.perf_counter()
        acks: set[asyncio.Task[None]] = set()
        for _ in range(2 * count):
            delivery = await confirming.next(timeout=30)
            if delivery is None:
                raise RuntimeError("the confirming subscription ended early")
            ack = asyncio.create_task(confirming.ack(delivery))
            acks.add(ack)
            ack.add_done_callback(acks.discard)
        await asyncio.gather(*acks)
        confirmed = 2 * count / (time.perf_counter() - started)
        await confirming.close()
        await receiver.close()
        await client.close()
    return GatewayRates(unary, batched, delivered, confirmed)


def _unary_cpu_figures(samples: Sequence[GatewayRates], relay: Sequence[Measured]) -> list[Figure]:
    """Where a unary event's CPU goes, by process, beside the raw relay's in the same runs:
    why the unary figures miss (one process's CPU per event, not a wait). None for an
    in-process gateway (its CPU and the clients' are one process's)."""
    gateway = [r.unary.cpu_ms for r in samples]
    if not all("gateway" in g for g in gateway) or not all("baseline" in r.cpu_ms for r in relay):
        return []
    figures = [
        make_figure(
            "publish",
            f"CPU per unary Publish event ({IN_FLIGHT} in flight): the gateway process",
            "ms",
            [g["gateway"] for g in gateway],
            ("the raw relay process, per call", [r.cpu_ms["baseline"] for r in relay]),
        )
    ]
    for role, name in (("nats-server", "the embedded nats-server"), ("clients", "the clients")):
        if all(role in g for g in gateway) and all(role in r.cpu_ms for r in relay):
            figures.append(
                make_figure(
                    "publish",
                    f"CPU per unary Publish event: {name}",
                    "ms",
                    [g[role] for g in gateway],
                    ("with the raw relay", [r.cpu_ms[role] for r in relay]),
                )
            )
    return figures


async def throughput_figures(settings: Settings) -> list[Figure]:
    """`publish`, `policy` and `audit`: one interleaved set of runs, sharing the gateway runs
    with the sample policy and the audit log on."""
    chosen = settings.sections

    def rates(policy_dir: Path, *, audit: bool = True) -> Series[GatewayRates]:
        return Series(
            lambda d: gateway_rates(
                d,
                count=settings.count,
                policy_dir=policy_dir,
                audit=audit,
                nats_url=settings.nats_url,
                in_process=settings.in_process,
            )
        )

    gateway = rates(SAMPLE_DIR)
    echo = Series(lambda d: echo_rate(d, count=settings.count, in_process=settings.in_process))
    relay = Series(
        lambda d: relay_rate(
            d, count=settings.count, in_process=settings.in_process, nats_url=settings.nats_url
        )
    )
    raw = Series(lambda d: raw_pipelined_rate(d, count=settings.count, nats_url=settings.nats_url))
    permissive = rates(OPEN_POLICY)
    unaudited = rates(SAMPLE_DIR, audit=False)
    series: list[Series[Any]] = [gateway]
    series += [echo, relay, raw] if "publish" in chosen else []
    series += [permissive] if "policy" in chosen else []
    series += [unaudited] if "audit" in chosen else []
    await interleave(settings.runs, series)
    figures = []
    if "publish" in chosen:
        figures += [
            make_figure(
                "publish",
                f"gateway Publish, {IN_FLIGHT} in flight",
                "events/s",
                [r.unary.rate for r in gateway.samples],
                ("raw grpcio echo", echo.samples),
                Target(0.8, of_ratio=True),
            ),
            make_figure(
                "publish",
                f"gateway Publish, {IN_FLIGHT} in flight, vs a raw relay",
                "events/s",
                [r.unary.rate for r in gateway.samples],
                (
                    "raw relay: grpc.aio + one acked JetStream publish",
                    [r.rate for r in relay.samples],
                ),
                Target(0.7, of_ratio=True),
            ),
            *_unary_cpu_figures(gateway.samples, relay.samples),
            make_figure(
                "publish",
                f"gateway PublishBatch, {BATCH} per call",
                "events/s",
                [r.batched for r in gateway.samples],
                ("raw nats-py pipelined", raw.samples),
                Target(0.7, of_ratio=True),
            ),
            make_figure(
                "publish",
                "Subscribe delivery + confirmed ack (confirm_acks: ack + DUTYLINK_ACKED record)",
                "events/s",
                [r.confirmed for r in gateway.samples],
                ("plain ack", [r.delivered for r in gateway.samples]),
            ),
        ]
    if "policy" in chosen:
        figures += [
            make_figure(
                "policy",
                "PublishBatch, sample policy",
                "events/s",
                [r.batched for r in gateway.samples],
                ("permissive policy", [r.batched for r in permissive.samples]),
            ),
            make_figure(
                "policy",
                "Subscribe delivery + ack, sample policy (redacting)",
                "events/s",
                [r.delivered for r in gateway.samples],
                ("permissive policy", [r.delivered for r in permissive.samples]),
            ),
        ]
    if "audit" in chosen:
        figures.append(
            make_figure(
                "audit",
                "PublishBatch, audit log on (overhead = 1 - ratio)",
                "events/s",
                [r.batched for r in gateway.samples],
                ("audit log off", [r.batched for r in unaudited.samples]),
                Target(0.85, of_ratio=True),
            )
        )
    return figures
