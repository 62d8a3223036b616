"""The audit log as the event store's witness. Pure: facts and stored digests in, a verdict out.

Every publish leaves facts in the log: ACCEPTED (the digest of the exact bytes, written before
the event goes to JetStream), then STORED at a stream sequence (or DUPLICATE of the event
stored at one, or CONFLICT with it: other content under its id, not stored), or FAILED. From them `Ledger` knows what the event stream must hold:

- each STORED event at its sequence with the same digest (it was acknowledged: a receipt names
  that sequence);
- each DUPLICATE's and CONFLICT's original sequence (another receipt names it); a CONFLICT's
  own bytes were never stored, and it settles their ACCEPTED entry;
- no sequence reused: the stream's last sequence is at least the highest one recorded;
- an ACCEPTED event with no outcome yet is *unsettled*: in flight, or the gateway stopped
  (crashed) before recording the outcome. Present in the stream, it is settled as stored;
  absent, its outcome is unknown (it was never recorded as acknowledged) — the start-up check
  records it as FAILED. A FAILED event may be present or absent (a timed-out store may have
  stored it).

Events may leave the stream legitimately only by age (`nats.events_max_age_days`): a stored
event older than the stream's retention and below its first sequence is not missing.

`compare` returns the discrepancies in log order: the first is the one to name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from dutylink.v1 import audit_pb2

_OUTCOMES = (
    audit_pb2.AUDIT_OUTCOME_ACCEPTED,
    audit_pb2.AUDIT_OUTCOME_STORED,
    audit_pb2.AUDIT_OUTCOME_DUPLICATE,
    audit_pb2.AUDIT_OUTCOME_CONFLICT,
    audit_pb2.AUDIT_OUTCOME_FAILED,
)


@dataclass(frozen=True)
class PublishFact:
    """One publish entry of the log: at leaf `index`, what happened to which bytes."""

    index: int
    event_id: str
    digest: bytes
    outcome: audit_pb2.AuditOutcome.ValueType
    sequence: int  # the stream sequence (STORED; the original's: DUPLICATE, CONFLICT), else 0
    time: float  # when the entry was recorded, in seconds since the epoch
    agency: str = ""


def publish_facts(entries: Iterable[tuple[int, bytes]]) -> list[PublishFact]:
    """The publish facts among stored entries (leaf index, bytes); entries that do not decode
    are left to `dutylink audit verify`, which names them."""
    facts = []
    for index, data in entries:
        try:
            entry = audit_pb2.AuditEntry.FromString(data)
        except DecodeError:
            continue
        if entry.action != audit_pb2.AUDIT_ACTION_PUBLISH or entry.outcome not in _OUTCOMES:
            continue
        if not entry.event_digest:
            continue
        facts.append(
            PublishFact(
                index,
                entry.event_id,
                entry.event_digest,
                entry.outcome,
                entry.stream_sequence,
                entry.time.seconds + entry.time.nanos / 1e9,
                entry.actor_agency,
            )
        )
    return facts


@dataclass
class Ledger:
    """What the event stream must hold, by the log's facts (see the module docstring)."""

    stored: dict[int, PublishFact] = field(default_factory=dict)  # sequence -> STORED fact
    duplicates: dict[int, PublishFact] = field(default_factory=dict)  # original's sequence
    unsettled: dict[bytes, PublishFact] = field(default_factory=dict)  # digest -> ACCEPTED
    high_water: int = 0  # the highest stream sequence the log records

    def add(self, facts: Iterable[PublishFact]) -> Ledger:
        for fact in facts:
            if fact.outcome == audit_pb2.AUDIT_OUTCOME_ACCEPTED:
                self.unsettled.setdefault(fact.digest, fact)
                continue
            accepted = self.unsettled.pop(fact.digest, None)
            if fact.outcome == audit_pb2.AUDIT_OUTCOME_STORED:
                # The ACCEPTED entry is the moment of acceptance: name it, not the late fact.
                self.stored.setdefault(fact.sequence, accepted or fact)
            elif fact.outcome in (
                audit_pb2.AUDIT_OUTCOME_DUPLICATE,
                audit_pb2.AUDIT_OUTCOME_CONFLICT,
            ):
                self.duplicates.setdefault(fact.sequence, fact)
            self.high_water = max(self.high_water, fact.sequence)
        return self

    def wanted(self) -> set[int]:
        """The sequences whose digests `compare` needs."""
        return set(self.stored) | set(self.duplicates)


@dataclass(frozen=True)
class StreamView:
    """What the event stream holds, as read: its first and last sequence, and the digest of
    each message read (`digests`: sequence -> SHA-256; a sequence read but absent is not a
    key). `read_from`: every sequence from there to `last_sequence` was read, so an unsettled
    event not among them is not stored (since `read_from`). `retained_since`: the oldest time
    (seconds since the epoch) an event must still be kept at (older ones may have aged out)."""

    first_sequence: int
    last_sequence: int
    digests: Mapping[int, bytes]
    read_from: int
    retained_since: float = 0.0


