"""Group commit: single items submitted concurrently under one key run together, as one batch.

Unary Publish calls of one agency go through the pipeline PublishBatch uses (one admission
pass, one state write, one audit append, pipelined JetStream writes), each answered with its
own outcome. Up to `max_running` groups of a key run at once: while fewer are running, a call
starts at once, alone, so a gateway below saturation answers as fast as without grouping
(nothing waits for company); once that many are running, the calls arriving meanwhile wait and
go together in the next group, so a busy gateway pays the per-write costs once per group.
(With one group at a time, a call below saturation mostly waited for the group ahead of it:
the figures are at gateway.rpc.publish.UNARY_GROUPS_RUNNING.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Key, Item, Result]):
    """`submit(key, item)` runs `run(key, items)` over the items submitted under `key` while
    `max_running` groups of that key ran (at most `max_group` items a group), in submission
    order within a group; `run` returns one result per item, in order. Groups of one key that
    run at once may finish in any order, as concurrent calls do."""

    def __init__(
        self,
        run: Callable[[Key, Sequence[Item]], Awaitable[Sequence[Result]]],
        max_group: int,
        max_running: int = 1,
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, not {max_group}")
        if max_running < 1:
            raise ValueError(f"max_running must be at least 1, not {max_running}")
        self._run = run
        self._max_group = max_group
        self._max_running = max_running
        self._waiting: dict[Key, list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._running: dict[Key, set[asyncio.Task[None]]] = {}

    async def submit(self, key: Key, item: Item) -> Result:
        """The item's result. A caller that stops waiting (cancelled) does not take the item
        back: it runs with its group all the same (a publish cannot be half undone)."""
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        # Retrieved even if nobody awaits it any more: no "never retrieved" warning.
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._waiting.setdefault(key, []).append((item, answer))
        running = self._running.setdefault(key, set())
        if len(running) < self._max_running:
            running.add(asyncio.create_task(self._drain(key)))
        return await asyncio.shield(answer)

    async def _drain(self, key: Key) -> None:
        try:
            while waiting := self._waiting.pop(key, None):
                group, rest = waiting[: self._max_group], waiting[self._max_group :]
                if rest:
                    self._waiting[key] = rest
                try:
                    results = await self._run(key, [item for item, _ in group])
                except asyncio.CancelledError:
                    for _, answer in group:
                        answer.cancel()
                    raise
                except Exception as error:
                    for _, answer in group:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                if len(results) != len(group):
                    mismatch = RuntimeError(f"{len(results)} results for {len(group)} items")
                    for _, answer in group:
                        if not answer.done():
                            answer.set_exception(mismatch)
                    continue
                for (_, answer), result in zip(group, results, strict=True):
                    if not answer.done():
                        answer.set_result(result)
        finally:
            running = self._running[key]
            if (this := asyncio.current_task()) is not None:
                running.discard(this)
            if not running:
                del self._running[key]
                for _, answer in self._waiting.pop(key, []):  # only when cancelled: say so
                    if not answer.done():
                        answer.cancel()

    async def close(self) -> None:
        """Wait for every group under way (and those waiting behind it) to finish."""
        while self._running:
            tasks = [task for running in self._running.values() for task in running]
            await asyncio.gather(*tasks, return_exceptions=True)
