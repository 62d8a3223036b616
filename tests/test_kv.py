"""The key-value store with compare-and-set: one contract, run against the in-memory store and
against JetStream KV on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import api

from gateway.core.kv import (
    BatchTooLargeError,
    ConflictError,
    KeyValueStore,
    TooManyKeysError,
    Write,
)
from gateway.core.ports import StoreRejectedError
from gateway.core.streams import BucketSpec
from gateway.store.kv import DELETED_KEY_SECONDS, JetStreamKeyValue
from gateway.testkit.inprocess import nats_for_tests
from gateway.testkit.memory_kv import MemoryKeyValue


def _spec(**settings: int) -> BucketSpec:
    # A fresh bucket per test: a shared NATS_URL server keeps buckets between tests.
    return BucketSpec(f"TEST_{uuid.uuid4().hex[:12]}", description="a test bucket", **settings)


@contextlib.asynccontextmanager
async def _opened(kind: str, directory: Path, spec: BucketSpec) -> AsyncIterator[KeyValueStore]:
    if kind == "memory":
        yield MemoryKeyValue(spec)
        return
    # The nats_url fixture's server, started here: only the jetstream case needs one.
    async with nats_for_tests(directory / "nats") as url:
        client = await nats.connect(url)
        try:
            yield await JetStreamKeyValue.open(client.jetstream(), spec)
        finally:
            await client.close()


@pytest.fixture(params=["memory", "jetstream"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    async with _opened(request.param, tmp_path, _spec()) as opened:
        yield opened


@pytest.fixture(params=["memory", "jetstream"])
async def small_batch_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[KeyValueStore]:
    async with _opened(request.param, tmp_path, _spec(max_batch_writes=3)) as opened:
        yield opened


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


async def test_get_many_reads_present_keys_and_leaves_out_those_never_written(
    store: KeyValueStore,
) -> None:
    one = await store.create("lifecycle.incident.1", b"reported")
    two = await store.create("ledger.actual.fire.engine", b"3")
    read = await store.get_many(
        ["lifecycle.incident.1", "lifecycle.incident.9", "ledger.actual.fire.engine"]
    )
    assert read.entries == {
        "lifecycle.incident.1": (b"reported", one),
        "ledger.actual.fire.engine": (b"3", two),
    }
    assert read.deleted == {}
    assert read.revision("lifecycle.incident.9") == 0
    assert (await store.get_many([])).entries == {}


async def test_reads_at_the_same_moment_each_get_their_own_keys(store: KeyValueStore) -> None:
    revisions = [await store.create(f"lifecycle.incident.{n}", f"{n}".encode()) for n in range(8)]
    reads = await asyncio.gather(
        *(store.get_many([f"lifecycle.incident.{n}", "lifecycle.none"]) for n in range(8))
    )
    for n, read in enumerate(reads):
        assert read.entries == {f"lifecycle.incident.{n}": (f"{n}".encode(), revisions[n])}


async def test_write_all_writes_every_key_on_the_revisions_read(store: KeyValueStore) -> None:
    old = await store.create("lifecycle.incident.1", b"reported")
    written = await store.write_all(
        [
            Write("lifecycle.incident.1", b"verified", old),
            Write("lifecycle.incident.2", b"reported", 0),
            Write("thread.actual.x", b"[]", 0),
        ]
    )
    revisions = [written[k] for k in ("lifecycle.incident.1", "lifecycle.incident.2")]
    assert revisions[0] > old
    assert revisions[1] == revisions[0] + 1  # one batch: consecutive revisions
    read = await store.get_many(list(written))
    assert {k: v.revision for k, v in read.entries.items()} == written
    assert read.entries["lifecycle.incident.1"].value == b"verified"
    assert await store.get("thread.actual.x") == (b"[]", written["thread.actual.x"])


async def test_write_all_with_one_stale_revision_writes_nothing(store: KeyValueStore) -> None:
    first = await store.create("lifecycle.incident.1", b"reported")
    second = await store.update("lifecycle.incident.1", b"verified", first)
    with pytest.raises(ConflictError, match="nothing of the batch was written"):
        await store.write_all(
            [
                Write("lifecycle.incident.2", b"reported", 0),
                Write("lifecycle.incident.1", b"closed", first),
                Write("lifecycle.incident.3", b"reported", 0),
            ]
        )
    read = await store.get_many(["lifecycle.incident.1", "lifecycle.incident.2", "x.3"])
    assert read.entries == {"lifecycle.incident.1": (b"verified", second)}


async def test_write_all_creating_a_present_key_writes_nothing(store: KeyValueStore) -> None:
    await store.create("lifecycle.incident.2", b"reported")
    with pytest.raises(ConflictError):
        await store.write_all(
            [Write("lifecycle.incident.1", b"a", 0), Write("lifecycle.incident.2", b"b", 0)]
        )
    assert await store.get("lifecycle.incident.1") is None


async def test_two_batches_racing_from_one_revision_exactly_one_lands_whole(
    store: KeyValueStore,
) -> None:
    """Two replicas never both accept a transition from one state, and the loser leaves
    nothing half-written."""
    read = await store.create("lifecycle.incident.1", b"reported")
    outcomes = await asyncio.gather(
        *(
            store.write_all(
                [
                    Write(f"ledger.actual.fire.item{n}", b"held", 0),
                    Write("lifecycle.incident.1", f"by {n}".encode(), read),
                ]
            )
            for n in range(5)
        ),
        return_exceptions=True,
    )
    won = [n for n, r in enumerate(outcomes) if isinstance(r, dict)]
    assert len(won) == 1
    assert all(isinstance(r, ConflictError) for r in outcomes if not isinstance(r, dict))
    items = await store.keys("ledger", limit=10)
    assert items == [f"ledger.actual.fire.item{won[0]}"]
    assert (await store.get("lifecycle.incident.1")) is not None


async def test_a_deleted_key_reads_absent_with_its_deletion_revision_and_a_batch_creates_it_again(
    store: KeyValueStore,
) -> None:
    revision = await store.create("lifecycle.incident.1", b"reported")
    await store.delete("lifecycle.incident.1", revision)
    read = await store.get_many(["lifecycle.incident.1"])
    assert read.entries == {}
    deleted_at = read.deleted["lifecycle.incident.1"]
    assert deleted_at > revision
    assert read.revision("lifecycle.incident.1") == deleted_at
    with pytest.raises(ConflictError):  # "never written" no longer holds
        await store.write_all([Write("lifecycle.incident.1", b"again", 0)])
    written = await store.write_all([Write("lifecycle.incident.1", b"again", deleted_at)])
    assert await store.get("lifecycle.incident.1") == (
        b"again",
        written["lifecycle.incident.1"],
    )


async def test_a_batch_beyond_the_buckets_limit_is_refused_whole(
    small_batch_store: KeyValueStore,
) -> None:
    writes = [Write(f"lifecycle.incident.{n}", b"reported", 0) for n in range(4)]
    with pytest.raises(BatchTooLargeError, match="at most 3"):
        await small_batch_store.write_all(writes)
    assert await small_batch_store.keys("lifecycle", limit=10) == []
    assert len(await small_batch_store.write_all(writes[:3])) == 3


async def test_a_batch_at_the_limit_lands_whole_and_reads_back_in_one_go(
    store: KeyValueStore,
) -> None:
    writes = [Write(f"lifecycle.incident.{n}", b"reported", 0) for n in range(1000)]
    written = await store.write_all(writes)
    assert sorted(written.values()) == list(range(min(written.values()), max(written.values()) + 1))
    read = await store.get_many([w.key for w in writes])
    assert {k: v.revision for k, v in read.entries.items()} == written


async def test_many_batches_at_once_each_land(store: KeyValueStore) -> None:
    outcomes = await asyncio.gather(
        *(store.write_all([Write(f"a.{n}", b"1", 0), Write(f"b.{n}", b"2", 0)]) for n in range(200))
    )
    assert len({revision for written in outcomes for revision in written.values()}) == 400


async def test_a_batch_naming_a_key_twice_is_the_callers_error(store: KeyValueStore) -> None:
    with pytest.raises(ValueError, match="twice"):
        await store.write_all([Write("a.b", b"1", 0), Write("a.b", b"2", 0)])


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
    entries = await store.entries("lifecycle.incident", limit=10)
    assert {key: entry.value for key, entry in entries.items()} == {
        "lifecycle.incident.1": b"x",
        "lifecycle.incident.2": b"x",
        "lifecycle.incident.3": b"y",
    }
    assert entries["lifecycle.incident.3"] == await store.get("lifecycle.incident.3")


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
        assert config.allow_atomic
        assert config.allow_direct
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
        assert config.allow_atomic
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
    with pytest.raises(ValueError, match="max_batch_writes"):
        BucketSpec("DUTYLINK_AGGREGATES", max_batch_writes=1001)


async def test_a_bucket_made_without_atomic_batches_gets_them_when_opened(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        spec = _spec()
        await js.create_key_value(api.KeyValueConfig(bucket=spec.name))
        store = await JetStreamKeyValue.open(js, spec)
        assert (await js.stream_info(f"KV_{spec.name}")).config.allow_atomic
        assert len(await store.write_all([Write("a.b", b"1", 0), Write("a.c", b"2", 0)])) == 2
    finally:
        await client.close()


async def test_a_deleted_key_leaves_one_marker_that_expires_and_no_history(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        spec = _spec(history=4)
        store = await JetStreamKeyValue.open(js, spec)
        revision = await store.create("tracking_due.a", b"1")
        revision = await store.update("tracking_due.a", b"2", revision)
        await store.create("tracking_due.b", b"1")
        await store.delete("tracking_due.a", revision)
        stream = f"KV_{spec.name}"
        info = await js.stream_info(stream, subjects_filter=f"$KV.{spec.name}.>")
        assert info.config.allow_msg_ttl
        assert info.state.subjects == {f"$KV.{spec.name}.tracking_due.a": 1,
                                       f"$KV.{spec.name}.tracking_due.b": 1}  # fmt: skip
        marker = await js.get_last_msg(stream, f"$KV.{spec.name}.tracking_due.a")
        assert marker.headers is not None
        assert marker.headers["Nats-TTL"] == str(DELETED_KEY_SECONDS)
        assert await store.keys("tracking_due", limit=1) == ["tracking_due.b"]
    finally:
        await client.close()
