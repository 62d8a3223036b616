"""A check the gateway runs every so often in the background (the ledger's expiry timer, the
deadline tracker): `check()` looks once; `run()` looks at once and then every `interval`
seconds until `stopping` is set; `start()`/`stop()` (or `async with`) run it as a task. A check
that raises is logged and the next one comes all the same: a bug must not end the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from gateway.core.started import Started

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class PeriodicCheck(Started):
    """Subclasses define `check` and set `name` (the task's name and the log's event prefix)."""

    name = "periodic"

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be above 0")
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger(f"dutylink.{self.name}")

    async def check(self) -> int:
        raise NotImplementedError

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(self._stopping), name=self.name)

    async def stop(self) -> None:
        """Stop after the check at work, if any; cancelling the task stops at once, equally
        safely (whatever a check does is in the store, not in memory)."""
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await task
            except Exception:
                self._log.exception(f"{self.name}.crashed")

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        stopping = stopping or asyncio.Event()
        while not stopping.is_set():
            try:
                await self.check()
            except Exception:
                self._log.exception(f"{self.name}.check_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)
