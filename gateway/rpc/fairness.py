"""Fair turns at the CPU-bound part of publishing (admission: validation and the policy), for
asyncio: `async with scheduler.turn(agency):` around each piece of such work, and `in_turns` to
cut a batch into pieces, one turn each. The order is gateway.core.quotas.FairTurns': when the work
is contended, the next turn goes round-robin over the agencies waiting. So another agency's
event waits for at most one piece of an abusive agency's batch, not for whole batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from gateway.core.quotas import FairTurns

T = TypeVar("T")
R = TypeVar("R")

# How long one turn at admission may hold the event loop: every await of another agency's call
# may wait this long once per abusive agency (a 4 KB event takes ~1.5 ms to admit); a turn
# costs some microseconds.
ADMISSION_SLICE_SECONDS = 0.002


class FairScheduler:
    def __init__(self, slots: int = 1) -> None:
        self._turns = FairTurns(slots)
        self._waiting: dict[int, asyncio.Future[None]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, agency: str) -> AsyncIterator[None]:
        ticket, started = self._turns.request(agency)
        if not started:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[ticket] = ready
            try:
                await ready
            except BaseException:
                if self._waiting.pop(ticket, None) is not None:
                    self._turns.cancel(agency, ticket)  # gave up while queued
                else:
                    self._start(self._turns.finish())  # given the turn, but cancelled meanwhile
                raise
        try:
            yield
            # Hold the turn across one pass of the event loop: the work is synchronous, so
            # this pass is when other calls get as far as asking for a turn, and they must
            # find it taken to be queued in fair order (else the loop's FIFO order rules,
            # which favours the agency with the most calls).
            await asyncio.sleep(0)
        finally:
            self._start(self._turns.finish())

    def _start(self, tickets: list[int]) -> None:
        for ticket in tickets:
            ready = self._waiting.pop(ticket)
            if not ready.done():  # else cancelled just now: its waiter passes the turn on
                ready.set_result(None)

    async def in_turns(
        self,
        agency: str,
        items: Sequence[T],
        work: Callable[[Sequence[T]], list[R]],
        slice_seconds: float = ADMISSION_SLICE_SECONDS,
    ) -> list[R]:
        """`work` over `items`, one item at a time, for up to `slice_seconds` per turn (at
        least one item each); results in order."""
        results: list[R] = []
        index = 0
        while index < len(items):
            async with self.turn(agency):
                ends = time.perf_counter() + slice_seconds
                while index < len(items):
                    results += work(items[index : index + 1])
                    index += 1
                    if time.perf_counter() >= ends:
                        break
        return results


class StoreWindow:
    """Each agency's batch events on their way to JetStream at once: at most `limit`, sent in
    pieces of half that (one piece per call at a time). JetStream stores in the order received,
    so another agency's event waits behind at most this many of one abusive agency's events,
    instead of behind every event of its batches in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.piece = max(1, limit // 2)
        self._held: dict[str, int] = {}
        self._changed = asyncio.Condition()

    def _fits(self, agency: str, count: int) -> bool:
        held = self._held.get(agency, 0)
        return held == 0 or held + count <= self.limit

    async def in_pieces(
        self,
        agency: str,
        items: Sequence[T],
        work: Callable[[Sequence[T]], Awaitable[list[R]]],
    ) -> list[R]:
        """`work` over `items` piece by piece, within the agency's window; results in order."""
        results: list[R] = []
        for start in range(0, len(items), self.piece):
            piece = items[start : start + self.piece]
            count = len(piece)
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._fits, agency, count))
                self._held[agency] = self._held.get(agency, 0) + count
            try:
                results += await work(piece)
            finally:
                async with self._changed:
                    self._held[agency] -= count
                    if not self._held[agency]:
                        del self._held[agency]
                    self._changed.notify_all()
        return results
