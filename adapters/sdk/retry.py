"""When a call to the gateway is worth trying again, and how long to keep trying.

The gateway's answers fall in three kinds: stored (a receipt), refused for good (the caller's
data or permissions are wrong: trying again changes nothing), and failed for now (the gateway
or its store is unavailable or busy). Only the last is retried; retrying is safe because an
event id is the idempotency key, so a retry of a stored event stores nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import stamina

# Outcomes that may go away when the same call is made again.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
    }
)
# Refusals: the event (or the caller) is at fault, and no retry will change the answer.
REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def code_number(code: grpc.StatusCode) -> int:
    """The numeric value of a status code, as a batch result's `error.code` carries it."""
    return int(code.value[0])


RETRYABLE_CODE_NUMBERS = frozenset(code_number(code) for code in RETRYABLE_CODES)
REFUSAL_CODE_NUMBERS = frozenset(code_number(code) for code in REFUSAL_CODES)


def is_retryable(error: BaseException) -> bool:
    """A failure that may succeed when tried again with the same event ids."""
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in RETRYABLE_CODES


@dataclass(frozen=True)
class Retry:
    """How long to keep trying a publish: at most `attempts` tries within `timeout` seconds,
    waiting `wait_initial` doubling up to `wait_max`, plus up to `wait_jitter` at random."""

    attempts: int = 10
    timeout: float = 60.0
    wait_initial: float = 0.2
    wait_max: float = 10.0
    wait_jitter: float = 1.0

    def context(self, on: Callable[[Exception], bool] = is_retryable) -> Any:
        return stamina.retry_context(
            on=on,
            attempts=self.attempts,
            timeout=self.timeout,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
        )


NO_RETRY = Retry(attempts=1)
# What a client does unless told otherwise: keep trying for a minute. Safe, since an event id
# can never be stored twice, and what a department system wants from a gateway that restarts.
DEFAULT_RETRY = Retry()
