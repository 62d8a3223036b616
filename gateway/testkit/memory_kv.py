"""An in-memory key-value store with the same compare-and-set rules as the JetStream one, for
tests of the code above it (guards, workflows) that need no server.

    store = MemoryKeyValue(BucketSpec(AGGREGATES_BUCKET))
    revision = await store.create("lifecycle.incident.42", b"reported")

tests/test_kv.py runs one contract against both, so they do not drift apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.core.kv import (
    ConflictError,
    Snapshot,
    TooManyKeysError,
    Versioned,
    Write,
    check_key,
    check_value,
    check_writes,
)
from gateway.core.streams import BucketSpec


class MemoryKeyValue:
    """One bucket in a dict. Revisions count writes to the bucket, as JetStream's do; a deleted
    key keeps its deletion's revision, as JetStream's tombstone does."""

    def __init__(self, spec: BucketSpec) -> None:
        self.spec = spec
        self._entries: dict[str, Versioned] = {}
        self._deleted: dict[str, int] = {}
        self._last_revision = 0

    def _revision(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry.revision if entry is not None else self._deleted.get(key, 0)

    async def get(self, key: str) -> Versioned | None:
        return self._entries.get(check_key(key))

    async def create(self, key: str, value: bytes) -> int:
        return self._write(key, value, expected_revision=0)

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        if expected_revision < 1:
            raise ValueError("expected_revision must be a revision read from the store (>= 1)")
        return self._write(key, value, expected_revision)

    def _write(self, key: str, value: bytes, expected_revision: int) -> int:
        check_key(key)
        check_value(self.spec, value)
        # A create over a deleted key succeeds, as JetStream KV's does.
        current = 0 if expected_revision == 0 and key not in self._entries else self._revision(key)
        if current != expected_revision:
            raise ConflictError.lost(self.spec.name, key, expected_revision)
        return self._put(key, value)

    def _put(self, key: str, value: bytes) -> int:
        self._last_revision += 1
        self._entries[key] = Versioned(bytes(value), self._last_revision)
        self._deleted.pop(key, None)
        return self._last_revision

    async def get_many(self, keys: Sequence[str]) -> Snapshot:
        entries = {k: e for k in keys if (e := self._entries.get(check_key(k))) is not None}
        deleted = {k: self._deleted[k] for k in keys if k in self._deleted}
        # A read is a round trip: other writers may run before its answer arrives, as they may
        # on a real store (so races between two guards on one store happen here too).
        await asyncio.sleep(0)
        return Snapshot(entries, deleted)

    async def write_all(self, writes: Sequence[Write]) -> dict[str, int]:
        check_writes(self.spec, writes)
        lost = [w.key for w in writes if self._revision(w.key) != w.expected_revision]
        if lost:
            raise ConflictError.lost_one_of(self.spec.name, lost)
        return {w.key: self._put(w.key, w.value) for w in writes}

    async def delete(self, key: str, expected_revision: int) -> None:
        current = self._entries.get(check_key(key))
        if current is None or current.revision != expected_revision:
            raise ConflictError.lost(self.spec.name, key, expected_revision)
        self._last_revision += 1
        del self._entries[key]
        self._deleted[key] = self._last_revision

    async def entries(self, prefix: str, *, limit: int) -> dict[str, Versioned]:
        under = f"{check_key(prefix)}."
        found = {key: entry for key, entry in self._entries.items() if key.startswith(under)}
        if len(found) > limit:
            raise TooManyKeysError(f"more than {limit} keys under {prefix} in {self.spec.name}")
        return found

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        return sorted(await self.entries(prefix, limit=limit))
