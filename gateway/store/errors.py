"""NATS failures as the store's errors (gateway.core.ports: unavailable, full, rejected), and the
retry every JetStream edge uses while NATS fails for a moment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from gateway.core.ports import (
    StoreError,
    StoreFullError,
    StoreRejectedError,
    StoreUnavailableError,
)

# What a NATS operation raises when the connection, the server or JetStream fails.
STORE_FAILURES = (nats.errors.Error, asyncio.TimeoutError, OSError)
T = TypeVar("T")


def api_error(code: int | None, description: str | None) -> StoreError:
    """JetStream's error reply (code and description) as a StoreError."""
    text = (description or "").lower()
    # A full stream answers 503 too ("maximum bytes exceeded"): look at the text first.
    if ("maximum" in text and "exceeded" in text) or "insufficient resources" in text:
        return StoreFullError(f"event stream is full: {description}")
    if code == 503:
        return StoreUnavailableError(f"JetStream unavailable: {description}")
    if "in process" in text:
        # "duplicate message id is in process": the same id's earlier try is still being
        # replicated (e.g. it timed out during a leader change). Its outcome is not known yet:
        # retrying, not refusing, is what keeps a stored event from being reported as refused.
        return StoreUnavailableError(f"JetStream is still storing an earlier try: {description}")
    return StoreRejectedError(f"JetStream refused the event: {description}")


def translate(error: BaseException) -> StoreError:
    """Any failure of a NATS operation as a StoreError."""
    if isinstance(error, StoreError):
        return error
    if isinstance(error, nats.js.errors.APIError):
        return api_error(error.code, error.description)
    if isinstance(error, nats.errors.TimeoutError | asyncio.TimeoutError):
        return StoreUnavailableError("JetStream did not acknowledge in time; outcome unknown")
    return StoreUnavailableError(f"JetStream unreachable: {type(error).__name__}: {error}")


async def tries(operation: Callable[[], Awaitable[T]], attempts: int) -> T:
    """`operation`, tried again while NATS fails (0.2 s, 0.4 s, ... apart), at most `attempts`
    times; the last failure raised as a StoreError."""
    for attempt in range(1, attempts):
        try:
            return await operation()
        except STORE_FAILURES:
            await asyncio.sleep(0.2 * attempt)
    try:
        return await operation()
    except STORE_FAILURES as error:
        raise translate(error) from error
