"""The delivery state machine of one Subscribe stream (gateway.core.delivery), with no server:
what a fetched message becomes, what a redelivery supersedes, which answers count, and that
nothing follows an ack; then the same as invariants over random interleavings."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.core.delivery import (
    ACKED_AGAIN,
    NOT_AWAITED,
    UNDECODABLE,
    Fate,
    NotAwaited,
    Plan,
    Session,
    Taken,
    deliveries_made,
)

MAX_DELIVERIES = 5


def sent(session: Session[str], sequence: int, attempt: int = 1) -> int:
    """Screen and judge a readable, allowed message; its delivery id."""
    assert session.screen(sequence, attempt).fate is Fate.READ
    plan = session.judge(sequence, f"message {sequence}/{attempt}", readable=True, allowed=True)
    assert plan.fate is Fate.SEND
    return plan.delivery_id


@pytest.fixture
def session() -> Session[str]:
    return Session(limit=3, max_deliveries=MAX_DELIVERIES)


def test_an_allowed_event_is_sent_and_awaited_in_the_window(session: Session[str]) -> None:
    first, second = sent(session, 10), sent(session, 11)
    assert (first, second) == (1, 2)
    assert session.free == 1
    assert session.awaited() == ["message 10/1", "message 11/1"]


def test_an_event_the_policy_denies_is_withheld_and_takes_no_place_in_the_window(
    session: Session[str],
) -> None:
    assert session.judge(10, "m", readable=True, allowed=False) == Plan(Fate.WITHHOLD)
    assert session.free == 3 and session.awaited() == []


def test_an_undecodable_event_is_dead_lettered(session: Session[str]) -> None:
    plan = session.judge(10, "m", readable=False, allowed=True)
    assert plan == Plan(Fate.DEAD_LETTER, UNDECODABLE)
    assert session.free == 3


def test_an_event_offered_past_the_delivery_limit_is_dead_lettered(session: Session[str]) -> None:
    plan = session.screen(10, MAX_DELIVERIES + 1)
    assert plan == Plan(Fate.DEAD_LETTER, "not acknowledged after 5 deliveries")
    assert deliveries_made(MAX_DELIVERIES + 1, MAX_DELIVERIES) == MAX_DELIVERIES
    assert session.screen(10, MAX_DELIVERIES).fate is Fate.READ


def test_a_redelivery_supersedes_the_stale_delivery_when_it_is_planned(
    session: Session[str],
) -> None:
    stale = sent(session, 10)
    fresh = sent(session, 10, attempt=2)  # planned, not yet recorded or sent
    assert session.delivery_of(10) == fresh
    assert session.awaited() == ["message 10/2"]
    answer = session.take(stale, ack=True)
    assert answer == NotAwaited(stale)
    assert "superseded" in answer.reason and answer.reason == NOT_AWAITED
    assert session.take(fresh, ack=True) == Taken(fresh, 10, "message 10/2")


def test_an_unknown_or_answered_delivery_id_is_not_awaited(session: Session[str]) -> None:
    delivery_id = sent(session, 10)
    assert isinstance(session.take(99, ack=True), NotAwaited)
    assert isinstance(session.take(delivery_id, ack=True), Taken)
    assert session.take(delivery_id, ack=True) == NotAwaited(delivery_id)
    assert session.take(delivery_id, ack=False) == NotAwaited(delivery_id)


def test_an_answer_frees_a_place_in_the_window(session: Session[str]) -> None:
    ids = [sent(session, sequence) for sequence in (10, 11, 12)]
    assert session.free == 0
    session.take(ids[1], ack=False)
    assert session.free == 1
    assert session.awaited() == ["message 10/1", "message 12/1"]


def test_a_redelivery_while_the_ack_is_on_its_way_is_held_back(session: Session[str]) -> None:
    session.take(sent(session, 10), ack=True)
    assert session.screen(10, 2).fate is Fate.HOLD_BACK
    assert session.screen(10, 2, ack_confirmed=True).fate is Fate.HOLD_BACK


def test_a_redelivery_after_a_failed_ack_is_sent_again(session: Session[str]) -> None:
    session.take(sent(session, 10), ack=True)
    session.settled(10, acked=False)
    assert sent(session, 10, attempt=2) == 2


def test_a_redelivery_after_a_nack_is_sent_again(session: Session[str]) -> None:
    session.take(sent(session, 10), ack=False)
    assert session.screen(10, 2).fate is Fate.READ
    session.settled(10, acked=False)
    assert sent(session, 10, attempt=2) == 2


def test_nothing_follows_an_ack_within_the_fetch_it_settled_in(session: Session[str]) -> None:
    session.begin_fetch()
    session.take(sent(session, 10), ack=True)
    session.settled(10, acked=True)
    assert session.screen(10, 2) == Plan(Fate.ACK_AGAIN, ACKED_AGAIN)


def test_after_the_next_fetch_begins_the_store_s_ack_record_answers(session: Session[str]) -> None:
    session.take(sent(session, 10), ack=True)
    session.settled(10, acked=True)
    session.begin_fetch()
    assert session.screen(10, 2).fate is Fate.READ  # the store is asked instead
    assert session.screen(10, 2, ack_confirmed=True) == Plan(Fate.ACK_AGAIN, ACKED_AGAIN)


def test_a_confirmed_ack_beats_the_delivery_limit(session: Session[str]) -> None:
    plan = session.screen(10, MAX_DELIVERIES + 1, ack_confirmed=True)
    assert plan.fate is Fate.ACK_AGAIN


class DeliveryMachine(RuleBasedStateMachine):
    """A subscriber and JetStream as adversaries: JetStream may offer any published sequence
    at any moment (a redelivery after an ack wait, or after a consumer leader change), the
    subscriber may answer any delivery id, live or not, and acks settle in any order, or fail.

    The store's record of settled acks stands for both the double ack and the confirmed-ack
    record: the servicer looks it up after a fetch begins, so it knows at least the acks
    settled before then (modelled here as exactly those)."""

    @initialize(limit=st.integers(1, 4))
    def open(self, limit: int) -> None:
        self.session: Session[int] = Session(limit, MAX_DELIVERIES)
        self.published = 0
        self.attempts: Counter[int] = Counter()
        self.live: dict[int, int] = {}  # sequence → its live delivery id, as the model sees it
        self.issued: set[int] = set()  # every delivery id ever sent
        self.acking: Counter[int] = Counter()  # sequences whose ack was taken, not yet settled
        self.recorded: set[int] = set()  # sequences whose ack settled
        self.known_at_fetch: set[int] = set()
        self.budget = 0  # what the current fetch may still return
        self.unsettled: list[tuple[int, int, bool]] = []  # (delivery id, sequence, ack)
        self.confirmations: Counter[int] = Counter()

    @rule()
    def publish(self) -> None:
        self.published += 1

    @rule()
    def begin_fetch(self) -> None:
        self.session.begin_fetch()
        self.budget = self.session.free
        self.known_at_fetch = set(self.recorded)

    @precondition(lambda self: self.published > 0 and self.budget > 0)
    @rule(data=st.data(), readable=st.booleans(), allowed=st.booleans())
    def offer(self, data: st.DataObject, readable: bool, allowed: bool) -> None:
        sequence = data.draw(st.integers(1, self.published), label="sequence")
        self.budget -= 1
        self.attempts[sequence] += 1
        attempt = self.attempts[sequence]
        plan = self.session.screen(sequence, attempt, ack_confirmed=sequence in self.known_at_fetch)
        assert (plan.fate is Fate.HOLD_BACK) == (self.acking[sequence] > 0)
        if plan.fate is Fate.READ:
            plan = self.session.judge(sequence, sequence, readable=readable, allowed=allowed)
        if plan.fate is not Fate.SEND:
            return
        # Nothing follows an ack: neither one on its way nor one settled.
        assert self.acking[sequence] == 0 and sequence not in self.recorded
        assert plan.delivery_id not in self.issued
        self.issued.add(plan.delivery_id)
        self.live[sequence] = plan.delivery_id  # superseding any stale one

    @precondition(lambda self: self.issued)
    @rule(data=st.data(), ack=st.booleans())
    def answer(self, data: st.DataObject, ack: bool) -> None:
        delivery_id = data.draw(st.integers(0, max(self.issued) + 1), label="delivery id")
        taken = self.session.take(delivery_id, ack=ack)
        live = {d: s for s, d in self.live.items()}
        if delivery_id not in live:  # superseded, answered or unknown: never confirmed
            assert taken == NotAwaited(delivery_id, NOT_AWAITED)
            return
        assert isinstance(taken, Taken) and taken.sequence == live[delivery_id]
        assert taken.handle == taken.sequence
        del self.live[taken.sequence]
        if ack:
            self.acking[taken.sequence] += 1
        self.unsettled.append((delivery_id, taken.sequence, ack))

    @precondition(lambda self: self.unsettled)
    @rule(data=st.data(), succeeded=st.booleans())
    def settle(self, data: st.DataObject, succeeded: bool) -> None:
        index = data.draw(st.integers(0, len(self.unsettled) - 1), label="which")
        delivery_id, sequence, ack = self.unsettled.pop(index)
        self.session.settled(sequence, acked=ack and succeeded)
        if ack:
            self.acking[sequence] -= 1
            if succeeded:
                self.confirmations[delivery_id] += 1
                self.recorded.add(sequence)

    @invariant()
    def the_window_never_exceeds_its_limit(self) -> None:
        assert 0 <= self.session.free <= self.session.limit

    @invariant()
    def at_most_one_live_delivery_per_sequence(self) -> None:
        awaited = self.session.awaited()
        assert len(awaited) == len(set(awaited))
        assert sorted(awaited) == sorted(self.live)
        for sequence, delivery_id in self.live.items():
            assert self.session.delivery_of(sequence) == delivery_id

    @invariant()
    def every_ack_is_confirmed_at_most_once(self) -> None:
        assert all(count == 1 for count in self.confirmations.values())


DeliveryMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
test_delivery_machine = DeliveryMachine.TestCase
