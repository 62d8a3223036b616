"""The gateway's JetStream edge: streams, publishing, durable subscriptions and dead letters.

All names come from `gateway.core.subjects`. Errors are translated into three kinds the servicers
map onto gRPC codes: the store is unavailable (retry with the same event id), the store is full
(no eviction of accepted events: new ones are refused), or it rejected the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from dutylink.v1 import event_pb2
from gateway.core import envelope, subjects
from gateway.core import streams as stream_registry
from gateway.core.settings import Config, ConfigError
from gateway.store.nats_auth import split_servers as split_servers  # its old home, still imported

DAY = stream_registry.DAY
log = structlog.get_logger("dutylink.nats")
# The system account's per-server VARZ, imported into the gateway's account under this subject
# by deploy/nats/nats.conf (and gateway.testkit.cluster): how the gateway sees each node's sync setting.
VARZ_SUBJECT = "dutylink.nats.varz"
DURABILITY_MODES = ("refuse", "warn")
# Fewer than 3 replicas on a cluster: one node's lost disk loses acknowledged events.
CLUSTER_MIN_REPLICAS = 3
# Reading a stream through a consumer: no message for this long means JetStream stopped sending.
READ_IDLE_SECONDS = 10.0
# Pipelined publishing hands nats-py's flusher what is pending after this many messages.
FLUSH_EVERY = 64


class StoreError(Exception):
    """JetStream could not store or deliver a message."""


class StoreUnavailableError(StoreError):
    """No answer from JetStream (disconnected, timed out, no quorum): the outcome is unknown."""


class StoreFullError(StoreError):
    """The stream reached its limits; it refuses new messages rather than evict old ones."""


class StoreRejectedError(StoreError):
    """JetStream refused the message for a reason retrying will not fix."""


class DurabilityError(StoreError):
    """The streams or servers found cannot keep "acknowledged means durable" (nats.durability
    = "refuse"): fix the NATS or stream settings named in the message."""


class StoreDamagedError(StoreError):
    """The event stream no longer holds what it acknowledged, by the audit log's account (or
    the audit log itself is damaged): the message names the first thing missing."""


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


@dataclass(frozen=True)
class Stored:
    """JetStream's acknowledgement of one stored event."""

    sequence: int
    duplicate: bool
    # A duplicate id whose content differs from the original's (stored at `sequence`, kept):
    # the digests of both contents (gateway.core.envelope.content_digest).
    conflict: bool = False
    content_digest: bytes = b""
    stored_content_digest: bytes = b""


@dataclass(frozen=True)
class DeadLetter:
    """An event a subscription gave up on, as kept in the dead-letter stream."""

    sequence: int
    agency: str
    subscription: str
    event_id: str
    event_type: str
    source: str
    original_sequence: int
    deliveries: int
    reason: str

    @classmethod
    def from_stored(cls, raw: api.RawStreamMsg) -> DeadLetter:
        headers = raw.headers or {}
        _, _, agency, subscription = (raw.subject or "").split(".", 3)
        return cls(
            sequence=raw.seq or 0,
            agency=agency,
            subscription=subscription,
            event_id=headers.get("ce-id", ""),
            event_type=headers.get("ce-type", ""),
            source=headers.get("ce-source", ""),
            original_sequence=int(headers.get("Dutylink-Original-Sequence", "0")),
            deliveries=int(headers.get("Dutylink-Deliveries", "0")),
            reason=headers.get("Dutylink-Reason", ""),
        )


def _api_error(code: int | None, description: str | None) -> StoreError:
    text = (description or "").lower()
    # A full stream answers 503 too ("maximum bytes exceeded"): look at the text first.
    if ("maximum" in text and "exceeded" in text) or "insufficient resources" in text:
        return StoreFullError(f"event stream is full: {description}")
    if code == 503:
        return StoreUnavailableError(f"JetStream unavailable: {description}")
    if "in process" in text:
        # "duplicate message id is in process": the same id's earlier try is still being
        # replicated (e.g. it timed out during a leader change). Its outcome is not known yet:
        # retrying, not refusing, is what keeps a stored event from being reported as refused.
        return StoreUnavailableError(f"JetStream is still storing an earlier try: {description}")
    return StoreRejectedError(f"JetStream refused the event: {description}")


