"""A key-value store with compare-and-set: where aggregates (a lifecycle's state, a ledger's
balance) keep their state so that two gateway replicas never both accept a transition from one
state.

Every write names the revision it replaces: `create` only if the key is absent, `update` only if
the key's revision is still the one read. A writer that lost the race gets a conflict, reads
again and decides again. The store at the edge is `gateway.store.kv.JetStreamKeyValue`; the
in-memory one for core tests is `gateway.testkit.memory_kv.MemoryKeyValue`. Both raise the
errors below (`ConflictError`, `TooManyKeysError`) and the rest of the `StoreError` family
(gateway.core.ports). Buckets are declared in the registry (gateway.core.streams.BucketSpec).
Pure: no I/O.

Many keys at once: `get_many` reads them in one request and `write_all` writes them all or none
(each on the revision `get_many` reported: a deleted key is absent but keeps its deletion's
revision, and a batch must name that one). A batch holds at most the bucket's
`max_batch_writes` writes (BatchTooLargeError beyond: write in smaller steps, or key by key).

How a stateful admission guard commits a transition (the guard itself stays pure):

    current = await store.get(key)                       # None: the aggregate's first event
    state = decode(current.value) if current else INITIAL
    next_state = transition(state, event)                # pure; refuses an illegal transition
    if current is None:
        await store.create(key, encode(next_state))
    else:
        await store.update(key, encode(next_state), current.revision)
    # ConflictError: another replica moved the aggregate since the read; read and decide again
    # (a bounded number of times), and the event is refused only if the new state refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gateway.core.ports import StoreRejectedError
from gateway.core.streams import BucketSpec

# Keys are dot-separated tokens ("lifecycle.incident.<id>"), as JetStream KV allows them.
_KEY = re.compile(r"[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*")


def check_key(key: str) -> str:
    """`key` if it is a valid key (tokens of letters, digits and `-/_=`, joined by dots);
    ValueError otherwise: a caller's bug, not a store failure."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid key {key!r}: expected dot-separated tokens of [-/_=a-zA-Z0-9]")
    return key


class ConflictError(StoreRejectedError):
    """Someone else wrote the key first (or it is present, for a create): read it again and
    decide again; retrying the same write will not succeed."""

    @classmethod
    def lost(cls, bucket: str, key: str, expected_revision: int) -> ConflictError:
        wanted = "absent" if expected_revision == 0 else f"at revision {expected_revision}"
        return cls(f"key {key} in {bucket} is no longer {wanted}: another writer came first")

    @classmethod
    def lost_one_of(cls, bucket: str, keys: Sequence[str]) -> ConflictError:
        shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        return cls(
            f"a key of {shown} in {bucket} is no longer at the revision read: another writer "
            "came first (nothing of the batch was written)"
        )


class TooManyKeysError(StoreRejectedError):
    """More keys under a prefix than the caller's limit."""


class BatchTooLargeError(StoreRejectedError):
    """More writes in one `write_all` than the bucket's `max_batch_writes`: nothing written."""


def check_value(spec: BucketSpec, value: bytes) -> None:
    """StoreRejectedError if `value` is larger than the bucket takes."""
    if len(value) > spec.max_value_bytes:
        raise StoreRejectedError(
            f"value of {len(value)} bytes exceeds {spec.name}'s limit of {spec.max_value_bytes}"
        )


class Versioned(NamedTuple):
    """A key's value and the revision that wrote it (what `update` expects next)."""

    value: bytes
    revision: int


class Write(NamedTuple):
    """One write of an atomic batch: `expected_revision` is `Snapshot.revision(key)` of the
    read it follows (0: never written)."""

    key: str
    value: bytes
    expected_revision: int


@dataclass(frozen=True)
class Snapshot:
    """What `get_many` found: the present keys' entries, and the revision of each absent key
    that was deleted (a write of it names that revision, not 0)."""

    entries: dict[str, Versioned]
    deleted: dict[str, int]

    def revision(self, key: str) -> int:
        """The revision a write of `key` expects: its entry's, its deletion's, or 0."""
        entry = self.entries.get(key)
        return entry.revision if entry is not None else self.deleted.get(key, 0)


def check_writes(spec: BucketSpec, writes: Sequence[Write]) -> None:
    """ValueError for a caller's bug (an invalid or repeated key), BatchTooLargeError beyond
    `spec.max_batch_writes`, StoreRejectedError for a value too large."""
    if len(writes) > spec.max_batch_writes:
        raise BatchTooLargeError(
            f"{len(writes)} writes in one batch: {spec.name} takes at most {spec.max_batch_writes}"
        )
    seen: set[str] = set()
    for write in writes:
        if check_key(write.key) in seen:
            raise ValueError(f"key {write.key} twice in one batch")
        seen.add(write.key)
        check_value(spec, write.value)
        if write.expected_revision < 0:
            raise ValueError("expected_revision must be 0 (never written) or a revision read")


class KeyValueStore(Protocol):
    """Revisions are positive and grow with every write to the bucket (not per key)."""

    async def get(self, key: str) -> Versioned | None:
        """The key's current value and revision; None if it was never written."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write the key if it is absent; its revision. ConflictError if it is present."""
        ...

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        """Write the key if its revision is still `expected_revision`; the new revision.
        ConflictError if anyone wrote it since (or it is absent)."""
        ...

    async def delete(self, key: str, expected_revision: int) -> None:
        """Remove the key if its revision is still `expected_revision` (a later `get` says
        None, a later `create` succeeds). ConflictError if anyone wrote it since."""
        ...

    async def get_many(self, keys: Sequence[str]) -> Snapshot:
        """The current entries of `keys` (in one request), and the deletion revision of those
        deleted. Keys absent from both were never written."""
        ...

    async def write_all(self, writes: Sequence[Write]) -> dict[str, int]:
        """Write every key if each is still at its `expected_revision` (0: never written; a
        deleted key's deletion revision), all or none; each key's new revision. ConflictError
        (nothing written) if any changed; BatchTooLargeError (nothing written) beyond the
        bucket's `max_batch_writes`."""
        ...

    async def entries(self, prefix: str, *, limit: int) -> dict[str, Versioned]:
        """The live entries under `prefix` (whole tokens), by key. TooManyKeysError if there are
        more than `limit`: a caller never reads an unbounded list by accident."""
        ...

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        """The keys of `entries`, sorted (for a caller that reads other keys with them)."""
        ...
