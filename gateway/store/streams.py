"""Streams on JetStream: each registry entry (gateway.core.streams) as a stream configuration,
created or brought up to date, and read back message by message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.js.errors
from nats.js import JetStreamContext, api

from gateway.core.streams import StreamSpec


def stream_config(spec: StreamSpec) -> api.StreamConfig:
    """The JetStream configuration for one registry entry."""
    return api.StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        storage=api.StorageType(spec.storage),
        retention=api.RetentionPolicy(spec.retention),
        discard=api.DiscardPolicy(spec.discard),
        num_replicas=spec.replicas,
        max_age=spec.max_age_seconds,
        max_bytes=spec.max_bytes,
        duplicate_window=spec.duplicate_window_seconds,
        max_msg_size=spec.max_msg_size,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        deny_delete=spec.deny_delete,
        deny_purge=spec.deny_purge,
        allow_rollup_hdrs=spec.allow_rollup,
    )


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig, attempts: int = 5) -> None:
    """Create the stream, or update it in place when it exists with other settings (e.g. a new
    retention). On a cluster that has just formed, creation can fail for a moment (no peers
    current yet: refused as a bad request, and the update then finds no stream): tried again
    a few times, a little later each, before the error is raised."""
    for attempt in range(1, attempts + 1):
        try:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await js.update_stream(config)
            return
        except (nats.js.errors.NotFoundError, nats.js.errors.ServiceUnavailableError):
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5 * attempt)


async def stored_messages(
    js: JetStreamContext, stream: str, subject: str, *, start: int = 1
) -> AsyncIterator[api.RawStreamMsg]:
    """Every message of `stream` on `subject` (wildcards allowed) from stream sequence `start`,
    oldest first, read one by one with direct gets (no consumer to create or clean up). Ends
    at the last stored message."""
    sequence = start
    while True:
        try:
            raw = await js.get_msg(stream, seq=sequence, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return
        yield raw
        sequence = (raw.seq or sequence) + 1
