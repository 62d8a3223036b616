"""Publishing events to JetStream (gateway.core.ports.EventLog): pipelined, with every
acknowledgement or error collected in order, and each duplicate compared with its stored
original (same content: a retry; other content: a conflict)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence

import nats.js.errors
import structlog
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from dutylink.v1 import event_pb2
from gateway.core import envelope, subjects
from gateway.core.ports import Outgoing, Stored, StoreError, StoreUnavailableError
from gateway.store.connection import NatsConnection
from gateway.store.errors import STORE_FAILURES, api_error, translate

log = structlog.get_logger("dutylink.nats")
# Pipelined publishing hands nats-py's flusher what is pending after this many messages.
FLUSH_EVERY = 64
# Message gets in flight at once when reading events without a consumer: one round trip
# each, so they overlap. Measured on 10 000 1 KB events on loopback (a loaded 2-core machine):
# ~1 900 events/s one at a time, ~4 000/s with 64 in flight (16 or 256: no better); an ordered
# consumer, ~6 700/s.
EVENT_GETS_IN_FLIGHT = 64


def stored(ack: api.PubAck) -> Stored:
    """JetStream's acknowledgement of a publish as the port's value."""
    return Stored(sequence=ack.seq, duplicate=bool(ack.duplicate))


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
            batch.settle(index, api_error(error.get("code"), error.get("description")))
        else:
            batch.settle(
                index, Stored(sequence=int(reply["seq"]), duplicate=bool(reply.get("duplicate")))
            )


class JetStreamEvents:
    """The event log on JetStream. `start` once connected (it opens the acknowledgement inbox)."""

    def __init__(self, connection: NatsConnection) -> None:
        self._connection = connection
        self._acks: _AckInbox | None = None

    async def start(self) -> None:
        self._acks = _AckInbox(self._connection.client)
        await self._acks.start()

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> Stored:
        (outcome,) = await self.publish_pipelined([(subject, data, headers)], timeout)
        if isinstance(outcome, StoreError):
            raise outcome
        return outcome

    async def publish_pipelined(
        self, messages: Sequence[Outgoing], timeout: float, *, stream: str = subjects.EVENTS_STREAM
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
                except STORE_FAILURES as error:
                    batch.outcomes[index] = translate(error)
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
        messages: Sequence[Outgoing],
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
        for (index, digest, sequence), original in zip(wanted, found, strict=True):
            if isinstance(original, StoreError):
                compared[index] = original
            elif original is not None:
                compared[index] = Stored(sequence, True, original != digest, digest, original)
        return compared

    async def _stored_content_digest(self, stream: str, sequence: int) -> bytes | StoreError | None:
        """The content digest of the event stored at `sequence` (from its header, or computed
        from its bytes when it was stored without one); None when it is no longer there."""
        try:
            raw = await self._connection.js.get_msg(stream, seq=sequence)
        except nats.js.errors.NotFoundError:
            log.warning("publish.original_missing", sequence=sequence)
            return None
        except STORE_FAILURES as error:
            return StoreUnavailableError(
                f"the stored original at sequence {sequence} could not be read ({error}); "
                "outcome unknown"
            )
        return original_digest(raw.headers or {}, raw.data or b"")


def original_digest(headers: dict[str, str], data: bytes) -> bytes | None:
    """A stored event's content digest: from its header, or computed from its bytes when it was
    stored without one (by a gateway older than the header, before crypto profiles: SHA-256);
    None when the bytes are not an event as the gateway stores them."""
    try:
        if digest := headers.get(envelope.CONTENT_DIGEST_HEADER):
            return bytes.fromhex(digest)
        return envelope.content_digest(event_pb2.Event.FromString(data))
    except (ValueError, DecodeError):
        return None
