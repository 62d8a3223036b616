"""An in-memory key-value store with the same compare-and-set rules as the JetStream one, for
tests of the code above it (guards, workflows) that need no server.

    store = MemoryKeyValue(BucketSpec(AGGREGATES_BUCKET))
    revision = await store.create("lifecycle.incident.42", b"reported")

tests/test_kv.py runs one contract against both, so they do not drift apart.
"""

from __future__ import annotations

from gateway.core.kv import ConflictError, TooManyKeysError, Versioned, check_key, check_value
from gateway.core.streams import BucketSpec


class MemoryKeyValue:
    """One bucket in a dict. Revisions count writes to the bucket, as JetStream's do."""

    def __init__(self, spec: BucketSpec) -> None:
        self.spec = spec
        self._entries: dict[str, Versioned] = {}
        self._last_revision = 0

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
        current = self._entries.get(key)
        if (current.revision if current else 0) != expected_revision:
            raise ConflictError.lost(self.spec.name, key, expected_revision)
        self._last_revision += 1
        self._entries[key] = Versioned(bytes(value), self._last_revision)
        return self._last_revision

    async def delete(self, key: str, expected_revision: int) -> None:
        current = self._entries.get(check_key(key))
        if current is None or current.revision != expected_revision:
            raise ConflictError.lost(self.spec.name, key, expected_revision)
        self._last_revision += 1
        del self._entries[key]

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        under = f"{check_key(prefix)}."
        found = sorted(key for key in self._entries if key.startswith(under))
        if len(found) > limit:
            raise TooManyKeysError(f"more than {limit} keys under {prefix} in {self.spec.name}")
        return found
