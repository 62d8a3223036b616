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


class TooManyKeysError(StoreRejectedError):
    """More keys under a prefix than the caller's limit."""


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

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        """The keys under `prefix` (whole tokens), sorted. TooManyKeysError if there are more
        than `limit`: a caller never reads an unbounded list by accident."""
        ...
