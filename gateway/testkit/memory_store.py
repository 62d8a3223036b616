"""An in-memory store with the JetStream store's behaviour (gateway.core.ports), for tests of the
code above it that need no server: events deduplicated by message id (a different content under
the same id is a conflict), durable subscriptions that deliver new events until acked, dead
letters kept and replayed to their subscription only, and break-glass grants followed.

    store = MemoryStore()
    stored = await store.publish("dutylink.events.x", data, {"Nats-Msg-Id": "e1"}, timeout=1)

tests/test_store_contract.py runs one contract against both, so they do not drift apart. Not
modelled: limits (full streams), time (ack waits, duplicate windows) and failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.core import envelope, subjects
from gateway.core.lanes import LANES_FIRST_TO_LAST, Lane
from gateway.core.ports import (
    MESSAGE_ID_HEADER,
    DeadLetter,
    DeadLetters,
    EventLog,
    Grants,
    Outgoing,
    Stored,
    StoreError,
    StoreRejectedError,
    StoreUnavailableError,
    Subscriptions,
)
from gateway.store.dead_letters import dead_letter_from, dead_letter_headers, replay_headers
from gateway.store.events import original_digest


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(wanted) == len(tokens)


@dataclass(frozen=True)
class MemoryMessage:
    """A delivered message (gateway.core.ports.Pulled) and where it is stored."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    stream_sequence: int
    deliveries: int


@dataclass
class _Stream:
    subjects: tuple[str, ...]
    messages: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)  # message id -> sequence

    def store(self, subject: str, data: bytes, headers: dict[str, str]) -> Stored:
        message_id = headers.get(MESSAGE_ID_HEADER)
        if message_id is not None and message_id in self.ids:
            return Stored(self.ids[message_id], duplicate=True)
        self.messages.append((subject, data, dict(headers)))
        if message_id is not None:
            self.ids[message_id] = len(self.messages)
        return Stored(len(self.messages), duplicate=False)


@dataclass
class _Consumer:
    filters: tuple[str, ...]
    next_sequence: int  # the first not yet delivered
    unacked: dict[int, int] = field(default_factory=dict)  # sequence -> deliveries


class MemorySubscription:
    """`consumers`: one per lane, the urgent lane's first (gateway.core.lanes)."""

    def __init__(self, store: MemoryStore, consumers: Sequence[_Consumer], pending: int) -> None:
        self._store = store
        self._consumers = consumers
        self.pending = pending

    async def fetch(self, count: int, wait: float) -> list[MemoryMessage]:
        """What is new for the subscription, urgent first (no waiting: in memory it is there or
        not)."""
        events = self._store.streams[subjects.EVENTS_STREAM].messages
        fetched = list[MemoryMessage]()
        for consumer in self._consumers:
            while consumer.next_sequence <= len(events) and len(fetched) < count:
                sequence = consumer.next_sequence
                consumer.next_sequence += 1
                subject, data, headers = events[sequence - 1]
                if any(subject_matches(f, subject) for f in consumer.filters):
                    consumer.unacked[sequence] = consumer.unacked.get(sequence, 0) + 1
                    deliveries = consumer.unacked[sequence]
                    fetched.append(MemoryMessage(subject, data, headers, sequence, deliveries))
        return fetched

    async def close(self) -> None:
        return None


