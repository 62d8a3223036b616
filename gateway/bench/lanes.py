"""The `lanes` section: how long an urgent event takes to reach an agency whose subscription has
a routine backlog queued, next to the same with nothing queued (gateway.core.lanes).

Each run: transport opens a subscription and leaves (its consumers now exist), the fire
publishes the routine backlog (`Settings.lanes_backlog` incident reports, priority Routine, by PublishBatch),
transport comes back acking every delivery, and at once the fire publishes `URGENT` Flash
reports by unary Publish on an open-loop schedule of `URGENT_RATE` per second. Latency is the
urgent event's delivery time - its *scheduled* send time. The baseline run is the same without
the backlog. Each run also reports how much of the backlog was still queued when the last
urgent event was sent (so the figure was taken behind a real queue, not after it drained).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import (
    BATCH,
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
    refusals,
    unique,
    until,
)
from gateway.config import sample_tokens

URGENT = 40  # urgent events per run
URGENT_RATE = 40.0  # urgent events per second: the last is sent a second in


@dataclass(frozen=True)
class UrgentDelivery:
    latency: Latency
    queued_at_last: int  # routine events not yet delivered when the last urgent one was sent


async def _urgent_latency(
    directory: Path, *, backlog: int, nats_url: str, in_process: bool
) -> UrgentDelivery:
    config = gateway_config(directory, policy_dir=SAMPLE_DIR)
    tokens = sample_tokens()
    async with (
        nats_at(directory, nats_url) as url,
        gateway_at(config, url, in_process=in_process) as address,
        DutyLinkClient(address, token=tokens[PUBLISHER]) as sender,
        DutyLinkClient(address, token=tokens[RECEIVER]) as receiver,
    ):
        name = unique("lanes")
        async with receiver.subscribe(
            name, families=["incident"], planes=[event_pb2.PLANE_EXERCISE]
        ):
            pass  # the consumers exist from here on: what follows queues for transport
        routine = make_events(backlog)
        for event in routine:
            event.priority = event_pb2.PRIORITY_ROUTINE
        for offset in range(0, len(routine), BATCH):
            if refused := refusals(await sender.publish_batch(routine[offset : offset + BATCH])):
                raise RuntimeError(f"bench: {refused}")
        urgent = make_events(URGENT)  # incident reports are Flash: the urgent lane
        urgent_ids = {event.id for event in urgent}
        arrivals: dict[str, float] = {}
        routine_delivered = 0
        queued_at_last = 0

        def note(delivery: gateway_pb2.Delivery) -> None:
            nonlocal routine_delivered
            if delivery.event.id in urgent_ids:
                arrivals.setdefault(delivery.event.id, time.perf_counter())
            else:
                routine_delivered += 1

        async def send(index: int) -> None:
            nonlocal queued_at_last
            if index == len(urgent) - 1:
                queued_at_last = backlog - routine_delivered
            await sender.publish(urgent[index])  # raises on a refusal, ending the run

        async with receiver.subscribe(
            name, families=["incident"], planes=[event_pb2.PLANE_EXERCISE]
        ) as back:
            reader = asyncio.create_task(acking(back, note))
            try:
                start = await open_loop(URGENT_RATE, len(urgent), send, in_flight=len(urgent))
                await until(lambda: len(arrivals) == len(urgent), 60, "every urgent delivery")
            finally:
                await cancel_all(reader)
        scheduled = {event.id: start + i / URGENT_RATE for i, event in enumerate(urgent)}
        latency = Latency.of([(arrivals[i] - scheduled[i]) * 1000 for i in urgent_ids])
        return UrgentDelivery(latency, queued_at_last)


async def lanes_figures(settings: Settings) -> list[Figure]:
    url, in_process = settings.nats_url, settings.in_process
    backlog = settings.lanes_backlog
    behind = Series(
        lambda d: _urgent_latency(d, backlog=backlog, nats_url=url, in_process=in_process)
    )
    alone = Series(lambda d: _urgent_latency(d, backlog=0, nats_url=url, in_process=in_process))
    await interleave(settings.runs, [behind, alone])
    baseline = "no backlog"
    return [
        make_figure(
            "lanes",
            f"urgent delivery p50, behind a routine backlog of {backlog:,}",
            "ms",
            [r.latency.p50 for r in behind.samples],
            (baseline, [r.latency.p50 for r in alone.samples]),
            Target(2, at_most=True, of_ratio=True),
        ),
        make_figure(
            "lanes",
            "urgent delivery p99",
            "ms",
            [r.latency.p99 for r in behind.samples],
            (baseline, [r.latency.p99 for r in alone.samples]),
            Target(2, at_most=True, of_ratio=True),
        ),
        make_figure(
            "lanes",
            "routine backlog still queued at the last urgent event",
            "events",
            [r.queued_at_last for r in behind.samples],
        ),
    ]
