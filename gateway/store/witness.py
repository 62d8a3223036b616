"""The event stream as the audit log witnesses it (see gateway.audit.witness): its sequence range,
the digest of each stored event, and where the last start-up check ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext, api

from gateway.core import subjects
from gateway.core.crypto import HashSuite
from gateway.store.errors import STORE_FAILURES
from gateway.store.events import EVENT_GETS_IN_FLIGHT

# Reading a stream through a consumer: no message for this long means JetStream stopped sending.
READ_IDLE_SECONDS = 10.0


@dataclass(frozen=True)
class EventsState:
    """The event stream's sequence range and interior gaps (no delete is allowed on it, so
    gaps are lost messages)."""

    first_sequence: int
    last_sequence: int
    messages: int
    deleted: int
    max_age: float  # seconds an event is kept (0: for ever)


async def events_state(js: JetStreamContext) -> EventsState:
    info = await js.stream_info(subjects.EVENTS_STREAM)
    state = info.state
    return EventsState(
        state.first_seq or 0,
        state.last_seq or 0,
        state.messages or 0,
        state.num_deleted or 0,
        float(info.config.max_age or 0.0),
    )


async def _event_digests_by_gets(
    js: JetStreamContext, first: int, last: int, hashing: HashSuite
) -> dict[int, bytes]:
    """`event_digests` from `first` to `last` by message gets of each sequence."""
    prefix = f"{subjects.EVENTS_PREFIX}."

    async def get(sequence: int) -> api.RawStreamMsg | None:
        try:
            return await js.get_msg(subjects.EVENTS_STREAM, seq=sequence)
        except nats.js.errors.NotFoundError:  # lost, or never stored (a failed publish)
            return None

    digests: dict[int, bytes] = {}
    for low in range(first, last + 1, EVENT_GETS_IN_FLIGHT):
        window = range(low, min(low + EVENT_GETS_IN_FLIGHT, last + 1))
        for sequence, raw in zip(window, await asyncio.gather(*map(get, window)), strict=True):
            if raw is not None and (raw.subject or "").startswith(prefix):
                digests[sequence] = hashing.digest(raw.data or b"")
    return digests


async def event_digests(
    js: JetStreamContext,
    state: EventsState,
    *,
    start: int,
    hashing: HashSuite,
    wanted: Iterable[int] = (),
    gets_only: bool = False,
) -> dict[int, bytes]:
    """The digest (the log's profile's hash: SHA-256 or SM3) of the stored bytes of every event from stream sequence `start` to the last (on
    the event subjects: a replayed dead letter is a copy, not an accepted event), and of each
    `wanted` sequence before `start`; a sequence that holds nothing is left out. `gets_only`:
    one message get per event instead of an ordered consumer, for a user that may not create
    consumers (gateway.store.nats_auth.WITNESS)."""
    digests: dict[int, bytes] = {}
    for sequence in sorted(s for s in set(wanted) if s < start):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            raw = await js.get_msg(subjects.EVENTS_STREAM, seq=sequence)
            digests[sequence] = hashing.digest(raw.data or b"")
    if start > state.last_sequence:
        return digests
    events = f"{subjects.EVENTS_PREFIX}.>"
    if gets_only:
        digests.update(
            await _event_digests_by_gets(js, max(start, 1), state.last_sequence, hashing)
        )
        return digests
    try:  # the first event from `start`: the stream may hold none on these subjects
        first = await js.get_msg(
            subjects.EVENTS_STREAM, seq=max(start, 1), subject=events, next=True
        )
    except nats.js.errors.NotFoundError:
        return digests
    # Then the rest in one flow (an ordered consumer), not one request per message.
    reading = await js.subscribe(
        events,
        stream=subjects.EVENTS_STREAM,
        ordered_consumer=True,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first.seq
        ),
    )
    try:
        while True:
            message = await reading.next_msg(timeout=READ_IDLE_SECONDS)
            meta = message.metadata
            digests[meta.sequence.stream] = hashing.digest(message.data or b"")
            if meta.num_pending == 0 or meta.sequence.stream >= state.last_sequence:
                return digests
    finally:
        with contextlib.suppress(*STORE_FAILURES):
            await reading.unsubscribe()


async def read_witness_mark(js: JetStreamContext, gateway_id: str) -> dict[str, int] | None:
    """Where the last start-up check of this gateway's log against the event stream ended."""
    try:
        raw = await js.get_last_msg(subjects.AUDIT_STREAM, subjects.audit_witnessed(gateway_id))
    except nats.js.errors.NotFoundError:
        return None
    try:
        mark = json.loads(raw.data or b"")
    except ValueError:
        return None
    if not isinstance(mark, dict) or not all(isinstance(v, int) for v in mark.values()):
        return None
    return mark


async def write_witness_mark(js: JetStreamContext, gateway_id: str, mark: dict[str, int]) -> None:
    await js.publish(
        subjects.audit_witnessed(gateway_id),
        json.dumps(mark, sort_keys=True).encode(),
        stream=subjects.AUDIT_STREAM,
    )