class MemoryStore:
    """The event, dead-letter, grant and ack-record streams in lists."""

    def __init__(self) -> None:
        self.streams = {
            name: _Stream(prefixes)
            for name, prefixes in (
                (subjects.EVENTS_STREAM, (f"{subjects.EVENTS_PREFIX}.>", f"{subjects.REDELIVER_PREFIX}.>")),
                (subjects.DEADLETTER_STREAM, (f"{subjects.DEADLETTER_PREFIX}.>",)),
                (subjects.GRANTS_STREAM, (f"{subjects.GRANTS_PREFIX}.>",)),
                (subjects.ACKED_STREAM, (f"{subjects.ACKED_PREFIX}.>",)),
            )
        }  # fmt: skip
        self._consumers: dict[str, _Consumer] = {}
        self._grant_followers: list[Callable[[bytes], None]] = []

    def _stream(self, name: str, subject: str) -> _Stream:
        """The stream `name` if it takes `subject`: a subject of another stream is rejected,
        one of no stream goes unanswered (JetStream's "no responders")."""
        stream = self.streams[name]
        if any(subject_matches(pattern, subject) for pattern in stream.subjects):
            return stream
        if any(subject_matches(p, subject) for s in self.streams.values() for p in s.subjects):
            raise StoreRejectedError(f"{subject} is not a subject of {name}")
        raise StoreUnavailableError("no JetStream stream answered")

    # EventLog

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
        outcomes: list[Stored | StoreError] = []
        for subject, data, headers in messages:
            try:
                target = self._stream(stream, subject)
            except StoreError as error:
                outcomes.append(error)
                continue
            outcome = target.store(subject, data, headers)
            if outcome.duplicate and envelope.CONTENT_DIGEST_HEADER in headers:
                digest = bytes.fromhex(headers[envelope.CONTENT_DIGEST_HEADER])
                _, stored_data, stored_headers = target.messages[outcome.sequence - 1]
                original = original_digest(stored_headers, stored_data)
                if original is not None:
                    conflict = original != digest
                    outcome = Stored(outcome.sequence, True, conflict, digest, original)
            outcomes.append(outcome)
        return outcomes

    # Subscriptions

    async def open_subscription(
        self, agency: str, name: str, filter_subjects: Sequence[str], max_in_flight: int
    ) -> MemorySubscription:
        events = self.streams[subjects.EVENTS_STREAM].messages
        consumers, pending = [], 0
        for lane in LANES_FIRST_TO_LAST:
            key = subjects.consumer_name(agency, name, lane)
            filters = subjects.lane_filters(filter_subjects, lane)
            if lane is Lane.ROUTINE:
                filters.append(subjects.redeliver_subject(agency, name))
            consumer = self._consumers.get(key)
            if consumer is None:  # new events only, from now
                consumer = self._consumers[key] = _Consumer(tuple(filters), len(events) + 1)
            else:
                consumer.filters = tuple(filters)
                # Unacked messages come again on the next session.
                if consumer.unacked:
                    consumer.next_sequence = min(consumer.next_sequence, min(consumer.unacked))
            consumers.append(consumer)
            pending += sum(
                any(subject_matches(f, subject) for f in consumer.filters)
                for subject, _, _ in events[consumer.next_sequence - 1 :]
            )
        return MemorySubscription(self, consumers, pending)

    def _consumer_of(self, message: MemoryMessage) -> _Consumer:
        for consumer in self._consumers.values():
            if message.stream_sequence in consumer.unacked:
                return consumer
        raise StoreRejectedError(f"no delivery of sequence {message.stream_sequence} to settle")

    async def ack(self, message: MemoryMessage, *, attempts: int = 3, timeout: float = 2.0) -> None:
        for consumer in self._consumers.values():  # acks are idempotent
            consumer.unacked.pop(message.stream_sequence, None)

    async def record_confirmed_ack(self, consumer: str, stream_sequence: int) -> None:
        subject = subjects.acked_subject(consumer, stream_sequence)
        self._stream(subjects.ACKED_STREAM, subject).store(subject, b"", {})

    async def ack_confirmed(self, consumer: str, stream_sequence: int, attempts: int = 5) -> bool:
        subject = subjects.acked_subject(consumer, stream_sequence)
        return any(s == subject for s, _, _ in self.streams[subjects.ACKED_STREAM].messages)

    async def dead_letter(
        self, message: MemoryMessage, agency: str, name: str, *, deliveries: int, reason: str
    ) -> None:
        headers = dead_letter_headers(
            agency,
            name,
            subject=message.subject,
            sequence=message.stream_sequence,
            headers=message.headers or {},
            deliveries=deliveries,
            reason=reason,
        )
        subject = subjects.deadletter_subject(agency, name)
        self._stream(subjects.DEADLETTER_STREAM, subject).store(subject, message.data, headers)
        self._consumer_of(message).unacked.pop(message.stream_sequence)  # terminated

    # DeadLetters

    async def dead_letters(self, agency: str = "*", subscription: str = "*") -> list[DeadLetter]:
        wanted = subjects.deadletter_subject(agency, subscription)
        return [
            dead_letter_from(subject, sequence, headers)
            for sequence, (subject, _, headers) in enumerate(
                self.streams[subjects.DEADLETTER_STREAM].messages, start=1
            )
            if subject_matches(wanted, subject)
        ]

    async def dead_letter_at(self, sequence: int) -> DeadLetter:
        letters = self.streams[subjects.DEADLETTER_STREAM].messages
        if not 1 <= sequence <= len(letters):
            raise StoreRejectedError(f"no dead letter with sequence {sequence}")
        subject, _, headers = letters[sequence - 1]
        return dead_letter_from(subject, sequence, headers)

    async def replay_dead_letter(self, sequence: int) -> tuple[DeadLetter, Stored]:
        letter = await self.dead_letter_at(sequence)
        _, data, headers = self.streams[subjects.DEADLETTER_STREAM].messages[sequence - 1]
        subject = subjects.redeliver_subject(letter.agency, letter.subscription)
        replay = replay_headers(sequence, headers)
        return letter, self._stream(subjects.EVENTS_STREAM, subject).store(subject, data, replay)

    # Grants

    async def record_grant(self, grant_id: str, data: bytes) -> Stored:
        subject = f"{subjects.GRANTS_PREFIX}.{grant_id}"
        stored = self._stream(subjects.GRANTS_STREAM, subject).store(
            subject, data, {MESSAGE_ID_HEADER: grant_id}
        )
        if not stored.duplicate:
            for follower in self._grant_followers:
                follower(data)
        return stored

    async def follow_grants(self, on_grant: Callable[[bytes], None]) -> None:
        for _, data, _ in self.streams[subjects.GRANTS_STREAM].messages:
            on_grant(data)
        self._grant_followers.append(on_grant)


def as_ports(
    store: MemoryStore,
) -> tuple[EventLog, Subscriptions[MemoryMessage], DeadLetters, Grants]:
    """The store as each port (and mypy's check that it implements them)."""
    return store, store, store, store
