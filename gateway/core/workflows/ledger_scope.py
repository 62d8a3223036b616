"""Which item lines folding an event needs, so the edge reads only those from the key-value
store (one entry per item line), folds the event onto them, and writes back the changed ones
with compare-and-set. Folding onto that part of the ledger gives what folding onto the whole
ledger gives (tests/test_ledger.py checks it on random sequences). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from dutylink.v1 import event_pb2
from gateway.core.workflows.ledger import resource_lines
from gateway.core.workflows.ledger_state import ItemKey, Ledger


@dataclass(frozen=True)
class Scope:
    """`items`: the item lines the event names. `threads`: the EDXL-RM exchanges (plane,
    `originating_message_id`) whose lines the event may move without naming their item: the
    edge also reads every item line holding a line of them (an index from exchange to items)."""

    items: frozenset[ItemKey] = frozenset()
    threads: frozenset[tuple[int, str]] = frozenset()


def scope(event: event_pb2.Event) -> Scope:
    """What folding `event` reads. Other families need nothing."""
    plane, family = event.plane, event.WhichOneof("payload")
    if family == "inventory":
        inventory = event.inventory
        kind = inventory.WhichOneof("kind")
        if kind == "declaration":
            named = {i.item_id for i in inventory.declaration.items}
            return Scope(frozenset(ItemKey(plane, event.source, i) for i in named))
        if kind == "adjustment":
            return Scope(frozenset({ItemKey(plane, event.source, inventory.adjustment.item_id)}))
        if kind == "reservation_expired":
            expired = inventory.reservation_expired
            return Scope(frozenset({ItemKey(plane, expired.agency, expired.item_id)}))
        return Scope()
    if family == "resource":
        message = event.resource
        infos = resource_lines(message)
        items = frozenset(
            ItemKey(
                plane, i.resource.responsible_agency or event.source, i.resource.inventory_item_id
            )
            for i in infos
            if i.resource.inventory_item_id
        )
        return Scope(items, frozenset({(plane, message.originating_message_id)}))
    return Scope()


def within(ledger: Ledger, needed: Scope) -> Ledger:
    """The part of `ledger` that `needed` covers: what the edge would have read."""
    return Ledger({
        key: item
        for key, item in ledger.items.items()
        if key in needed.items
        or any((key.plane, h.line.thread) in needed.threads for h in item.holdings)
    })  # fmt: skip