def _translate(error: BaseException) -> StoreError:
    if isinstance(error, StoreError):
        return error
    if isinstance(error, nats.js.errors.APIError):
        return _api_error(error.code, error.description)
    if isinstance(error, nats.errors.TimeoutError | asyncio.TimeoutError):
        return StoreUnavailableError("JetStream did not acknowledge in time; outcome unknown")
    return StoreUnavailableError(f"JetStream unreachable: {type(error).__name__}: {error}")


_STORE_FAILURES = (nats.errors.Error, asyncio.TimeoutError, OSError)
T = TypeVar("T")


async def _tries(operation: Callable[[], Awaitable[T]], attempts: int) -> T:
    """`operation`, tried again while NATS fails (0.2 s, 0.4 s, ... apart), at most `attempts`
    times; the last failure raised as a StoreError."""
    for attempt in range(1, attempts):
        try:
            return await operation()
        except _STORE_FAILURES:
            await asyncio.sleep(0.2 * attempt)
    try:
        return await operation()
    except _STORE_FAILURES as error:
        raise _translate(error) from error


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


# --- the audit log as the event store's witness (see gateway.audit.witness) -------------------


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


# Message gets in flight at once when reading the events without a consumer: one round trip
# each, so they overlap. Measured on 10 000 1 KB events on loopback (a loaded 2-core machine):
# ~1 900 events/s one at a time, ~4 000/s with 64 in flight (16 or 256: no better); an ordered
# consumer, ~6 700/s.
EVENT_GETS_IN_FLIGHT = 64


async def _event_digests_by_gets(js: JetStreamContext, first: int, last: int) -> dict[int, bytes]:
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
                digests[sequence] = hashlib.sha256(raw.data or b"").digest()
    return digests


async def event_digests(
    js: JetStreamContext,
    state: EventsState,
    *,
    start: int,
    wanted: Iterable[int] = (),
    gets_only: bool = False,
) -> dict[int, bytes]:
    """SHA-256 of the stored bytes of every event from stream sequence `start` to the last (on
    the event subjects: a replayed dead letter is a copy, not an accepted event), and of each
    `wanted` sequence before `start`; a sequence that holds nothing is left out. `gets_only`:
    one message get per event instead of an ordered consumer, for a user that may not create
    consumers (gateway.store.nats_auth.WITNESS)."""
    digests: dict[int, bytes] = {}
    for sequence in sorted(s for s in set(wanted) if s < start):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            raw = await js.get_msg(subjects.EVENTS_STREAM, seq=sequence)
            digests[sequence] = hashlib.sha256(raw.data or b"").digest()
    if start > state.last_sequence:
        return digests
    events = f"{subjects.EVENTS_PREFIX}.>"
    if gets_only:
        digests.update(await _event_digests_by_gets(js, max(start, 1), state.last_sequence))
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
            digests[meta.sequence.stream] = hashlib.sha256(message.data or b"").digest()
            if meta.num_pending == 0 or meta.sequence.stream >= state.last_sequence:
                return digests
    finally:
        with contextlib.suppress(*_STORE_FAILURES):
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


def stream_config(spec: stream_registry.StreamSpec) -> api.StreamConfig:
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
        with contextlib.suppress(*_STORE_FAILURES):
            await subscription.unsubscribe()
    return replies


