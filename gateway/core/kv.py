"""A key-value store with compare-and-set: where aggregates (a lifecycle's state, a ledger's
balance) keep their state so that two gateway replicas never both accept a transition from one
state.

Every write names the revision it replaces: `create` only if the key is absent, `update` only if
the key's revision is still the one read. A writer that lost the race gets a conflict, reads
again and decides again. The store at the edge is `gateway.store.kv.JetStreamKeyValue`; the
in-memory one for core tests is `gateway.testkit.memory_kv.MemoryKeyValue`. Both raise the
store's errors (`gateway.store.kv.ConflictError`, `TooManyKeysError`, and the rest of the
`StoreError` family). Pure: no I/O.

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
from dataclasses import dataclass
from typing import NamedTuple, Protocol

# Aggregate state of the linked-duty workflows (lifecycles, ledger), one key per aggregate.
AGGREGATES_BUCKET = "DUTYLINK_AGGREGATES"

# Keys are dot-separated tokens ("lifecycle.incident.<id>"), as JetStream KV allows them.
_KEY = re.compile(r"[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*")
_BUCKET = re.compile(r"[a-zA-Z0-9_-]+")


def check_key(key: str) -> str:
    """`key` if it is a valid key (tokens of letters, digits and `-/_=`, joined by dots);
    ValueError otherwise: a caller's bug, not a store failure."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid key {key!r}: expected dot-separated tokens of [-/_=a-zA-Z0-9]")
    return key


@dataclass(frozen=True)
class BucketSpec:
    """One bucket's settings. Always file storage: accepted transitions survive a restart.
    `history`: revisions kept per key (1 to 64); `replicas`: 3 on a cluster keeps it through
    one node's lost disk; `max_value_bytes`: a value larger is refused."""

    name: str
    description: str = ""
    history: int = 1
    replicas: int = 1
    max_value_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if not _BUCKET.fullmatch(self.name):
            raise ValueError(f"invalid bucket name {self.name!r}: expected [a-zA-Z0-9_-]+")
        if not 1 <= self.history <= 64:
            raise ValueError(f"bucket history: expected 1 to 64, got {self.history}")
        if self.replicas < 1 or self.max_value_bytes < 1:
            raise ValueError("bucket replicas and max_value_bytes must be positive")


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

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        """The keys under `prefix` (whole tokens), sorted. TooManyKeysError if there are more
        than `limit`: a caller never reads an unbounded list by accident."""
        ...
