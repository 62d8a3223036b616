"""A checker in the style of Jepsen's NATS queue workload, for the failure drills.

The drills record what every publisher tried and was told, what every subscriber was given and
which of its acks the gateway confirmed (`confirm_acks`), and finally what each cluster node
holds in the event stream; `check` turns that history into counts. Pure: no clocks, no I/O.

    history = History()
    history.attempted("p1", "evt-1"); history.published("p1", "evt-1")   # acknowledged
    history.delivered("police", "evt-1", sequence=7); history.confirmed("police", "evt-1")
    history.final_read("n1", [(7, "evt-1")])
    verdict = check(history)    # verdict.ok, verdict.describe()

Counted (Jepsen's names where they exist):
- lost: acknowledged to a publisher, never read by a subscriber that expects it;
- lost-middle: lost, while a later acknowledged event of the same publisher was read (a hole,
  not a tail cut off by the end of the run);
- unexpected: read, but never attempted by any publisher, or refused to its publisher;
- duplicates after ack: delivered again to a subscriber after the gateway confirmed its ack;
- unacknowledged: read but never acked (a gap the drill's final drain did not close); an ack
  sent whose confirmation never came counts as acked unless the event came back;
- redelivered: delivered more than once before the confirmed ack (gaps that redelivery closed:
  fine, and reported so a drill can show its faults really happened);
- recovered: published with an unknown outcome (timeout, UNAVAILABLE), yet read: fine;
- missing from the stream: acknowledged, absent from a node's final read;
- stored twice: one event id at two stream sequences (a retry that was not deduplicated);
- divergent nodes: final reads that differ from the majority's sequence → id map.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum


class Outcome(Enum):
    ACKNOWLEDGED = "acknowledged"  # a receipt with a stream sequence
    REFUSED = "refused"  # a definite refusal: the event was not stored
    UNKNOWN = "unknown"  # the call failed in a way that leaves it open (timeout, UNAVAILABLE)


@dataclass
class SubscriberRecord:
    expects: frozenset[str] | None  # None: every acknowledged event
    deliveries: Counter[str] = field(default_factory=Counter)
    first_sequence: dict[str, int] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    # Acked, but the confirmation never came (the stream broke first): the ack may have landed.
    ack_unknown: set[str] = field(default_factory=set)
    after_ack: Counter[str] = field(default_factory=Counter)


class History:
    """What happened in one drill, recorded as it happens (not thread-safe; one event loop)."""

    def __init__(self) -> None:
        self._attempts: dict[str, list[str]] = defaultdict(list)  # publisher → ids in order
        self._publisher_of: dict[str, str] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._subscribers: dict[str, SubscriberRecord] = {}
        self._final: dict[str, list[tuple[int, str]]] = {}

    # --- publishers ----------------------------------------------------------------------------

    def attempted(self, publisher: str, event_id: str) -> None:
        """`publisher` is about to send `event_id` (once, however often it retries)."""
        if event_id in self._publisher_of:
            raise ValueError(f"event id {event_id!r} attempted twice: ids must be unique")
        self._publisher_of[event_id] = publisher
        self._attempts[publisher].append(event_id)
        self._outcomes[event_id] = Outcome.UNKNOWN

    def published(self, publisher: str, event_id: str) -> None:
        self._settle(publisher, event_id, Outcome.ACKNOWLEDGED)

    def refused(self, publisher: str, event_id: str) -> None:
        self._settle(publisher, event_id, Outcome.REFUSED)

    def _settle(self, publisher: str, event_id: str, outcome: Outcome) -> None:
        if self._publisher_of.get(event_id) != publisher:
            raise ValueError(f"{publisher!r} never attempted {event_id!r}")
        if self._outcomes[event_id] is Outcome.ACKNOWLEDGED and outcome is Outcome.REFUSED:
            raise ValueError(f"{event_id!r} was acknowledged, then refused")
        self._outcomes[event_id] = outcome

    # --- subscribers ---------------------------------------------------------------------------

    def subscriber(self, name: str, *, expects: Iterable[str] | None = None) -> None:
        """Declare a subscriber; `expects` limits the events it must read (default: all)."""
        self._subscribers[name] = SubscriberRecord(None if expects is None else frozenset(expects))

    def delivered(self, subscriber: str, event_id: str, *, sequence: int) -> None:
        state = self._subscribers.get(subscriber)
        if state is None:
            state = self._subscribers[subscriber] = SubscriberRecord(None)
        state.deliveries[event_id] += 1
        state.first_sequence.setdefault(event_id, sequence)
        if event_id in state.confirmed:
            state.after_ack[event_id] += 1

    def confirmed(self, subscriber: str, event_id: str) -> None:
        """The gateway confirmed `subscriber`'s ack of `event_id`: it must never come again."""
        self._subscribers[subscriber].confirmed.add(event_id)

    def ack_unconfirmed(self, subscriber: str, event_id: str) -> None:
        """`subscriber` acked `event_id` but no confirmation came: if it is not delivered
        again, the ack landed; it does not count as unacknowledged."""
        self._subscribers[subscriber].ack_unknown.add(event_id)

    # --- the final state -------------------------------------------------------------------------

    def final_read(self, node: str, stream: Sequence[tuple[int, str]]) -> None:
        """Every (stream sequence, event id) of the drill's events, read through `node`."""
        self._final[node] = sorted(stream)

    # --- for the checker -----------------------------------------------------------------------

    @property
    def attempts(self) -> Mapping[str, Sequence[str]]:
        return self._attempts

    @property
    def outcomes(self) -> Mapping[str, Outcome]:
        return self._outcomes

    @property
    def subscribers(self) -> Mapping[str, SubscriberRecord]:
        return self._subscribers

    @property
    def final_reads(self) -> Mapping[str, Sequence[tuple[int, str]]]:
        return self._final


