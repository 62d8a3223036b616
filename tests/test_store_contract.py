"""The store's ports (gateway.core.ports): one contract, run against the in-memory store
(gateway.testkit.memory_store) and against JetStream on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core import envelope, subjects
from gateway.core.lanes import Lane
from gateway.core.ports import Stored, StoreRejectedError, StoreUnavailableError
from gateway.store.jetstream import EventStore
from gateway.testkit.inprocess import config_for_tests, nats_for_tests
from gateway.testkit.memory_store import MemoryStore

SUBJECT = f"{subjects.EVENTS_PREFIX}.contract.test"


@pytest.fixture(params=["memory", "jetstream"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    async with nats_for_tests(tmp_path / "nats") as url:
        jetstream = EventStore(config_for_tests())
        await jetstream.connect(url)
        try:
            await jetstream.ensure_streams()
            yield jetstream
        finally:
            await jetstream.close()


def _headers(event_id: str, digest: bytes | None = None) -> dict[str, str]:
    headers = {"Nats-Msg-Id": event_id, "ce-id": event_id, "ce-source": "fire"}
    if digest is not None:
        headers[envelope.CONTENT_DIGEST_HEADER] = digest.hex()
    return headers


async def _fetch(subscription: Any, count: int) -> list[Any]:
    """`count` messages, as they arrive (a server hands them over in more than one fetch)."""
    fetched: list[Any] = []
    for _ in range(20):
        fetched += await subscription.fetch(count - len(fetched), 0.5)
        if len(fetched) >= count:
            break
    return fetched


async def test_a_new_event_is_stored_and_its_retry_is_a_duplicate_at_the_same_sequence(
    store: Any,
) -> None:
    first = await store.publish(SUBJECT, b"one", _headers("e1", b"\x01" * 32), 5.0)
    again = await store.publish(SUBJECT, b"one", _headers("e1", b"\x01" * 32), 5.0)
    other = await store.publish(SUBJECT, b"two", _headers("e2"), 5.0)
    assert first == Stored(first.sequence, duplicate=False)
    assert again.duplicate and not again.conflict and again.sequence == first.sequence
    assert not other.duplicate and other.sequence > first.sequence


async def test_other_content_under_a_stored_id_is_a_conflict_naming_both_digests(
    store: Any,
) -> None:
    original, changed = b"\x01" * 32, b"\x02" * 32
    first = await store.publish(SUBJECT, b"one", _headers("e1", original), 5.0)
    (outcome,) = await store.publish_pipelined([(SUBJECT, b"two", _headers("e1", changed))], 5.0)
    assert outcome == Stored(first.sequence, True, True, changed, original)


async def test_a_subject_outside_the_stream_fails_in_its_place_in_the_batch(store: Any) -> None:
    elsewhere = subjects.deadletter_subject("police", "contract")
    outcomes = await store.publish_pipelined(
        [
            (SUBJECT, b"a", _headers("a")),
            (elsewhere, b"b", _headers("b")),  # another stream's: refused
            ("not.a.stream", b"c", _headers("c")),  # nobody's: no answer
        ],
        5.0,
    )
    assert isinstance(outcomes[0], Stored)
    assert isinstance(outcomes[1], StoreRejectedError)
    assert isinstance(outcomes[2], StoreUnavailableError)


async def test_a_subscription_delivers_new_events_until_they_are_acked(store: Any) -> None:
    await store.publish(SUBJECT, b"before", _headers("e0"), 5.0)
    subscription = await store.open_subscription("police", "contract", [SUBJECT], 10)
    try:
        await store.publish(SUBJECT, b"one", _headers("e1"), 5.0)
        await store.publish(SUBJECT, b"two", _headers("e2"), 5.0)
        messages = await _fetch(subscription, 2)
        assert [m.data for m in messages] == [b"one", b"two"]
        assert messages[0].headers["ce-id"] == "e1"
        for message in messages:
            await store.ack(message)
        assert await subscription.fetch(10, 0.5) == []
    finally:
        await subscription.close()


async def test_urgent_events_overtake_a_routine_backlog_and_each_lane_keeps_its_order(
    store: Any,
) -> None:
    urgent = subjects.lane_filters([SUBJECT], Lane.URGENT)[0]
    subscription = await store.open_subscription("police", "lanes", [SUBJECT], 10)
    try:
        for number in range(6):
            await store.publish(SUBJECT, f"routine {number}".encode(), _headers(f"r{number}"), 5.0)
        await store.publish(urgent, b"urgent 0", _headers("u0"), 5.0)
        await store.publish(urgent, b"urgent 1", _headers("u1"), 5.0)
        await store.publish(SUBJECT, b"routine 6", _headers("r6"), 5.0)
        first = await _fetch(subscription, 3)
        assert [m.data for m in first] == [b"urgent 0", b"urgent 1", b"routine 0"]
        rest = await _fetch(subscription, 6)
        assert [m.data for m in rest] == [f"routine {n}".encode() for n in range(1, 7)]
        for message in first + rest:
            await store.ack(message)
        assert await subscription.fetch(10, 0.2) == []
    finally:
        await subscription.close()


async def test_a_confirmed_ack_is_recorded_for_every_replica(store: Any) -> None:
    consumer = subjects.consumer_name("police", "contract")
    await store.record_confirmed_ack(consumer, 5)
    assert await store.ack_confirmed(consumer, 5)
    assert not await store.ack_confirmed(consumer, 6)


async def test_a_dead_letter_is_kept_listed_and_replayed_to_its_subscription_only(
    store: Any,
) -> None:
    subscription = await store.open_subscription("police", "contract", [SUBJECT], 10)
    try:
        stored = await store.publish(SUBJECT, b"poison", _headers("e1"), 5.0)
        (message,) = await _fetch(subscription, 1)
        await store.dead_letter(message, "police", "contract", deliveries=3, reason="never acked")
        (letter,) = await store.dead_letters("police", "contract")
        assert (letter.agency, letter.subscription, letter.event_id, letter.source) == (
            "police",
            "contract",
            "e1",
            "fire",
        )
        assert (letter.original_sequence, letter.deliveries, letter.reason) == (
            stored.sequence,
            3,
            "never acked",
        )
        assert await store.dead_letters("fire") == []
        assert await store.dead_letter_at(letter.sequence) == letter
        with pytest.raises(StoreRejectedError):
            await store.dead_letter_at(letter.sequence + 100)
        replayed_letter, first = await store.replay_dead_letter(letter.sequence)
        _, again = await store.replay_dead_letter(letter.sequence)
        assert replayed_letter == letter and not first.duplicate
        assert again.duplicate and again.sequence == first.sequence
        (replayed,) = await _fetch(subscription, 1)
        assert replayed.data == b"poison"
        assert [d.event_id for d in await store.dead_letters()] == ["e1"], "replay keeps it"
    finally:
        await subscription.close()


async def test_grants_are_kept_once_per_id_and_followed_from_the_first(store: Any) -> None:
    followed: list[bytes] = []
    first = await store.record_grant("g1", b"first")
    assert not first.duplicate
    await store.follow_grants(followed.append)
    assert (await store.record_grant("g1", b"first")).duplicate
    await store.record_grant("g2", b"second")
    for _ in range(50):
        if len(followed) >= 2:
            break
        await asyncio.sleep(0.1)
    assert followed == [b"first", b"second"]