class NatsErrorLog:
    """nats-py's error callback, as log lines a person can read: one line instead of a
    traceback, and an error that repeats while the client keeps reconnecting (every 0.5 s
    against an unreachable server) is said once, then again at most every `repeat_seconds`
    with how often it happened meanwhile."""

    def __init__(self, repeat_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._repeat = repeat_seconds
        self._clock = clock
        self._last = ""
        self._said_at = 0.0
        self._unsaid = 0

    async def report(self, error: Exception) -> None:
        """The callback (nats-py wants a coroutine function, not a callable object)."""
        text = f"{type(error).__name__}: {error}"
        now = self._clock()
        if text == self._last and now - self._said_at < self._repeat:
            self._unsaid += 1
            return
        repeats = {"repeated": self._unsaid} if text == self._last and self._unsaid else {}
        self._last, self._said_at, self._unsaid = text, now, 0
        log.warning("nats.error", error=text, **repeats)

    def forget(self) -> None:
        """The connection is back: the next error is news again."""
        self._last, self._unsaid = "", 0


class _Batch:
    """The acknowledgements one pipelined publish awaits: one outcome per message, in order,
    and a future resolved once every message sent has its outcome."""

    __slots__ = ("done", "missing", "outcomes", "sealed", "tokens")

    def __init__(self, count: int) -> None:
        self.outcomes: list[Stored | StoreError | None] = [None] * count
        self.tokens: list[str] = []
        self.missing = 0
        self.sealed = False  # every message sent (or failed to send): `done` may resolve
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self, index: int, outcome: Stored | StoreError) -> None:
        self.outcomes[index] = outcome
        self.missing -= 1
        if self.sealed and self.missing == 0 and not self.done.done():
            self.done.set_result(None)

    def seal(self) -> None:
        self.sealed = True
        if self.missing == 0 and not self.done.done():
            self.done.set_result(None)


class _AckInbox:
    """Pipelined publishing: every publish names a reply subject under one wildcard inbox, and
    JetStream's acknowledgement (or error) settles that message's outcome in its batch; no
    future, task or timer per message. (nats-py's own publish_async loses JetStream's error
    replies: its reply handler raises instead of failing the future, so a refused event would
    look like a time-out.)"""

    def __init__(self, client: NatsClient) -> None:
        self._client = client
        self._prefix = client.new_inbox()
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._tokens = itertools.count()

    async def start(self) -> None:
        await self._client.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def publish(
        self, batch: _Batch, index: int, subject: str, data: bytes, headers: dict[str, str]
    ) -> None:
        """Send message `index` of `batch`; its acknowledgement settles it later."""
        token = str(next(self._tokens))
        self._waiting[token] = (batch, index)
        batch.tokens.append(token)
        batch.missing += 1
        try:
            await self._client.publish(
                subject, data, reply=f"{self._prefix}.{token}", headers=headers
            )
        except BaseException:
            del self._waiting[token]
            batch.missing -= 1
            raise

    def forget(self, batch: _Batch) -> None:
        """Stop waiting for the batch's missing acknowledgements (timed out or cancelled)."""
        for token in batch.tokens:
            self._waiting.pop(token, None)

    async def _on_reply(self, message: Msg) -> None:
        waiting = self._waiting.pop(message.subject.rsplit(".", 1)[-1], None)
        if waiting is None:
            return  # the publisher gave up waiting; its outcome was reported as unknown
        batch, index = waiting
        if message.headers and message.headers.get("Status") == "503":
            batch.settle(index, StoreUnavailableError("no JetStream stream answered"))
            return
        try:
            reply = json.loads(message.data)
        except ValueError:
            batch.settle(index, StoreUnavailableError("unreadable acknowledgement from JetStream"))
            return
        if "error" in reply:
            error = reply["error"]
            batch.settle(index, _api_error(error.get("code"), error.get("description")))
        else:
            batch.settle(
                index, Stored(sequence=int(reply["seq"]), duplicate=bool(reply.get("duplicate")))
            )


def _pub_ack(ack: api.PubAck) -> Stored:
    return Stored(sequence=ack.seq, duplicate=bool(ack.duplicate))


class DurableSubscription:
    """One open session on an agency's durable consumer."""

    def __init__(self, pull: JetStreamContext.PullSubscription, pending: int) -> None:
        self._pull = pull
        self.pending = pending

    async def fetch(self, count: int, wait: float) -> list[Msg]:
        """Up to `count` messages, waiting at most `wait` seconds; [] when none arrived."""
        try:
            return await self._pull.fetch(count, timeout=wait)
        except nats.errors.TimeoutError:
            return []
        except nats.js.errors.APIError as error:
            # E.g. 409/503 while the consumer's leader changes: transient, the caller retries.
            reason = error.description or type(error).__name__
            raise StoreUnavailableError(f"pull failed ({error.code}): {reason}") from error
        except _STORE_FAILURES as error:
            raise _translate(error) from error

    async def close(self) -> None:
        # If the connection is gone, the server forgets the pull requests by itself.
        with contextlib.suppress(*_STORE_FAILURES):
            await self._pull.unsubscribe()