@dataclass(frozen=True)
class Discrepancy:
    """An acknowledged event the stream no longer holds as acknowledged."""

    fact: PublishFact
    sequence: int
    problem: str  # "missing" or "replaced"

    def describe(self, stream: str) -> str:
        where = f"acknowledged at stream sequence {self.sequence}, audit entry {self.fact.index}"
        if self.problem == "missing":
            return f"event {self.fact.event_id or '?'} ({where}) is missing from stream {stream}"
        return (
            f"event {self.fact.event_id or '?'} ({where}) was replaced: stream {stream} holds "
            "other bytes at that sequence"
        )


@dataclass
class Verdict:
    """The outcome of `compare`: discrepancies in log order, the sequence reuse if any, and
    how the unsettled events turned out (present: their sequence; absent: unknown)."""

    discrepancies: list[Discrepancy] = field(default_factory=list)
    reused_below: int = 0  # the high water, when the stream ends below it
    settled: list[tuple[PublishFact, int]] = field(default_factory=list)
    unknown: list[PublishFact] = field(default_factory=list)
    checked: int = 0  # acknowledged events found as acknowledged

    @property
    def ok(self) -> bool:
        return not self.discrepancies and not self.reused_below

    def summary(self, stream: str, last_sequence: int) -> str:
        """One line naming the first discrepancy, and how many there are."""
        parts = []
        if self.discrepancies:
            first = self.discrepancies[0].describe(stream)
            count = len(self.discrepancies)
            parts.append(first if count == 1 else f"{first} (and {count - 1} more acknowledged)")
        if self.reused_below:
            parts.append(
                f"stream {stream} ends at sequence {last_sequence}, below the {self.reused_below} "
                "the audit log recorded: new events would reuse the sequences of receipts given"
            )
        return "; ".join(parts)


def compare(ledger: Ledger, view: StreamView) -> Verdict:
    """Check the ledger against what the stream holds (see the module docstring)."""
    verdict = Verdict()
    for sequence, fact in sorted(ledger.stored.items(), key=lambda item: item[1].index):
        found = view.digests.get(sequence)
        if found == fact.digest:
            verdict.checked += 1
        elif found is not None:
            verdict.discrepancies.append(Discrepancy(fact, sequence, "replaced"))
        elif not _aged_out(sequence, fact, view):
            verdict.discrepancies.append(Discrepancy(fact, sequence, "missing"))
    for sequence, fact in ledger.duplicates.items():
        if sequence not in view.digests and not _aged_out(sequence, fact, view):
            verdict.discrepancies.append(Discrepancy(fact, sequence, "missing"))
    verdict.discrepancies.sort(key=lambda d: d.fact.index)
    if view.last_sequence < ledger.high_water:
        verdict.reused_below = ledger.high_water
    where = {
        digest: sequence
        for sequence, digest in view.digests.items()
        if sequence >= view.read_from and sequence not in ledger.stored
    }
    for digest, fact in sorted(ledger.unsettled.items(), key=lambda item: item[1].index):
        if (at := where.get(digest)) is not None:
            verdict.settled.append((fact, at))
        else:
            verdict.unknown.append(fact)
    return verdict


def _aged_out(sequence: int, fact: PublishFact, view: StreamView) -> bool:
    return sequence < view.first_sequence and fact.time < view.retained_since


UNSETTLED_REASON = (
    "not in the event stream when the gateway started again: it stopped before recording the "
    "store's answer, and the event was never recorded as acknowledged"
)


def settlement(verdict: Verdict) -> list[audit_pb2.AuditEntry]:
    """Entries that record how the unsettled events turned out: STORED at the sequence found,
    or FAILED when the stream does not hold them; so the next check knows, not guesses."""
    entries = []
    for fact, sequence in verdict.settled:
        entries.append(_settled(fact, audit_pb2.AUDIT_OUTCOME_STORED, sequence=sequence))
    for fact in verdict.unknown:
        entries.append(_settled(fact, audit_pb2.AUDIT_OUTCOME_FAILED, reason=UNSETTLED_REASON))
    return entries


def _settled(
    fact: PublishFact,
    outcome: audit_pb2.AuditOutcome.ValueType,
    *,
    sequence: int = 0,
    reason: str = "",
) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        action=audit_pb2.AUDIT_ACTION_PUBLISH,
        outcome=outcome,
        actor_agency=fact.agency,
        event_id=fact.event_id,
        event_digest=fact.digest,
        stream_sequence=sequence,
        reason=reason,
    )
