"""The `guard` section: what the lifecycle guard (`[gateway] enforce_lifecycles`) costs Publish
and PublishBatch, as the ratio of the gateway with the guard on to the same gateway with it
off, measured alternately in the same runs (AB BA ...), each on a fresh server of one kind.

Every event is an incident report opening an incident of its own, so with the guard on each
costs what a new incident costs: one key-value read (absent), the judgement, one create.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import (
    BATCH,
    IN_FLIGHT,
    PUBLISHER,
    Series,
    gateway_at,
    gateway_config,
    interleave,
    make_events,
    nats_at,
    rate_in_flight,
    refusals,
)
from gateway.config import sample_tokens

WARM_UP = 20  # events through each RPC first: connections, streams, the key-value bucket


@dataclass(frozen=True)
class PublishRates:
    unary: float  # events/s, IN_FLIGHT calls at once
    batched: float  # events/s, BATCH events per call, one call at a time


async def _batches(client: DutyLinkClient, events: list[event_pb2.Event]) -> float:
    """Events/s of `events` in PublishBatch calls of BATCH; any refused event ends the run."""
    started = time.perf_counter()
    for offset in range(0, len(events), BATCH):
        if refused := refusals(await client.publish_batch(events[offset : offset + BATCH])):
            raise RuntimeError(f"bench: {refused}")
    return len(events) / (time.perf_counter() - started)


async def _publish_rates(
    directory: Path, *, count: int, enforce: bool, nats_url: str, in_process: bool
) -> PublishRates:
    """After a warm-up, `count` events by unary Publish, then `count` more by PublishBatch,
    through a gateway with the sample policies and the audit log, the guard on or off."""
    config = gateway_config(directory, policy_dir=SAMPLE_DIR, enforce_lifecycles=enforce)
    async with (
        nats_at(directory, nats_url) as url,
        gateway_at(config, url, in_process=in_process) as address,
        DutyLinkClient(address, token=sample_tokens()[PUBLISHER]) as client,
    ):
        for event in make_events(WARM_UP):
            await client.publish(event)
        await _batches(client, make_events(WARM_UP))
        events = make_events(count)  # a refused unary call raises
        unary = await rate_in_flight(count, IN_FLIGHT, lambda i: client.publish(events[i]))
        return PublishRates(unary, await _batches(client, make_events(count)))


async def guard_figures(settings: Settings) -> list[Figure]:
    def rates(*, enforce: bool) -> Series[PublishRates]:
        return Series(
            lambda d: _publish_rates(
                d,
                count=settings.count,
                enforce=enforce,
                nats_url=settings.nats_url,
                in_process=settings.in_process,
            )
        )

    on, off = rates(enforce=True), rates(enforce=False)
    await interleave(settings.runs, [on, off])
    off_label = "guard off"
    return [
        make_figure(
            "guard",
            f"PublishBatch, {BATCH} per call, lifecycle guard on (overhead = 1 - ratio)",
            "events/s",
            [r.batched for r in on.samples],
            (off_label, [r.batched for r in off.samples]),
            Target(0.85, of_ratio=True),
        ),
        make_figure(
            "guard",
            f"Publish, {IN_FLIGHT} in flight, lifecycle guard on",
            "events/s",
            [r.unary for r in on.samples],
            (off_label, [r.unary for r in off.samples]),
        ),
    ]
