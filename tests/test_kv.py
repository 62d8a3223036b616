"""The key-value store with compare-and-set: one contract, run against the in-memory store and
against JetStream KV on a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import api

from gateway.core.kv import ConflictError, KeyValueStore, TooManyKeysError
from gateway.core.ports import StoreRejectedError
from gateway.core.streams import BucketSpec
from gateway.store.kv import JetStreamKeyValue
from gateway.testkit.inprocess import nats_for_tests
from gateway.testkit.memory_kv import MemoryKeyValue


def _spec(**settings: int) -> BucketSpec:
    # A fresh bucket per test: a shared NATS_URL server keeps buckets between tests.
    return BucketSpec(f"TEST_{uuid.uuid4().hex[:12]}", description="a test bucket", **settings)


@pytest.fixture(params=["memory", "jetstream"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    if request.param == "memory":
        yield MemoryKeyValue(_spec())
        return
    # The nats_url fixture's server, started here: only the jetstream case needs one.
    async with nats_for_tests(tmp_path / "nats") as url:
        client = await nats.connect(url)
        try:
            yield await JetStreamKeyValue.open(client.jetstream(), _spec())
        finally:
            await client.close()


async def test_a_key_never_written_reads_as_none(store: KeyValueStore) -> None:
    assert await store.get("lifecycle.incident.1") is None


async def test_create_writes_an_absent_key_and_get_returns_its_value_and_revision(
    store: KeyValueStore,
) -> None:
    revision = await store.create("lifecycle.incident.1", b"reported")
    assert revision >= 1
    assert await store.get("lifecycle.incident.1") == (b"reported", revision)


async def test_create_of_a_present_key_is_a_conflict_and_keeps_the_first_value(
    store: KeyValueStore,
) -> None:
    revision = await store.create("lifecycle.incident.1", b"reported")
    with pytest.raises(ConflictError, match="another writer came first"):
        await store.create("lifecycle.incident.1", b"reported again")
    assert await store.get("lifecycle.incident.1") == (b"reported", revision)


async def test_update_at_the_read_revision_writes_a_newer_revision(store: KeyValueStore) -> None:
    first = await store.create("lifecycle.incident.1", b"reported")
    second = await store.update("lifecycle.incident.1", b"dispatched", first)
    assert second > first
    assert await store.get("lifecycle.incident.1") == (b"dispatched", second)


async def test_update_at_a_stale_revision_is_a_conflict(store: KeyValueStore) -> None:
    first = await store.create("lifecycle.incident.1", b"reported")
    second = await store.update("lifecycle.incident.1", b"dispatched", first)
    with pytest.raises(ConflictError):
        await store.update("lifecycle.incident.1", b"closed", first)
    assert await store.get("lifecycle.incident.1") == (b"dispatched", second)


async def test_update_of_an_absent_key_is_a_conflict(store: KeyValueStore) -> None:
    other = await store.create("lifecycle.incident.2", b"reported")
    with pytest.raises(ConflictError):
        await store.update("lifecycle.incident.1", b"dispatched", other)
    assert await store.get("lifecycle.incident.1") is None


async def test_two_writers_racing_from_one_revision_exactly_one_wins(
    store: KeyValueStore,
) -> None:
    """Two replicas never both accept a transition from one state."""
    read = await store.create("lifecycle.incident.1", b"reported")
    outcomes = await asyncio.gather(
        *(store.update("lifecycle.incident.1", f"by {n}".encode(), read) for n in range(5)),
        return_exceptions=True,
    )
    won = [(n, r) for n, r in enumerate(outcomes) if isinstance(r, int)]
    assert len(won) == 1
    assert all(isinstance(r, ConflictError) for r in outcomes if not isinstance(r, int))
    winner, revision = won[0]
    assert await store.get("lifecycle.incident.1") == (f"by {winner}".encode(), revision)


async def test_two_creators_racing_for_one_key_exactly_one_wins(store: KeyValueStore) -> None:
    outcomes = await asyncio.gather(
        *(store.create("ledger.engine.7", f"by {n}".encode()) for n in range(5)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, int) for r in outcomes) == 1
    assert all(isinstance(r, ConflictError) for r in outcomes if not isinstance(r, int))


async def test_delete_at_the_read_revision_removes_the_key_and_it_may_be_created_again(
    store: KeyValueStore,
) -> None:
    revision = await store.create("lifecycle.incident.1", b"reported")
    await store.delete("lifecycle.incident.1", revision)
    assert await store.get("lifecycle.incident.1") is None
    assert "lifecycle.incident.1" not in await store.keys("lifecycle", limit=10)
    again = await store.create("lifecycle.incident.1", b"reported again")
    assert await store.get("lifecycle.incident.1") == (b"reported again", again)


async def test_delete_at_a_stale_revision_is_a_conflict_and_keeps_the_key(
    store: KeyValueStore,
) -> None:
    first = await store.create("lifecycle.incident.1", b"reported")
    second = await store.update("lifecycle.incident.1", b"verified", first)
    with pytest.raises(ConflictError):
        await store.delete("lifecycle.incident.1", first)
    assert await store.get("lifecycle.incident.1") == (b"verified", second)


async def test_keys_lists_the_keys_under_a_prefix_sorted(store: KeyValueStore) -> None:
    for key in ("lifecycle.incident.2", "lifecycle.incident.1", "lifecycle.warning.1", "ledger.a"):
        await store.create(key, b"x")
    revision = await store.create("lifecycle.incident.3", b"x")
    await store.update("lifecycle.incident.3", b"y", revision)  # listed once
    assert await store.keys("lifecycle.incident", limit=10) == [
        "lifecycle.incident.1",
        "lifecycle.incident.2",
        "lifecycle.incident.3",
    ]
    assert await store.keys("lifecycle", limit=10) == [
        "lifecycle.incident.1",
        "lifecycle.incident.2",
        "lifecycle.incident.3",
        "lifecycle.warning.1",
    ]
    assert await store.keys("nothing", limit=10) == []


async def test_keys_beyond_the_limit_are_refused_not_cut_short(store: KeyValueStore) -> None:
    for n in range(4):
        await store.create(f"board.row.{n}", b"x")
    assert len(await store.keys("board", limit=4)) == 4
    with pytest.raises(TooManyKeysError, match="more than 3"):
        await store.keys("board", limit=3)


async def test_a_value_larger_than_the_bucket_takes_is_refused(store: KeyValueStore) -> None:
    with pytest.raises(StoreRejectedError, match="exceeds"):
        await store.create("lifecycle.incident.1", b"x" * (64 * 1024 + 1))
    assert await store.get("lifecycle.incident.1") is None


@pytest.mark.parametrize("key", ["", ".a", "a.", "a..b", "a b", "a.*", "a.>"])
async def test_an_invalid_key_is_the_callers_error(store: KeyValueStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid key"):
        await store.get(key)
    with pytest.raises(ValueError, match="invalid key"):
        await store.create(key, b"x")


async def test_a_bucket_keeps_file_storage_and_its_configured_history_and_replicas(
    nats_url: str,
) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        spec = _spec(history=5, max_value_bytes=1024)
        await JetStreamKeyValue.open(js, spec)
        config = (await js.stream_info(f"KV_{spec.name}")).config
        assert config.storage == api.StorageType.FILE
        assert config.max_msgs_per_subject == 5
        assert config.num_replicas == 1
        assert config.max_msg_size == 1024
        assert config.deny_delete
    finally:
        await client.close()


async def test_opening_a_bucket_again_keeps_its_keys_and_takes_new_settings(
    nats_url: str,
) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        spec = _spec(history=1)
        first = await JetStreamKeyValue.open(js, spec)
        revision = await first.create("lifecycle.incident.1", b"reported")
        again = await JetStreamKeyValue.open(js, BucketSpec(spec.name, history=10))
        assert await again.get("lifecycle.incident.1") == (b"reported", revision)
        config = (await js.stream_info(f"KV_{spec.name}")).config
        assert config.max_msgs_per_subject == 10
    finally:
        await client.close()


async def test_the_store_survives_a_reconnect_with_its_revisions(nats_url: str) -> None:
    spec = _spec()
    client = await nats.connect(nats_url)
    revision = await (await JetStreamKeyValue.open(client.jetstream(), spec)).create(
        "lifecycle.incident.1", b"reported"
    )
    await client.close()
    client = await nats.connect(nats_url)
    try:
        store = await JetStreamKeyValue.open(client.jetstream(), spec)
        assert await store.get("lifecycle.incident.1") == (b"reported", revision)
        with pytest.raises(ConflictError):
            await store.update("lifecycle.incident.1", b"late", revision + 1)
    finally:
        await client.close()


def test_bucket_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="history"):
        BucketSpec("DUTYLINK_AGGREGATES", history=65)
    with pytest.raises(ValueError, match="bucket name"):
        BucketSpec("DUTYLINK.AGGREGATES")
