"""The drills' Jepsen-style checker (gateway.testkit.history): each anomaly is counted, and a clean run
with faults that redelivery repaired passes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.testkit.history import History, check


def clean_history(events: int = 6) -> History:
    """Two publishers, one subscriber that read and acked everything, three agreeing nodes."""
    history = History()
    history.subscriber("police")
    stream = []
    for index in range(events):
        publisher, event = f"p{index % 2}", f"e{index}"
        history.attempted(publisher, event)
        history.published(publisher, event)
        history.delivered("police", event, sequence=index + 1)
        history.confirmed("police", event)
        stream.append((index + 1, event))
    for node in ("n1", "n2", "n3"):
        history.final_read(node, stream)
    return history


def test_a_clean_run_is_ok() -> None:
    verdict = check(clean_history())
    assert verdict.ok, verdict.describe()
    assert (verdict.attempted, verdict.acknowledged, verdict.delivered) == (6, 6, 6)
    assert verdict.redelivered == 0


def test_an_acknowledged_event_never_read_is_lost_and_a_hole_is_lost_middle() -> None:
    history = History()
    history.subscriber("police")
    for event in ("a", "b", "c", "d"):
        history.attempted("p", event)
        history.published("p", event)
    for sequence, event in ((1, "a"), (3, "c")):  # b is a hole, d a cut-off tail
        history.delivered("police", event, sequence=sequence)
        history.confirmed("police", event)
    verdict = check(history)
    assert verdict.lost == ("police: b", "police: d")
    assert verdict.lost_middle == ("police: b",)
    assert not verdict.ok
    assert "lost 2, lost-middle 1" in verdict.describe()


def test_reads_of_unknown_and_refused_events() -> None:
    history = clean_history(2)
    history.attempted("p0", "maybe")  # the call timed out; it was stored after all: fine
    history.attempted("p0", "no")
    history.refused("p0", "no")  # refused, yet delivered: a false refusal
    for sequence, event in ((3, "maybe"), (4, "no"), (5, "ghost")):
        history.delivered("police", event, sequence=sequence)
        history.confirmed("police", event)
    verdict = check(history)
    assert verdict.unexpected == ("police: ghost", "police: no")
    assert (verdict.unknown, verdict.recovered, verdict.refused) == (1, 1, 1)
    assert verdict.lost == ()


def test_redelivery_before_the_confirmed_ack_is_fine_after_it_is_a_duplicate() -> None:
    history = clean_history(2)
    history.delivered("police", "e0", sequence=1)  # after its confirmed ack
    verdict = check(history)
    assert verdict.duplicates_after_ack == ("police: e0",)

    history = History()
    history.subscriber("police")
    history.attempted("p", "x")
    history.published("p", "x")
    history.delivered("police", "x", sequence=1)  # a stalled subscriber: redelivered
    history.delivered("police", "x", sequence=1)
    verdict = check(history)
    assert verdict.unacknowledged == ("police: x",)
    history.confirmed("police", "x")
    verdict = check(history)
    assert verdict.redelivered == 1 and verdict.ok


def test_a_subscriber_only_expects_what_it_subscribed_to() -> None:
    history = clean_history(2)
    history.subscriber("transport", expects={"e1"})
    verdict = check(history)
    assert verdict.lost == ("transport: e1",)
    history.delivered("transport", "e1", sequence=2)
    history.confirmed("transport", "e1")
    assert check(history).ok


def test_nodes_that_disagree_with_the_majority_diverge() -> None:
    history = clean_history(3)
    history.final_read("n3", [(1, "e0"), (2, "e2"), (3, "e1")])
    verdict = check(history)
    assert verdict.divergent_nodes == ("n3",)
    history.final_read("n2", [(1, "e0"), (2, "e1")])  # e2 acknowledged, gone from n2
    verdict = check(history)
    assert verdict.missing_from_stream == ("n2: e2",)
    assert set(verdict.divergent_nodes) == {"n2", "n3"}


def test_an_event_stored_twice_is_reported() -> None:
    history = clean_history(2)
    for node in ("n1", "n2", "n3"):
        history.final_read(node, [(1, "e0"), (2, "e1"), (3, "e1")])
    verdict = check(history)
    assert verdict.stored_twice == ("e1",) and verdict.divergent_nodes == ()


def test_misuse_is_refused() -> None:
    history = History()
    history.attempted("p", "a")
    with pytest.raises(ValueError, match="attempted twice"):
        history.attempted("q", "a")
    with pytest.raises(ValueError, match="never attempted"):
        history.published("q", "a")
    history.published("p", "a")
    with pytest.raises(ValueError, match="acknowledged, then refused"):
        history.refused("p", "a")


@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_lost_middle_is_exactly_the_lost_events_before_the_last_one_read(read: list[bool]) -> None:
    history = History()
    history.subscriber("s")
    for index, was_read in enumerate(read):
        history.attempted("p", str(index))
        history.published("p", str(index))
        if was_read:
            history.delivered("s", str(index), sequence=index + 1)
            history.confirmed("s", str(index))
    verdict = check(history)
    last = max((i for i, r in enumerate(read) if r), default=-1)
    assert verdict.lost == tuple(sorted(f"s: {i}" for i, r in enumerate(read) if not r))
    assert verdict.lost_middle == tuple(f"s: {i}" for i, r in enumerate(read) if not r and i < last)


def test_an_ack_without_confirmation_counts_unless_the_event_comes_back() -> None:
    history = History()
    history.subscriber("police")
    history.attempted("p", "x")
    history.published("p", "x")
    history.delivered("police", "x", sequence=1)
    history.ack_unconfirmed("police", "x")
    assert check(history).ok
    history.delivered("police", "x", sequence=1)  # it came back: the ack had not landed
    history.confirmed("police", "x")
    verdict = check(history)
    assert verdict.ok and verdict.redelivered == 1
