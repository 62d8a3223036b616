"""The store's small interfaces, as the servicers, the CLI and the tests see it: plain values in and
out, no NATS types. Pure: no I/O.

- `EventLog`: store events (bytes and headers) and learn where, or that a retry was a duplicate
  or, with other content under the same id, a conflict.
- `Subscriptions`: an agency's durable subscription: fetch, ack (confirmed), dead-letter.
- `DeadLetters`: list, look up and replay what a subscription gave up on.
- `Grants`: keep break-glass declarations and follow them.

JetStream implements them in `gateway.store` (`gateway.store.jetstream.EventStore` holds them all
on one connection); `gateway.testkit.memory_store.MemoryStore` implements them in memory for tests
that need no server. tests/test_store_contract.py runs one contract against both.

Every operation fails with one of the `StoreError` kinds below, which the servicers map onto gRPC
codes: the store is unavailable (retry with the same event id), full (no eviction of accepted
events: new ones are refused) or it rejected the message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

# The header naming an event's id: a second message with the same id within the duplicate
# window is not stored again (JetStream's deduplication).
MESSAGE_ID_HEADER = "Nats-Msg-Id"


class StoreError(Exception):
    """The store could not store or deliver a message."""


class StoreUnavailableError(StoreError):
    """No answer from the store (disconnected, timed out, no quorum): the outcome is unknown."""


class StoreFullError(StoreError):
    """The stream reached its limits; it refuses new messages rather than evict old ones."""


class StoreRejectedError(StoreError):
    """The store refused the message for a reason retrying will not fix."""


class DurabilityError(StoreError):
    """The streams or servers found cannot keep "acknowledged means durable" (nats.durability
    = "refuse"): fix the NATS or stream settings named in the message."""


class StoreDamagedError(StoreError):
    """The event stream no longer holds what it acknowledged, by the audit log's account (or
    the audit log itself is damaged): the message names the first thing missing."""


@dataclass(frozen=True)
class Stored:
    """The store's acknowledgement of one stored event."""

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


# One message to publish: subject, bytes, headers.
Outgoing = tuple[str, bytes, dict[str, str]]


class EventLog(Protocol):
    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> Stored:
        """Store one event; raises the StoreError it met."""
        ...

    async def publish_pipelined(
        self, messages: Sequence[Outgoing], timeout: float, *, stream: str = ...
    ) -> list[Stored | StoreError]:
        """Store every message, in order, without waiting for each acknowledgement before the
        next send; one outcome per message. A duplicate whose headers carry a content digest
        (gateway.core.envelope.CONTENT_DIGEST_HEADER) is compared with the stored original's:
        other content is a conflict."""
        ...


class Pulled(Protocol):
    """What every delivered message shows, whatever the store."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...


Message = TypeVar("Message", bound=Pulled)


class DurableSubscription(Protocol[Message]):
    """One open session on an agency's durable subscription."""

    pending: int  # messages waiting or unacknowledged when it opened

    async def fetch(self, count: int, wait: float) -> list[Message]:
        """Up to `count` messages, waiting at most `wait` seconds; [] when none arrived."""
        ...

    async def close(self) -> None: ...


class Subscriptions(Protocol[Message]):
    """Agencies' durable subscriptions on the event stream. `Message` is the store's own
    delivered message (acked, dead-lettered through this port)."""

    async def open_subscription(
        self, agency: str, name: str, filter_subjects: Sequence[str], max_in_flight: int
    ) -> DurableSubscription[Message]:
        """Create or update the subscription (new events only, from its creation), then open a
        session on it."""
        ...

    async def ack(self, message: Message, *, attempts: int = ..., timeout: float = ...) -> None:
        """Ack and wait until the store confirms it; StoreUnavailableError if it never did."""
        ...

    async def record_confirmed_ack(self, consumer: str, stream_sequence: int) -> None:
        """Remember, for every replica, that this event's ack on `consumer` was confirmed."""
        ...

    async def ack_confirmed(self, consumer: str, stream_sequence: int, attempts: int = ...) -> bool:
        """Whether any replica recorded a confirmed ack of this event on `consumer`."""
        ...

    async def dead_letter(
        self, message: Message, agency: str, name: str, *, deliveries: int, reason: str
    ) -> None:
        """Keep `message` as a dead letter of the subscription, then stop its delivery."""
        ...


class DeadLetters(Protocol):
    async def dead_letters(self, agency: str = "*", subscription: str = "*") -> list[DeadLetter]:
        """Every dead letter of the matching subscriptions, oldest first (never deleted)."""
        ...

    async def dead_letter_at(self, sequence: int) -> DeadLetter:
        """The dead letter stored at `sequence`; StoreRejectedError if there is none."""
        ...

    async def replay_dead_letter(self, sequence: int) -> tuple[DeadLetter, Stored]:
        """Deliver a dead letter again, to its own subscription only; replaying it twice within
        the duplicate window stores it once."""
        ...


class Grants(Protocol):
    async def record_grant(self, grant_id: str, data: bytes) -> Stored:
        """Keep a break-glass declaration (never deleted; one per id)."""
        ...

    async def follow_grants(self, on_grant: Callable[[bytes], None]) -> None:
        """Replay every recorded declaration, then keep delivering new ones as they come."""
        ...
