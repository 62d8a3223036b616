"""Group commit (gateway.rpc.group_commit), pure: items submitted while a key's group runs go
together in the next group, in order, each answered with its own result; a lone item starts at
once, as does each while fewer than max_running groups run; keys never share a group; a failure
reaches exactly the items of its group; a caller that stops waiting does not take its item
back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.rpc.group_commit import GroupCommit


class Recorder:
    """A `run` that records each group and holds it until released."""

    def __init__(self) -> None:
        self.groups: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()
        self.fail_on: int | None = None

    async def run(self, key: str, items: Sequence[int]) -> list[str]:
        self.groups.append((key, list(items)))
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"item {self.fail_on} is bad")
        return [f"{key}:{item}" for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_items_arriving_while_a_group_runs_go_together_in_order() -> None:
    recorder = Recorder()
    groups: GroupCommit[str, int, str] = GroupCommit(recorder.run, max_group=3)
    first = asyncio.create_task(groups.submit("fire", 1))
    await settle()
    assert recorder.groups == [("fire", [1])], "a lone item starts at once"
    waiting = [asyncio.create_task(groups.submit("fire", n)) for n in (2, 3, 4, 5)]
    police = asyncio.create_task(groups.submit("police", 9))
    await settle()
    recorder.release.set()
    assert await first == "fire:1"
    assert await asyncio.gather(*waiting) == ["fire:2", "fire:3", "fire:4", "fire:5"]
    assert await police == "police:9"
    assert recorder.groups == [
        ("fire", [1]),
        ("police", [9]),  # keys never wait for each other
        ("fire", [2, 3, 4]),  # at most max_group
        ("fire", [5]),
    ]


async def test_up_to_max_running_groups_of_a_key_run_at_once() -> None:
    recorder = Recorder()
    groups: GroupCommit[str, int, str] = GroupCommit(recorder.run, max_group=10, max_running=2)
    alone = []
    for n in (1, 2):
        alone.append(asyncio.create_task(groups.submit("fire", n)))
        await settle()
    assert recorder.groups == [("fire", [1]), ("fire", [2])], "below max_running: at once"
    waiting = [asyncio.create_task(groups.submit("fire", n)) for n in (3, 4, 5)]
    await settle()
    assert len(recorder.groups) == 2, "two groups running: the rest wait"
    recorder.release.set()
    assert await asyncio.gather(*alone, *waiting) == [f"fire:{n}" for n in range(1, 6)]
    assert recorder.groups[2:] == [("fire", [3, 4, 5])]
    await groups.close()
    with pytest.raises(ValueError, match="max_running must be at least 1"):
        GroupCommit(recorder.run, max_group=1, max_running=0)


async def test_a_failure_reaches_the_items_of_its_group_only() -> None:
    recorder = Recorder()
    groups: GroupCommit[str, int, str] = GroupCommit(recorder.run, max_group=10)
    recorder.fail_on = 2
    first = asyncio.create_task(groups.submit("fire", 1))
    await settle()
    bad = [asyncio.create_task(groups.submit("fire", n)) for n in (2, 3)]
    await settle()
    recorder.release.set()
    assert await first == "fire:1"
    for task in bad:
        with pytest.raises(ValueError, match="item 2 is bad"):
            await task
    recorder.fail_on = None
    assert await groups.submit("fire", 4) == "fire:4", "the key goes on after a failure"


async def test_a_caller_that_stops_waiting_leaves_its_item_in_the_group() -> None:
    recorder = Recorder()
    groups: GroupCommit[str, int, str] = GroupCommit(recorder.run, max_group=10)
    caller = asyncio.create_task(groups.submit("fire", 1))
    await settle()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    recorder.release.set()
    await groups.close()
    assert recorder.groups == [("fire", [1])]


async def test_a_run_that_miscounts_its_results_fails_its_group_loudly() -> None:
    async def short(key: str, items: Sequence[int]) -> list[str]:
        return []

    groups: GroupCommit[str, int, str] = GroupCommit(short, max_group=10)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await groups.submit("fire", 1)
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(short, max_group=0)