class EventStore:
    """Connects to NATS, keeps the streams in shape, and moves events in and out.

    Built before it connects, so the gRPC services can be registered up front; until
    `connect` succeeds every operation fails as unavailable."""

    def __init__(
        self,
        config: Config,
        *,
        on_disconnected: Callable[[], Awaitable[None]] | None = None,
        on_reconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._config = config
        self._on_disconnected = on_disconnected
        self._on_reconnected = on_reconnected
        self._errors = NatsErrorLog()
        self._client: NatsClient | None = None
        self._js_context: JetStreamContext | None = None
        self._acks: _AckInbox | None = None

    async def connect(self, url: str) -> None:
        async def ignore() -> None:
            return None

        async def reconnected() -> None:
            self._errors.forget()
            if self._on_reconnected is not None:
                await self._on_reconnected()

        servers, credentials = split_servers(url)
        try:
            self._client = await nats.connect(
                servers,
                **credentials,
                name=f"dutylink-gateway-{self._config.gateway.gateway_id}",
                connect_timeout=self._config.nats.connect_timeout_seconds,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                disconnected_cb=self._on_disconnected or ignore,
                reconnected_cb=reconnected,
                error_cb=self._errors.report,
            )
        except _STORE_FAILURES as error:
            raise _translate(error) from error
        self._js_context = self._client.jetstream()
        self._acks = _AckInbox(self._client)
        await self._acks.start()

    @property
    def _js(self) -> JetStreamContext:
        if self._js_context is None:
            raise StoreUnavailableError("not connected to NATS yet")
        return self._js_context

    @property
    def client(self) -> NatsClient:
        """The NATS connection, for the other JetStream users of this gateway (the audit log)."""
        if self._client is None:
            raise StoreUnavailableError("not connected to NATS yet")
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected)

    async def ensure_streams(self) -> None:
        """Create the streams, or bring their settings up to date: safe at every start."""
        nats_settings = self._config.nats
        limits = stream_registry.StreamLimits(
            replicas=nats_settings.stream_replicas,
            events_max_age_days=nats_settings.events_max_age_days,
            events_max_bytes=nats_settings.events_max_bytes,
            deadletter_max_age_days=nats_settings.deadletter_max_age_days,
            ack_record_seconds=self._config.subscriptions.ack_record_seconds,
            duplicate_window_seconds=nats_settings.duplicate_window_seconds,
            max_msg_size=self._config.gateway.max_message_bytes,
        )
        for spec in stream_registry.event_stream_specs(limits):
            await self._ensure_stream(stream_config(spec))

    async def _observed_sync(self) -> dict[str, bool]:
        """Each answering server's `sync_interval: always`, from the VARZ import ({} when the
        deployment does not import it, e.g. the embedded server)."""
        replies = await gather_replies(self.client, VARZ_SUBJECT, b"", expected=None, timeout=1.0)
        observed = {}
        for reply in replies:
            config = ((reply.get("data") or {}).get("jetstream") or {}).get("config") or {}
            if "sync_always" in config or "sync_interval" in config:
                name = str((reply.get("server") or {}).get("name", "?"))
                observed[name] = bool(config.get("sync_always", False))
        return observed

    async def check_durability(self, *, sync_configured: bool = False) -> list[DurabilityFinding]:
        """Compare what the streams and servers actually are with the durability promise, after
        `ensure_streams`: `nats.durability = "refuse"` raises `DurabilityError` on any finding,
        "warn" logs each one loudly and carries on. Returns the findings. `sync_configured`:
        the server runs on a configuration DutyLink wrote with `sync_interval: always` (the
        embedded one), so a server that does not show its sync setting is no cause to warn."""
        mode = self._config.nats.durability
        if mode not in DURABILITY_MODES:
            expected = ", ".join(DURABILITY_MODES)
            raise ConfigError(f"nats.durability: expected one of {expected}, got {mode!r}")
        names = stream_registry.DURABLE_STREAMS
        streams: dict[str, api.StreamInfo] = {}
        try:
            for name in names:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    # The audit stream is made just after, with the same nats.stream_replicas.
                    streams[name] = await self._js.stream_info(name)
            sync = await self._observed_sync()
        except _STORE_FAILURES as error:
            raise _translate(error) from error
        if not sync and sync_configured:
            log.info("durability.sync_configured", message="sync_interval: always, as written")
        elif not sync:
            log.warning(
                "durability.sync_unobservable",
                message="cannot see the servers' jetstream sync_interval (no VARZ import in "
                "this account, see deploy/nats/nats.conf): check it is 'always' on every node",
            )
        findings = durability_findings(streams, sync, replicas=self._config.nats.stream_replicas)
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

    async def record_grant(self, grant_id: str, data: bytes) -> Stored:
        """Keep a break-glass declaration (never deleted: it is listed for review)."""
        try:
            ack = await self._js.publish(
                f"{subjects.GRANTS_PREFIX}.{grant_id}",
                data,
                stream=subjects.GRANTS_STREAM,
                headers={"Nats-Msg-Id": grant_id},
            )
        except _STORE_FAILURES as error:
            raise _translate(error) from error
        return _pub_ack(ack)

    async def follow_grants(self, on_grant: Callable[[bytes], None]) -> None:
        """Replay every recorded declaration, then keep delivering new ones as they come."""

        async def deliver(message: Msg) -> None:
            on_grant(message.data)

        try:
            await self._js.subscribe(
                f"{subjects.GRANTS_PREFIX}.>",
                stream=subjects.GRANTS_STREAM,
                cb=deliver,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL,
            )
        except _STORE_FAILURES as error:
            raise _translate(error) from error

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        try:
            await ensure_stream(self._js, config)
        except _STORE_FAILURES as error:
            raise _translate(error) from error

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> Stored:
        (outcome,) = await self.publish_pipelined([(subject, data, headers)], timeout)
        if isinstance(outcome, StoreError):
            raise outcome
        return outcome

    async def publish_pipelined(
        self,
        messages: Sequence[tuple[str, bytes, dict[str, str]]],
        timeout: float,
        *,
        stream: str = subjects.EVENTS_STREAM,
    ) -> list[Stored | StoreError]:
        """Sends every message without waiting for acknowledgements in between (they leave in
        order on one connection), then collects each acknowledgement or error, in order; a
        message not acknowledged within `timeout` of the last send is unavailable (outcome
        unknown)."""
        acks = self._acks
        if acks is None:
            raise StoreUnavailableError("not connected to NATS yet")
        expected = {"Nats-Expected-Stream": stream}
        batch = _Batch(len(messages))
        try:
            for index, (subject, data, headers) in enumerate(messages):
                try:
                    await acks.publish(batch, index, subject, data, {**headers, **expected})
                except _STORE_FAILURES as error:
                    batch.outcomes[index] = _translate(error)
                if index % FLUSH_EVERY == FLUSH_EVERY - 1:
                    # Let nats-py's flusher send what is pending, so JetStream stores (and
                    # fsyncs) the first messages while the rest are still being encoded.
                    await asyncio.sleep(0)
            batch.seal()
            if not batch.done.done():
                await asyncio.wait((batch.done,), timeout=timeout)
        finally:
            if batch.missing:
                acks.forget(batch)  # acknowledgements still missing are no longer awaited
        return [
            StoreUnavailableError("JetStream did not acknowledge in time; outcome unknown")
            if outcome is None
            else outcome
            for outcome in await self._compared(stream, messages, batch.outcomes)
        ]

    async def _compared(
        self,
        stream: str,
        messages: Sequence[tuple[str, bytes, dict[str, str]]],
        outcomes: Sequence[Stored | StoreError | None],
    ) -> list[Stored | StoreError | None]:
        """Each duplicate of a message that carries a content digest, compared with the stored
        original's: a retry stays a duplicate, other content is a conflict. One get per
        duplicate, EVENT_GETS_IN_FLIGHT at a time."""
        compared = list(outcomes)
        wanted = [
            (index, bytes.fromhex(headers[envelope.CONTENT_DIGEST_HEADER]), outcome.sequence)
            for index, ((_, _, headers), outcome) in enumerate(zip(messages, outcomes, strict=True))
            if isinstance(outcome, Stored)
            and outcome.duplicate
            and envelope.CONTENT_DIGEST_HEADER in headers
        ]
        found: list[bytes | StoreError | None] = []
        for low in range(0, len(wanted), EVENT_GETS_IN_FLIGHT):  # a retried batch: all of them
            found += await asyncio.gather(
                *(
                    self._stored_content_digest(stream, sequence)
                    for _, _, sequence in wanted[low : low + EVENT_GETS_IN_FLIGHT]
                )
            )
        for (index, digest, sequence), stored in zip(wanted, found, strict=True):
            if isinstance(stored, StoreError):
                compared[index] = stored
            elif stored is not None:
                compared[index] = Stored(sequence, True, stored != digest, digest, stored)
        return compared

    async def _stored_content_digest(self, stream: str, sequence: int) -> bytes | StoreError | None:
        """The content digest of the event stored at `sequence` (from its header, or computed
        from its bytes when it was stored without one); None when it is no longer there."""
        try:
            raw = await self._js.get_msg(stream, seq=sequence)
        except nats.js.errors.NotFoundError:
            log.warning("publish.original_missing", sequence=sequence)
            return None
        except _STORE_FAILURES as error:
            return StoreUnavailableError(
                f"the stored original at sequence {sequence} could not be read ({error}); "
                "outcome unknown"
            )
        try:
            if digest := (raw.headers or {}).get(envelope.CONTENT_DIGEST_HEADER):
                return bytes.fromhex(digest)
            return envelope.content_digest(event_pb2.Event.FromString(raw.data or b""))
        except (ValueError, DecodeError):  # not an event as the gateway stores them
            return None

    async def open_subscription(
        self, agency: str, name: str, filter_subjects: Sequence[str], max_in_flight: int
    ) -> DurableSubscription:
        """Create or update the agency's durable consumer, then open a pull session on it."""
        settings = self._config.subscriptions
        consumer = subjects.consumer_name(agency, name)
        config = api.ConsumerConfig(
            name=consumer,
            durable_name=consumer,
            description=f"subscription '{name}' of agency '{agency}'",
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait_seconds,
            # The gateway counts deliveries itself and dead-letters; JetStream never gives up.
            max_deliver=-1,
            max_ack_pending=max(settings.max_in_flight, max_in_flight),
            filter_subjects=[*filter_subjects, subjects.redeliver_subject(agency, name)],
            num_replicas=self._config.nats.stream_replicas,
        )
        try:
            info = await self._js.add_consumer(subjects.EVENTS_STREAM, config)
            pull = await self._js.pull_subscribe_bind(consumer, stream=subjects.EVENTS_STREAM)
        except _STORE_FAILURES as error:
            raise _translate(error) from error
        return DurableSubscription(pull, (info.num_pending or 0) + (info.num_ack_pending or 0))

    async def ack(self, message: Msg, *, attempts: int = 3, timeout: float = 2.0) -> None:
        """Ack `message` and wait until JetStream answers (a double ack). An ack is idempotent
        and JetStream answers a repeated one too, so an ack whose answer was lost (a timeout
        while the consumer's leader changes) is sent again: the answer, not the first send,
        tells whether the event can come back. Raises StoreUnavailableError if none came."""
        await _tries(lambda: self.client.request(message.reply, b"+ACK", timeout=timeout), attempts)

    async def record_confirmed_ack(self, consumer: str, stream_sequence: int) -> None:
        """Remember, for every replica, that the ack of this event on `consumer` was confirmed
        to the subscriber (JetStream answers an ack before replicating it: see `ack_confirmed`)."""
        try:
            await self._js.publish(
                subjects.acked_subject(consumer, stream_sequence), b"", stream=subjects.ACKED_STREAM
            )
        except _STORE_FAILURES as error:
            raise _translate(error) from error

    async def ack_confirmed(self, consumer: str, stream_sequence: int, attempts: int = 5) -> bool:
        """Whether any replica confirmed an ack of this event on `consumer` (within
        `subscriptions.ack_record_seconds`). Asked of the stream's leader, not a direct get from
        a replica that may lag: the record was acknowledged by a quorum before the confirmation.
        Tried again while the stream elects a leader (the redeliveries that need this answer
        come just after a leader change); StoreError if it never answers."""
        subject = subjects.acked_subject(consumer, stream_sequence)

        async def look_up() -> bool:
            try:
                await self._js.get_last_msg(subjects.ACKED_STREAM, subject)
            except nats.js.errors.NotFoundError:
                return False
            return True

        return await _tries(look_up, attempts)

    async def dead_letter(
        self, message: Msg, agency: str, name: str, *, deliveries: int, reason: str
    ) -> None:
        """Keep `message` on the subscription's dead-letter subject, then stop its delivery.
        `deliveries` is how often the subscriber was given it."""
        meta = message.metadata
        headers = {
            "Nats-Msg-Id": f"{subjects.consumer_name(agency, name)}:{meta.sequence.stream}",
            "Dutylink-Original-Subject": message.subject,
            "Dutylink-Original-Sequence": str(meta.sequence.stream),
            "Dutylink-Deliveries": str(deliveries),
            "Dutylink-Reason": reason,
        }
        for key, value in (message.headers or {}).items():
            if key.startswith("ce-"):
                headers[key] = value
        try:
            await self._js.publish(
                subjects.deadletter_subject(agency, name),
                message.data,
                stream=subjects.DEADLETTER_STREAM,
                headers=headers,
            )
            await message.term()
        except _STORE_FAILURES as error:
            raise _translate(error) from error

    async def dead_letters(self, agency: str = "*", subscription: str = "*") -> list[DeadLetter]:
        """Every dead letter of the matching subscriptions, oldest first (kept, never deleted:
        replaying one copies it back, so the record of what failed stays)."""
        wanted = subjects.deadletter_subject(agency, subscription)
        try:
            return [
                DeadLetter.from_stored(raw)
                async for raw in stored_messages(self._js, subjects.DEADLETTER_STREAM, wanted)
            ]
        except _STORE_FAILURES as error:
            raise _translate(error) from error

    async def dead_letter_at(self, sequence: int) -> DeadLetter:
        """The dead letter stored at `sequence`; StoreRejectedError if there is none."""
        try:
            raw = await self._js.get_msg(subjects.DEADLETTER_STREAM, seq=sequence)
        except nats.js.errors.NotFoundError:
            raise StoreRejectedError(f"no dead letter with sequence {sequence}") from None
        except _STORE_FAILURES as error:
            raise _translate(error) from error
        return DeadLetter.from_stored(raw)

    async def replay_dead_letter(self, sequence: int) -> tuple[DeadLetter, Stored]:
        """Deliver a dead letter again, to its own subscription only. Replaying the same dead
        letter twice within the duplicate window stores it once."""
        try:
            raw = await self._js.get_msg(subjects.DEADLETTER_STREAM, seq=sequence)
        except nats.js.errors.NotFoundError:
            raise StoreRejectedError(f"no dead letter with sequence {sequence}") from None
        except _STORE_FAILURES as error:
            raise _translate(error) from error
        letter = DeadLetter.from_stored(raw)
        headers = {k: v for k, v in (raw.headers or {}).items() if k.startswith("ce-")}
        headers["Nats-Msg-Id"] = f"replay:{sequence}"
        headers["Dutylink-Replay-Of"] = str(sequence)
        subject = subjects.redeliver_subject(letter.agency, letter.subscription)
        try:
            ack = await self._js.publish(
                subject, raw.data or b"", stream=subjects.EVENTS_STREAM, headers=headers
            )
        except _STORE_FAILURES as error:
            raise _translate(error) from error
        return letter, _pub_ack(ack)

    async def close(self) -> None:
        """Drain: let in-flight publishes and acks finish, then close."""
        if self._client is None or self._client.is_closed:
            return
        try:
            await self._client.drain()
        except _STORE_FAILURES:
            # Reconnecting (NATS just restarted) or already gone: nothing left to drain, and a
            # failing close must not turn the gateway's shutdown into an error.
            with contextlib.suppress(*_STORE_FAILURES):
                await self._client.close()
