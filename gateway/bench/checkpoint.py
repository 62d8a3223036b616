"""The `checkpoint` section: from a publish acknowledgement to a signed checkpoint covering it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
from nats.aio.msg import Msg

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from gateway.audit.note import Checkpoint, Verifier, open_note
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import PUBLISHER, Latency, gateway_config, make_events, nats_at, repeat
from gateway.config import sample_tokens
from gateway.core import subjects
from gateway.server import Gateway
from gateway.store.nats_auth import split_servers


async def _checkpoint_latency(
    directory: Path, *, rate: float, seconds: float, nats_url: str = ""
) -> Latency:
    """Publish one event at a time on a steady schedule (default `checkpoint_seconds`); for each,
    the time from its Publish acknowledgement until a signed checkpoint covers its audit entry,
    as a NATS subscriber to the checkpoint subject sees it arrive (signature checked), in s."""
    config = gateway_config(directory, policy_dir=SAMPLE_DIR)
    gateway_id = config.gateway.gateway_id
    async with nats_at(directory, nats_url) as url, Gateway(config, nats_url=url) as gateway:
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

        servers, credentials = split_servers(url)
        observer = await nats.connect(servers, **credentials)
        await observer.subscribe(subjects.audit_checkpoints(gateway_id), cb=on_checkpoint)
        await observer.flush()
        client = DutyLinkClient(gateway.address, token=sample_tokens()[PUBLISHER])
        # (ack time, log size just after). One publish at a time and nothing else appending, so
        # an event's entry is leaf size - 1: covered by the first checkpoint of size >= size. An
        # entry appended by anything else meanwhile could only make the figure err high.
        acked: list[tuple[float, int]] = []
        started = time.perf_counter()
        for index, event in enumerate(make_events(max(2, round(rate * seconds)))):
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
    return Latency.of(latencies)


async def checkpoint_figures(settings: Settings) -> list[Figure]:
    runs = await repeat(
        settings.runs,
        lambda d: _checkpoint_latency(
            d, rate=settings.checkpoint_rate, seconds=settings.seconds, nats_url=settings.nats_url
        ),
    )
    return [
        make_figure(
            "checkpoint",
            "checkpoint latency p50, publish ack → signed checkpoint",
            "s",
            [r.p50 for r in runs],
        ),
        make_figure(
            "checkpoint",
            "checkpoint latency p99",
            "s",
            [r.p99 for r in runs],
            target=Target(1.5, at_most=True),
        ),
    ]
