"""How JetStream's answers become the gateway's: retryable where the outcome is open, refusals
only where nothing was stored; and the replica's memory of confirmed acks."""

from __future__ import annotations

from gateway.jetstream import (
    StoreFullError,
    StoreRejectedError,
    StoreUnavailableError,
    _api_error,
)
from gateway.service import ConfirmedAcks


def test_an_earlier_try_still_in_process_is_retryable_not_a_refusal() -> None:
    # Seen in the partition drill: a timed-out publish retried while its first try was still
    # being replicated; calling it a refusal reported stored events as refused.
    error = _api_error(409, "duplicate message id is in process")
    assert isinstance(error, StoreUnavailableError)
    assert isinstance(
        _api_error(503, "JetStream system temporarily unavailable"), StoreUnavailableError
    )
    assert isinstance(_api_error(503, "maximum bytes exceeded"), StoreFullError)
    assert isinstance(_api_error(400, "expected stream does not match"), StoreRejectedError)


def test_confirmed_acks_are_kept_per_consumer_up_to_a_bound() -> None:
    acks = ConfirmedAcks(per_consumer=3)
    for sequence in (1, 2, 3, 4):
        acks.add("police_drill", sequence)
    acks.add("fire_drill", 1)
    assert ("police_drill", 1) not in acks  # the oldest made room
    assert all(("police_drill", s) in acks for s in (2, 3, 4))
    assert ("fire_drill", 1) in acks and ("fire_drill", 2) not in acks


def test_confirmed_acks_forget_the_least_recently_acked_consumer() -> None:
    acks = ConfirmedAcks(per_consumer=2, consumers=2)
    acks.add("a", 1)
    acks.add("b", 1)
    acks.add("a", 2)  # a is now the most recent
    acks.add("c", 1)  # room for two consumers: b goes
    assert ("b", 1) not in acks
    assert ("a", 1) in acks and ("a", 2) in acks and ("c", 1) in acks
    acks.add("a", 2)  # again: nothing moves
    acks.add("a", 3)
    assert ("a", 1) not in acks and ("a", 2) in acks and ("a", 3) in acks
