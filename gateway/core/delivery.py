"""The delivery state machine of one Subscribe stream, over plain values.

It decides what becomes of each fetched message (sent, withheld, dead-lettered, acked again,
or held back), which deliveries await the subscriber's answer (the window), what a redelivery
supersedes, and which acks and nacks count. Fetching, the audit log, the stream to the
subscriber and JetStream's acks are the servicer's job (gateway.rpc.subscribe); so are clocks.

Each awaited delivery carries an opaque handle of the caller's choosing (the servicer's is the
NATS message with its audit facts), so that a delivery and what settles it live in one table
and cannot drift apart; this module never looks inside it.

JetStream redelivers an event whose ack wait ran out. If the subscriber has not answered yet,
the redelivery replaces the stale delivery from the moment it is planned, before its audit
entry is appended (an ack of the stale one that arrives meanwhile is then answered "not
confirmed"; the slow-links drill once caught an ack of a superseded delivery being confirmed).
If its ack is on the way to JetStream (held up, say, by a cut-off consumer leader), the
redelivery is not sent: the ack settles the event, or if it fails, the ack wait brings the
event back. So nothing follows an ack on the stream, confirmed or about to be.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

Handle = TypeVar("Handle")

UNDECODABLE = "undecodable event"
ACKED_AGAIN = "redelivered although its ack was confirmed: acked again, not sent"
NOT_AWAITED = "not awaited: superseded by a redelivery (ack that one), or answered"


def exhausted(max_deliveries: int) -> str:
    """The reason a message given `max_deliveries` times without an ack is dead-lettered."""
    return f"not acknowledged after {max_deliveries} deliveries"


def deliveries_made(attempt: int, max_deliveries: int) -> int:
    """How often the subscriber was given a message JetStream now offers for the `attempt`th
    time (dead-lettered ones: the current attempt is not sent)."""
    return min(attempt - 1, max_deliveries)


class Fate(enum.Enum):
    """What becomes of one fetched message."""

    READ = "read"  # screened, not yet decided: the event must be read and judged by the policy
    SEND = "send"  # sent to the subscriber, awaited in the window
    WITHHOLD = "withhold"  # the policy denies it: never sent, acked
    DEAD_LETTER = "dead_letter"  # moved to the subscription's dead letters
    ACK_AGAIN = "ack_again"  # a redelivery of an event whose ack was confirmed: acked, not sent
    HOLD_BACK = "hold_back"  # a redelivery while the subscriber's ack is on its way: ignored


@dataclass(frozen=True)
class Plan:
    """A fate with its reason (dead letters and acks again) or delivery id (sends)."""

    fate: Fate
    reason: str = ""
    delivery_id: int = 0


@dataclass(frozen=True)
class Taken(Generic[Handle]):
    """An awaited delivery the subscriber answered: now the caller's to settle."""

    delivery_id: int
    sequence: int
    handle: Handle


@dataclass(frozen=True)
class NotAwaited:
    """An answer for a delivery id that is not awaited (superseded, answered, or unknown)."""

    delivery_id: int
    reason: str = NOT_AWAITED


class Session(Generic[Handle]):
    """The deliveries of one Subscribe stream that await the subscriber's answer, and the
    events whose ack it answered lately. `limit` is the window: how many deliveries may await
    an answer at once (the servicer fetches no more than `free`)."""

    def __init__(self, limit: int, max_deliveries: int) -> None:
        self.limit = limit
        self.max_deliveries = max_deliveries
        self._awaited: dict[int, tuple[int, Handle]] = {}  # delivery id → (sequence, handle)
        self._by_sequence: dict[int, int] = {}  # stream sequence → delivery id, of `_awaited`
        self._acking: set[int] = set()  # stream sequences whose ack is on its way to JetStream
        # Acked since the current fetch began. Acks confirmed before it are known to the store
        # (its record of confirmed acks), so the caller passes them to `screen`.
        self._acked_since_fetch: set[int] = set()
        self._last_id = 0

    @property
    def free(self) -> int:
        """How many more deliveries the window holds."""
        return self.limit - len(self._awaited)

    def awaited(self) -> list[Handle]:
        """The handles of every delivery still awaiting an answer (oldest first)."""
        return [handle for _, handle in self._awaited.values()]

    def delivery_of(self, sequence: int) -> int | None:
        """The live delivery id of a stream sequence, if one awaits an answer."""
        return self._by_sequence.get(sequence)

    def begin_fetch(self) -> None:
        self._acked_since_fetch.clear()

    def screen(self, sequence: int, attempt: int, *, ack_confirmed: bool = False) -> Plan:
        """The fate of a fetched message decided before its event is read: held back, acked
        again, dead-lettered for too many deliveries, or READ (then `judge` decides).
        `ack_confirmed`: the store holds a record that its ack was confirmed."""
        if sequence in self._acking:
            return Plan(Fate.HOLD_BACK)
        if ack_confirmed or sequence in self._acked_since_fetch:
            return Plan(Fate.ACK_AGAIN, ACKED_AGAIN)
        if attempt > self.max_deliveries:
            return Plan(Fate.DEAD_LETTER, exhausted(self.max_deliveries))
        return Plan(Fate.READ)

    def judge(self, sequence: int, handle: Handle, *, readable: bool, allowed: bool) -> Plan:
        """The fate of a screened message once read: dead-lettered if its event is
        undecodable, withheld if the policy denies it, else sent. A send is awaited from now
        on and supersedes an awaited delivery of the same sequence (call this before the
        audit append: see the module's docstring)."""
        if not readable:
            return Plan(Fate.DEAD_LETTER, UNDECODABLE)
        if not allowed:
            return Plan(Fate.WITHHOLD)
        if (stale := self._by_sequence.pop(sequence, None)) is not None:
            del self._awaited[stale]
        self._last_id += 1
        self._awaited[self._last_id] = (sequence, handle)
        self._by_sequence[sequence] = self._last_id
        return Plan(Fate.SEND, delivery_id=self._last_id)

    def take(self, delivery_id: int, *, ack: bool) -> Taken[Handle] | NotAwaited:
        """The delivery the subscriber just acked or nacked (or that was never sent after
        all: `ack=False`). An ack holds back redeliveries of its sequence until `settled`."""
        found = self._awaited.pop(delivery_id, None)
        if found is None:
            return NotAwaited(delivery_id)
        sequence, handle = found
        del self._by_sequence[sequence]
        if ack:
            self._acking.add(sequence)
        return Taken(delivery_id, sequence, handle)

    def settled(self, sequence: int, *, acked: bool) -> None:
        """JetStream has the answer to a taken delivery (`acked`: an ack it answered), or the
        ack failed and the ack wait will bring the event back."""
        self._acking.discard(sequence)
        if acked:
            self._acked_since_fetch.add(sequence)