@dataclass(frozen=True)
class Verdict:
    attempted: int
    acknowledged: int
    refused: int
    unknown: int
    recovered: int
    delivered: int  # deliveries, redeliveries included, over all subscribers
    redelivered: int
    lost: tuple[str, ...]  # "subscriber: event id"
    lost_middle: tuple[str, ...]
    unexpected: tuple[str, ...]
    duplicates_after_ack: tuple[str, ...]
    unacknowledged: tuple[str, ...]
    missing_from_stream: tuple[str, ...]  # "node: event id"
    stored_twice: tuple[str, ...]
    divergent_nodes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.lost_middle or self.unexpected or self.duplicates_after_ack
            or self.unacknowledged or self.missing_from_stream or self.stored_twice
            or self.divergent_nodes
        )  # fmt: skip

    def describe(self) -> str:
        """One line of counts, then the first few offenders of each kind."""
        counts = (
            f"attempted {self.attempted}, acknowledged {self.acknowledged}, refused "
            f"{self.refused}, unknown {self.unknown} (recovered {self.recovered}); delivered "
            f"{self.delivered}, redelivered {self.redelivered}; lost {len(self.lost)}, "
            f"lost-middle {len(self.lost_middle)}, unexpected {len(self.unexpected)}, "
            f"duplicates after ack {len(self.duplicates_after_ack)}, unacknowledged "
            f"{len(self.unacknowledged)}, missing from the stream "
            f"{len(self.missing_from_stream)}, stored twice {len(self.stored_twice)}, "
            f"divergent nodes {len(self.divergent_nodes)}"
        )
        offenders = [
            f"  {name}: {', '.join(values[:5])}{' …' if len(values) > 5 else ''}"
            for name, values in (
                ("lost", self.lost),
                ("lost-middle", self.lost_middle),
                ("unexpected", self.unexpected),
                ("duplicates after ack", self.duplicates_after_ack),
                ("unacknowledged", self.unacknowledged),
                ("missing from the stream", self.missing_from_stream),
                ("stored twice", self.stored_twice),
                ("divergent nodes", self.divergent_nodes),
            )
            if values
        ]
        return "\n".join([counts, *offenders])


def _majority(reads: Mapping[str, Sequence[tuple[int, str]]]) -> tuple[tuple[int, str], ...]:
    votes = Counter(tuple(stream) for stream in reads.values())
    return votes.most_common(1)[0][0] if votes else ()


def check(history: History) -> Verdict:
    outcomes = history.outcomes
    acknowledged = {e for e, outcome in outcomes.items() if outcome is Outcome.ACKNOWLEDGED}
    unknown = {e for e, outcome in outcomes.items() if outcome is Outcome.UNKNOWN}
    refused = {e for e, outcome in outcomes.items() if outcome is Outcome.REFUSED}
    lost: list[str] = []
    lost_middle: list[str] = []
    unexpected: list[str] = []
    after_ack: list[str] = []
    unacked: list[str] = []
    read_anywhere: set[str] = set()
    delivered = redelivered = 0
    for name, state in sorted(history.subscribers.items()):
        read = set(state.deliveries)
        read_anywhere |= read
        delivered += sum(state.deliveries.values())
        redelivered += sum(
            count - 1 - state.after_ack[event] for event, count in state.deliveries.items()
        )
        # Never attempted, or read although its publisher was told it was not stored.
        unexpected += [f"{name}: {e}" for e in sorted(read - (set(outcomes) - refused))]
        after_ack += [f"{name}: {e}" for e in sorted(state.after_ack)]
        unacked += [f"{name}: {e}" for e in sorted(read - state.confirmed - state.ack_unknown)]
        expected = acknowledged if state.expects is None else acknowledged & state.expects
        missing = expected - read
        lost += [f"{name}: {e}" for e in sorted(missing)]
        for ids in history.attempts.values():
            # The last event of this publisher the subscriber read; any loss before it is a hole.
            last_read = max((i for i, e in enumerate(ids) if e in read), default=0)
            lost_middle += [f"{name}: {e}" for e in ids[:last_read] if e in missing]
    final = history.final_reads
    reference = _majority(final)
    divergent = sorted(node for node, stream in final.items() if tuple(stream) != reference)
    missing_from_stream = [
        f"{node}: {e}"
        for node, stream in sorted(final.items())
        for e in sorted(acknowledged - {event for _, event in stream})
    ]
    stored = Counter(event for _, event in reference)
    return Verdict(
        attempted=len(outcomes),
        acknowledged=len(acknowledged),
        refused=len(refused),
        unknown=len(unknown),
        recovered=len(unknown & (read_anywhere | set(stored))),
        delivered=delivered,
        redelivered=redelivered,
        lost=tuple(lost),
        lost_middle=tuple(lost_middle),
        unexpected=tuple(unexpected),
        duplicates_after_ack=tuple(after_ack),
        unacknowledged=tuple(unacked),
        missing_from_stream=tuple(missing_from_stream),
        stored_twice=tuple(sorted(e for e, n in stored.items() if n > 1)),
        divergent_nodes=tuple(divergent),
    )
