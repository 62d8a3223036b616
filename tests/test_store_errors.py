"""How JetStream's answers become the gateway's: retryable where the outcome is open, refusals
only where nothing was stored; and the replica's memory of confirmed acks."""

from __future__ import annotations

from structlog.testing import capture_logs

from gateway.core.ports import StoreFullError, StoreRejectedError, StoreUnavailableError
from gateway.store.connection import NatsErrorLog
from gateway.store.errors import api_error


def test_an_earlier_try_still_in_process_is_retryable_not_a_refusal() -> None:
    # Seen in the partition drill: a timed-out publish retried while its first try was still
    # being replicated; calling it a refusal reported stored events as refused.
    error = api_error(409, "duplicate message id is in process")
    assert isinstance(error, StoreUnavailableError)
    assert isinstance(
        api_error(503, "JetStream system temporarily unavailable"), StoreUnavailableError
    )
    assert isinstance(api_error(503, "maximum bytes exceeded"), StoreFullError)
    assert isinstance(api_error(400, "expected stream does not match"), StoreRejectedError)


async def test_a_repeating_nats_error_is_said_once_then_at_most_once_a_minute_with_its_count() -> (
    None
):
    now = [0.0]
    errors = NatsErrorLog(repeat_seconds=60.0, clock=lambda: now[0])
    refused = ConnectionRefusedError(111, "Connect call failed")
    with capture_logs() as logs:
        for _ in range(120):  # a minute of reconnects every 0.5 s
            await errors.report(refused)
            now[0] += 0.5
        await errors.report(refused)
    said = [entry for entry in logs if entry["event"] == "nats.error"]
    assert len(said) == 2
    assert "repeated" not in said[0]
    assert said[1]["repeated"] == 119


async def test_after_a_reconnect_the_same_nats_error_is_news_again() -> None:
    errors = NatsErrorLog(repeat_seconds=60.0, clock=lambda: 0.0)
    with capture_logs() as logs:
        await errors.report(OSError("unreachable"))
        errors.forget()
        await errors.report(OSError("unreachable"))
    assert [entry["event"] for entry in logs] == ["nats.error", "nats.error"]
