"""Dead letters on JetStream (gateway.core.ports.DeadLetters): what a subscription gave up on,
kept in the dead-letter stream with why, listed, and replayed to that subscription only.

A dead letter is the event's bytes with its `ce-*` headers and the headers below; the same
header layout serves the in-memory store (gateway.testkit.memory_store)."""

from __future__ import annotations

from collections.abc import Mapping

import nats.js.errors

from gateway.core import subjects
from gateway.core.ports import MESSAGE_ID_HEADER, DeadLetter, Stored, StoreRejectedError
from gateway.core.sealing import SEALED_HEADER
from gateway.store.connection import NatsConnection
from gateway.store.errors import STORE_FAILURES, translate
from gateway.store.events import stored
from gateway.store.streams import stored_messages

ORIGINAL_SUBJECT_HEADER = "Dutylink-Original-Subject"
ORIGINAL_SEQUENCE_HEADER = "Dutylink-Original-Sequence"
DELIVERIES_HEADER = "Dutylink-Deliveries"
REASON_HEADER = "Dutylink-Reason"
REPLAY_OF_HEADER = "Dutylink-Replay-Of"


def _event_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The event's own headers: its CloudEvents attributes and its sealed part."""
    return {
        key: value
        for key, value in headers.items()
        if key.startswith("ce-") or key == SEALED_HEADER
    }


def dead_letter_headers(
    agency: str,
    name: str,
    *,
    subject: str,
    sequence: int,
    headers: Mapping[str, str],
    deliveries: int,
    reason: str,
) -> dict[str, str]:
    """The headers of the dead letter of the event stored at `sequence` on `subject` (one per
    event and subscription: the message id makes a second try a duplicate)."""
    return {
        MESSAGE_ID_HEADER: f"{subjects.consumer_name(agency, name)}:{sequence}",
        ORIGINAL_SUBJECT_HEADER: subject,
        ORIGINAL_SEQUENCE_HEADER: str(sequence),
        DELIVERIES_HEADER: str(deliveries),
        REASON_HEADER: reason,
        **_event_headers(headers),
    }


def replay_headers(sequence: int, headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of the replay of the dead letter at `sequence` (one per dead letter within
    the duplicate window)."""
    return {
        **_event_headers(headers),
        MESSAGE_ID_HEADER: f"replay:{sequence}",
        REPLAY_OF_HEADER: str(sequence),
    }


def dead_letter_from(subject: str, sequence: int, headers: Mapping[str, str]) -> DeadLetter:
    """The dead letter stored at `sequence` on `subject`, as a value."""
    _, _, agency, subscription = subject.split(".", 3)
    return DeadLetter(
        sequence=sequence,
        agency=agency,
        subscription=subscription,
        event_id=headers.get("ce-id", ""),
        event_type=headers.get("ce-type", ""),
        source=headers.get("ce-source", ""),
        original_sequence=int(headers.get(ORIGINAL_SEQUENCE_HEADER, "0")),
        deliveries=int(headers.get(DELIVERIES_HEADER, "0")),
        reason=headers.get(REASON_HEADER, ""),
    )


class JetStreamDeadLetters:
    def __init__(self, connection: NatsConnection) -> None:
        self._connection = connection

    async def dead_letters(self, agency: str = "*", subscription: str = "*") -> list[DeadLetter]:
        """Every dead letter of the matching subscriptions, oldest first (kept, never deleted:
        replaying one copies it back, so the record of what failed stays)."""
        wanted = subjects.deadletter_subject(agency, subscription)
        js = self._connection.js
        try:
            return [
                dead_letter_from(raw.subject or "", raw.seq or 0, raw.headers or {})
                async for raw in stored_messages(js, subjects.DEADLETTER_STREAM, wanted)
            ]
        except STORE_FAILURES as error:
            raise translate(error) from error

    async def dead_letter_at(self, sequence: int) -> DeadLetter:
        """The dead letter stored at `sequence`; StoreRejectedError if there is none."""
        letter, _, _ = await self._read(sequence)
        return letter

    async def replay_dead_letter(self, sequence: int) -> tuple[DeadLetter, Stored]:
        """Deliver a dead letter again, to its own subscription only. Replaying the same dead
        letter twice within the duplicate window stores it once."""
        letter, data, headers = await self._read(sequence)
        subject = subjects.redeliver_subject(letter.agency, letter.subscription)
        try:
            ack = await self._connection.js.publish(
                subject,
                data,
                stream=subjects.EVENTS_STREAM,
                headers=replay_headers(sequence, headers),
            )
        except STORE_FAILURES as error:
            raise translate(error) from error
        return letter, stored(ack)

    async def _read(self, sequence: int) -> tuple[DeadLetter, bytes, dict[str, str]]:
        try:
            raw = await self._connection.js.get_msg(subjects.DEADLETTER_STREAM, seq=sequence)
        except nats.js.errors.NotFoundError:
            raise StoreRejectedError(f"no dead letter with sequence {sequence}") from None
        except STORE_FAILURES as error:
            raise translate(error) from error
        headers = raw.headers or {}
        letter = dead_letter_from(raw.subject or "", raw.seq or 0, headers)
        return letter, raw.data or b"", headers
