"""The resource ledger's item lines as stored in the key-value bucket (written by
gateway.store.lifecycle_guard), read for the ledger's readers: the expiry timer
(gateway.store.ledger_timer) and BoardService.GetLedger.

    reader = LedgerReader(store.aggregates, max_items=config.ledger.max_items)
    lines = await reader.agency_lines(event_pb2.PLANE_ACTUAL, "fire")

An entry that cannot be read (not an item line, or not the one its key names) is logged and
skipped: a reader never stops on one bad entry. More than `max_items` lines under one prefix is
TooManyKeysError (gateway.core.kv): a reader never reads an unbounded list by accident.
"""

from __future__ import annotations

import structlog

from gateway.core.kv import KeyValueStore, Versioned
from gateway.core.workflows import ledger_codec
from gateway.core.workflows.ledger_state import ItemLine

log = structlog.get_logger("dutylink.ledger")


def readable_item(key: str, entry: Versioned, *, reader: str) -> ItemLine | None:
    """The item line `entry` holds; None (logged as `<reader>.unreadable_entry`) if it is
    unreadable or another key's."""
    try:
        item = ledger_codec.decode(entry.value)
    except ledger_codec.LedgerFormatError as error:
        log.error(f"{reader}.unreadable_entry", key=key, error=str(error))
        return None
    if ledger_codec.kv_key(item.key) != key:
        # Folding onto it would change another entry and leave this one as it is for ever.
        log.error(
            f"{reader}.unreadable_entry",
            key=key,
            error=f"holds the item line of {ledger_codec.kv_key(item.key)}",
        )
        return None
    return item


def item_lines(entries: dict[str, Versioned], *, reader: str) -> list[ItemLine]:
    """The readable item lines of `entries` (read under a `ledger.` prefix), by key. Item lines
    have four tokens; other keys under the prefix are not ours to read."""
    found = []
    for key in sorted(entries):
        if key.count(".") == 3 and (item := readable_item(key, entries[key], reader=reader)):
            found.append(item)
    return found


class LedgerReader:
    """Reads one agency's item lines on one plane from the aggregates bucket."""

    def __init__(self, store: KeyValueStore, *, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self._store = store
        self.max_items = max_items

    async def agency_lines(self, plane: int, agency: str) -> list[ItemLine]:
        """Every readable item line of `agency` on `plane`, by key. TooManyKeysError beyond
        `max_items`; the rest of the StoreError family when the store cannot answer."""
        prefix = ledger_codec.kv_prefix(plane, agency)
        entries = await self._store.entries(prefix, limit=self.max_items)
        return item_lines(entries, reader="ledger_reader")
