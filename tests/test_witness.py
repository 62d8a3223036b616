"""The witness's pure comparison: the log's publish facts against the digests the stream holds."""

from __future__ import annotations

from dutylink.v1 import audit_pb2 as A
from gateway.audit.witness import (
    Ledger,
    PublishFact,
    StreamView,
    compare,
    publish_facts,
    settlement,
)

STREAM = "DUTYLINK_EVENTS"


def fact(
    index: int, name: str, outcome: int, sequence: int = 0, time: float = 1000.0
) -> PublishFact:
    return PublishFact(index, name, name.encode().ljust(32, b"."), outcome, sequence, time, "fire")  # type: ignore[arg-type]


def stored(index: int, name: str, sequence: int, time: float = 1000.0) -> list[PublishFact]:
    return [
        fact(index, name, A.AUDIT_OUTCOME_ACCEPTED, time=time),
        fact(index + 1, name, A.AUDIT_OUTCOME_STORED, sequence, time=time),
    ]


def digest(name: str) -> bytes:
    return name.encode().ljust(32, b".")


def view(
    digests: dict[int, bytes], first: int = 1, last: int | None = None, **kw: float
) -> StreamView:
    return StreamView(first, max(digests, default=0) if last is None else last, digests, 1, **kw)


def test_every_stored_event_found_at_its_sequence_with_its_digest_verifies() -> None:
    ledger = Ledger().add([*stored(0, "a", 1), *stored(2, "b", 2)])
    verdict = compare(ledger, view({1: digest("a"), 2: digest("b")}))
    assert verdict.ok and verdict.checked == 2 and not verdict.unknown


def test_the_first_missing_event_in_log_order_is_named_with_its_sequence_and_entry() -> None:
    ledger = Ledger().add([*stored(0, "a", 1), *stored(2, "b", 2), *stored(4, "c", 3)])
    verdict = compare(ledger, view({1: digest("a")}, last=3))
    assert not verdict.ok
    line = verdict.summary(STREAM, 3)
    assert line.startswith("event b (acknowledged at stream sequence 2, audit entry 2) is missing")
    assert "(and 1 more acknowledged)" in line


def test_other_bytes_at_an_acknowledged_sequence_are_named_as_a_replacement() -> None:
    verdict = compare(Ledger().add(stored(0, "a", 1)), view({1: digest("x")}))
    assert "event a (acknowledged at stream sequence 1, audit entry 0) was replaced" in (
        verdict.summary(STREAM, 1)
    )


def test_a_stream_ending_below_the_recorded_high_water_is_sequence_reuse() -> None:
    ledger = Ledger().add([*stored(0, "a", 1), *stored(2, "b", 2)])
    verdict = compare(ledger, view({1: digest("a")}, last=1))
    assert verdict.reused_below == 2
    assert "ends at sequence 1, below the 2 the audit log recorded" in verdict.summary(STREAM, 1)


def test_events_older_than_the_retention_may_have_aged_out_but_younger_ones_may_not() -> None:
    ledger = Ledger().add([*stored(0, "old", 1, time=10.0), *stored(2, "young", 2, time=5000.0)])
    aged = compare(ledger, view({3: digest("z")}, first=3, retained_since=100.0))
    assert [d.fact.event_id for d in aged.discrepancies] == ["young"]


def test_a_failed_store_may_or_may_not_have_stored_the_event() -> None:
    facts = [fact(0, "a", A.AUDIT_OUTCOME_ACCEPTED), fact(1, "a", A.AUDIT_OUTCOME_FAILED)]
    assert compare(Ledger().add(facts), view({})).ok
    assert compare(Ledger().add(facts), view({1: digest("a")})).ok


def test_a_duplicates_original_sequence_must_still_be_there() -> None:
    facts = [fact(0, "a", A.AUDIT_OUTCOME_ACCEPTED), fact(1, "a", A.AUDIT_OUTCOME_DUPLICATE, 7)]
    assert compare(Ledger().add(facts), view({7: digest("orig")})).ok
    assert not compare(Ledger().add(facts), view({6: digest("x")}, last=7)).ok


def test_a_conflict_settles_its_accepted_bytes_unstored_and_needs_the_original_kept() -> None:
    facts = [fact(0, "new", A.AUDIT_OUTCOME_ACCEPTED), fact(1, "new", A.AUDIT_OUTCOME_CONFLICT, 7)]
    ledger = Ledger().add(facts)
    assert not ledger.unsettled and not ledger.stored
    assert compare(ledger, view({7: digest("orig")})).ok
    assert not compare(ledger, view({6: digest("x")}, last=7)).ok
    entry = A.AuditEntry(
        action=A.AUDIT_ACTION_PUBLISH, outcome=A.AUDIT_OUTCOME_CONFLICT, event_digest=digest("n")
    )
    assert [f.outcome for f in publish_facts([(0, entry.SerializeToString())])] == [
        A.AUDIT_OUTCOME_CONFLICT
    ]


def test_unsettled_events_are_settled_as_stored_where_found_and_as_failed_where_not() -> None:
    facts = [fact(0, "found", A.AUDIT_OUTCOME_ACCEPTED), fact(1, "gone", A.AUDIT_OUTCOME_ACCEPTED)]
    verdict = compare(Ledger().add(facts), view({4: digest("found")}))
    assert verdict.ok
    assert [(f.event_id, s) for f, s in verdict.settled] == [("found", 4)]
    assert [f.event_id for f in verdict.unknown] == ["gone"]
    entries = settlement(verdict)
    assert [(e.event_id, e.outcome, e.stream_sequence) for e in entries] == [
        ("found", A.AUDIT_OUTCOME_STORED, 4),
        ("gone", A.AUDIT_OUTCOME_FAILED, 0),
    ]
    assert publish_facts(enumerate(e.SerializeToString() for e in entries))[0].digest == digest(
        "found"
    )


def test_only_publish_facts_with_a_digest_count_and_undecodable_entries_are_skipped() -> None:
    entries = [
        A.AuditEntry(action=A.AUDIT_ACTION_GATEWAY_START).SerializeToString(),
        A.AuditEntry(action=A.AUDIT_ACTION_PUBLISH, outcome=A.AUDIT_OUTCOME_INVALID).SerializeToString(),
        b"\xff\xff",
        A.AuditEntry(
            action=A.AUDIT_ACTION_PUBLISH, outcome=A.AUDIT_OUTCOME_STORED, event_id="e",
            event_digest=b"d" * 32, stream_sequence=3,
        ).SerializeToString(),
    ]  # fmt: skip
    [only] = publish_facts(enumerate(entries))
    assert (only.index, only.event_id, only.sequence) == (3, "e", 3)
