"""Whether JetStream can keep "acknowledged means durable": the streams' actual settings and the
servers' observed sync setting, compared with the promise at every start."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from gateway.core import streams as stream_registry
from gateway.core.ports import DurabilityError
from gateway.store.connection import NatsConnection
from gateway.store.errors import STORE_FAILURES, translate

log = structlog.get_logger("dutylink.nats")
# The system account's per-server VARZ, imported into the gateway's account under this subject
# by deploy/nats/nats.conf (and gateway.testkit.cluster): how the gateway sees each node's sync setting.
VARZ_SUBJECT = "dutylink.nats.varz"
# Fewer than 3 replicas on a cluster: one node's lost disk loses acknowledged events.
CLUSTER_MIN_REPLICAS = 3


@dataclass(frozen=True)
class DurabilityFinding:
    """One setting that breaks the durability promise: where (a stream or a server) and why."""

    where: str
    problem: str


def durability_findings(
    streams: Mapping[str, api.StreamInfo], sync_always: Mapping[str, bool], *, replicas: int
) -> list[DurabilityFinding]:
    """What the streams' actual settings and the servers' observed sync settings (server name
    -> `sync_interval: always`) cannot promise, given `nats.stream_replicas`. Pure."""
    findings = []
    for name, info in streams.items():
        config = info.config
        if config.storage != api.StorageType.FILE:
            kind = getattr(config.storage, "value", config.storage) or "unknown"
            findings.append(DurabilityFinding(name, f"storage is {kind}: a restart loses it all"))
        actual = config.num_replicas or 1
        if actual < replicas:
            findings.append(
                DurabilityFinding(name, f"{actual} replica(s), nats.stream_replicas is {replicas}")
            )
        if info.cluster is not None and info.cluster.name and actual < CLUSTER_MIN_REPLICAS:
            findings.append(
                DurabilityFinding(
                    name,
                    f"{actual} replica(s) on cluster {info.cluster.name}: losing one node's disk "
                    f"loses acknowledged events (set nats.stream_replicas = {CLUSTER_MIN_REPLICAS})",
                )
            )
    for server, always in sorted(sync_always.items()):
        if not always:
            findings.append(
                DurabilityFinding(
                    f"server {server}",
                    "jetstream sync_interval is not 'always': writes are acknowledged before "
                    "they reach the disk, and a power cut can lose them (nats-server#7564)",
                )
            )
    return findings


async def gather_replies(
    client: NatsClient,
    subject: str,
    payload: bytes,
    *,
    expected: int | None,
    timeout: float,
    idle: float = 0.25,
) -> list[dict[str, Any]]:
    """One request answered by several servers (a `$SYS...PING` service): their JSON replies,
    collected until `expected` arrived, or `timeout` passed, or (when the number is unknown)
    nothing more came for `idle` seconds after the first. [] when nobody answers."""
    inbox = client.new_inbox()
    arrived: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_reply(message: Msg) -> None:
        arrived.put_nowait(message)

    subscription = await client.subscribe(inbox, cb=on_reply)
    replies: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await client.publish(subject, payload, reply=inbox)
        while expected is None or len(replies) < expected:
            remaining = deadline - loop.time()
            if replies and expected is None:
                remaining = min(remaining, idle)
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(arrived.get(), remaining)
            except TimeoutError:
                break
            if message.headers and message.headers.get("Status") == "503":
                break  # no responders: nothing serves this subject here
            with contextlib.suppress(ValueError):
                replies.append(json.loads(message.data))
    finally:
        with contextlib.suppress(*STORE_FAILURES):
            await subscription.unsubscribe()
    return replies


async def _observed_sync(client: NatsClient) -> dict[str, bool]:
    """Each answering server's `sync_interval: always`, from the VARZ import ({} when the
    deployment does not import it, e.g. the embedded server)."""
    replies = await gather_replies(client, VARZ_SUBJECT, b"", expected=None, timeout=1.0)
    observed = {}
    for reply in replies:
        config = ((reply.get("data") or {}).get("jetstream") or {}).get("config") or {}
        if "sync_always" in config or "sync_interval" in config:
            name = str((reply.get("server") or {}).get("name", "?"))
            observed[name] = bool(config.get("sync_always", False))
    return observed


async def check_durability(
    connection: NatsConnection, *, mode: str, replicas: int, sync_configured: bool = False
) -> list[DurabilityFinding]:
    """Compare what the streams and servers actually are with the durability promise, after
    the streams are ensured: `mode` "refuse" raises `DurabilityError` on any finding, "warn"
    logs each one loudly and carries on. Returns the findings. `sync_configured`: the server
    runs on a configuration DutyLink wrote with `sync_interval: always` (the embedded one), so a
    server that does not show its sync setting is no cause to warn."""
    streams: dict[str, api.StreamInfo] = {}
    try:
        for name in stream_registry.DURABLE_STREAMS:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                # The audit stream is made just after, with the same nats.stream_replicas.
                streams[name] = await connection.js.stream_info(name)
        sync = await _observed_sync(connection.client)
    except STORE_FAILURES as error:
        raise translate(error) from error
    if not sync and sync_configured:
        log.info("durability.sync_configured", message="sync_interval: always, as written")
    elif not sync:
        log.warning(
            "durability.sync_unobservable",
            message="cannot see the servers' jetstream sync_interval (no VARZ import in "
            "this account, see deploy/nats/nats.conf): check it is 'always' on every node",
        )
    findings = durability_findings(streams, sync, replicas=replicas)
    if findings and mode == "refuse":
        raise DurabilityError(
            "JetStream cannot keep acknowledged events durable: "
            + "; ".join(f"{f.where}: {f.problem}" for f in findings)
            + ' (fix the settings, or set nats.durability = "warn" to serve anyway)'
        )
    for finding in findings:
        log.warning(
            "durability.at_risk",
            where=finding.where,
            problem=finding.problem,
            message="serving anyway (nats.durability = warn): acknowledged events may be lost",
        )
    if not findings:
        log.info("durability.ok", streams=sorted(streams), sync_always=sorted(sync))
    return findings
