"""Group commit: single items submitted concurrently under one key run together, as one batch.

Unary Publish calls of one agency that arrive while its previous group is being written wait
for it and then go together through the pipeline PublishBatch uses (one admission pass, one
state write, one audit append, pipelined JetStream writes), each answered with its own outcome.
A call that finds nothing running starts at once, alone: nothing waits for company, so a quiet
gateway answers as fast as before, and a busy one pays the per-write costs once per group.
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
    that key's previous group ran (at most `max_group` at once), in submission order; `run`
    returns one result per item, in order."""

    def __init__(
        self,
        run: Callable[[Key, Sequence[Item]], Awaitable[Sequence[Result]]],
        max_group: int,
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, not {max_group}")
        self._run = run
        self._max_group = max_group
        self._waiting: dict[Key, list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._running: dict[Key, asyncio.Task[None]] = {}

    async def submit(self, key: Key, item: Item) -> Result:
        """The item's result. A caller that stops waiting (cancelled) does not take the item
        back: it runs with its group all the same (a publish cannot be half undone)."""
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        # Retrieved even if nobody awaits it any more: no "never retrieved" warning.
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._waiting.setdefault(key, []).append((item, answer))
        if key not in self._running:
            self._running[key] = asyncio.create_task(self._drain(key))
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
            del self._running[key]
            for _, answer in self._waiting.pop(key, []):  # only when cancelled: say so
                if not answer.done():
                    answer.cancel()

    async def close(self) -> None:
        """Wait for every group under way (and those waiting behind it) to finish."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
