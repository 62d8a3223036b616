"""How JetStream's answers become the gateway's: retryable where the outcome is open, refusals
only where nothing was stored; and the replica's memory of confirmed acks."""

from __future__ import annotations

from gateway.jetstream import (
    StoreFullError,
    StoreRejectedError,
    StoreUnavailableError,
    _api_error,
)


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
