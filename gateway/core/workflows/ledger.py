"""The resource ledger: each agency's declared stock and where every unit of it is, as a fold
over events.

Per (plane, agency, item) an `ItemLine` holds the declared total and the holdings of EDXL-RM
resource lines on it (reserved with an expiry, committed, deployed, returning); what no line
holds is available. `inventory.*` events set and adjust totals; EDXL-RM messages move quantities
line by line (docs/ledger.md has the table). A move that needs more than is available is
refused with a `Refusal` naming the item, what was asked and what is available, and the whole
event then changes nothing. Reservations past their expiry go back to available through
`expire` (the edge publishes each `Expiry` as an `inventory.reservation_expired` event, whose
fold is the same move and a no-op the second time). A fall below an item's threshold yields
one `ReplenishmentNeeded` per crossing.

The state is a projection: `rebuild(events)` over the stored events equals the live state, and
each item line serialises on its own (`ledger_codec`) as one key-value entry. Pure: no I/O,
no clock (`now` is a parameter).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf import timestamp_pb2

from dutylink.v1 import event_pb2, inventory_pb2, resource_pb2
from gateway.core.workflows.ledger_state import (
    ONE,
    ZERO,
    Applied,
    Expiry,
    Holding,
    ItemKey,
    ItemLine,
    Ledger,
    LineKey,
    Refusal,
    ReplenishmentNeeded,
    Stage,
    quantity,
)


def _time(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


class _Draft:
    """The item lines one event touches, changed in place, kept apart until the event is
    accepted as a whole."""

    def __init__(self, ledger: Ledger, plane: int, mover: str) -> None:
        self.ledger = ledger
        self.plane = plane
        self.mover = mover
        self.lines: dict[ItemKey, ItemLine] = {}
        self.refusals: list[Refusal] = []

    def get(self, key: ItemKey) -> ItemLine | None:
        return self.lines.get(key) or self.ledger.items.get(key)

    def put(self, item: ItemLine) -> None:
        self.lines[item.key] = item

    def holder_of(self, line: LineKey) -> ItemKey | None:
        """The item a line holds something of, on this event's plane."""
        merged = {**self.ledger.items, **self.lines}
        return next(
            (k for k, item in merged.items() if k.plane == self.plane and item.holding(line)),
            None,
        )

    def refuse(self, item: ItemKey, line: LineKey | None, requested: Decimal,
               available: Decimal, reason: str) -> None:  # fmt: skip
        self.refusals.append(Refusal(item, line, requested, available, reason))

    def set_holding(self, key: ItemKey, new: Holding | None, line: LineKey, what: str) -> None:
        """Make `line` hold `new` of item `key` (None: nothing), refused if that takes more than
        is available (or anything more while the item is out of service)."""
        item = self.get(key)
        if item is None:
            wanted = new.quantity if new else ZERO
            self.refuse(key, line, wanted, ZERO, f"{what}: the item is not declared")
            return
        current = item.holding(line)
        extra = (new.quantity if new else ZERO) - (current.quantity if current else ZERO)
        free = ZERO if item.out_of_service else item.available
        if extra > 0 and extra > free:
            reason = f"{what} beyond what is available"
            if item.out_of_service:
                reason = f"{what}: the item is out of service"
            held = current.quantity if current else ZERO
            self.refuse(key, line, new.quantity if new else ZERO, free + held, reason)
            return
        others = tuple(h for h in item.holdings if h.line != line)
        holdings = (*others, new) if new else others
        self.put(replace(item, holdings=tuple(sorted(holdings, key=lambda h: h.line))))

    def move(self, key: ItemKey, line: LineKey, stage: Stage, amount: Decimal | None,
             expires: datetime | None, what: str) -> None:  # fmt: skip
        """`line` holds `amount` (None: what it holds now, else one unit) in `stage`."""
        item = self.get(key)
        current = item.holding(line) if item else None
        wanted = amount if amount is not None else (current.quantity if current else ONE)
        prior = replace(current, prior=None) if current else None
        new = Holding(line, stage, wanted, expires, self.mover, prior) if wanted > 0 else None
        self.set_holding(key, new, line, what)

    def advance(self, line: LineKey, stage: Stage, from_stages: tuple[Stage, ...]) -> None:
        """A held line moves on to `stage` when it is in one of `from_stages`."""
        key = self.holder_of(line)
        item = self.get(key) if key else None
        current = item.holding(line) if item else None
        if key and current and current.stage in from_stages:
            new = replace(current, stage=stage, expires=None, moved_by=self.mover,
                          prior=replace(current, prior=None))  # fmt: skip
            self.set_holding(key, new, line, stage.value)

    def release(self, line: LineKey, amount: Decimal | None,
                only: tuple[Stage, ...] = tuple(Stage)) -> None:  # fmt: skip
        """`line` gives back `amount` (None: all it holds) to available."""
        key = self.holder_of(line)
        item = self.get(key) if key else None
        current = item.holding(line) if item else None
        if key is None or current is None or current.stage not in only:
            return
        left = current.quantity - amount if amount is not None else ZERO
        new = (replace(current, quantity=left, moved_by=self.mover,
                       prior=replace(current, prior=None)) if left > 0 else None)  # fmt: skip
        self.set_holding(key, new, line, "release")

    def recall(self, moved_by: str, thread: str) -> None:
        """Every line of the exchange `thread` the recalled message moved goes back to what it
        held before (a recall belongs to the exchange of the message it recalls)."""
        merged = {**self.ledger.items, **self.lines}
        for key, item in sorted(merged.items()):
            for h in item.holdings:
                if key.plane == self.plane and h.moved_by == moved_by and h.line.thread == thread:
                    self.set_holding(key, h.prior, h.line, "recall")


def _finish(ledger: Ledger, draft: _Draft) -> Applied:
    """Accept the draft's changes (or none, when anything was refused): bump the versions of
    the lines that changed and note each fall below a threshold."""
    if draft.refusals:
        return Applied(ledger, tuple(draft.refusals))
    items = dict(ledger.items)
    changed: list[ItemKey] = []
    notices: list[ReplenishmentNeeded] = []
    for key, item in sorted(draft.lines.items()):
        before = ledger.items.get(key)
        below = item.threshold > 0 and item.available < item.threshold
        item = replace(item, below_threshold=below)
        if item == before:
            continue
        if below and not (before and before.below_threshold):
            notices.append(ReplenishmentNeeded(key, item.type_info, item.available,
                                               item.threshold, item.unit))  # fmt: skip
        items[key] = replace(item, version=(before.version if before else 0) + 1)
        changed.append(key)
    return Applied(Ledger(items), (), tuple(notices), tuple(changed))


def apply(ledger: Ledger, event: event_pb2.Event) -> Applied:
    """Fold one event into the ledger. Events of other families, and resource lines that name
    no inventory item and hold none, change nothing."""
    family = event.WhichOneof("payload")
    if family == "inventory":
        draft = _Draft(ledger, event.plane, f"{event.source}/{event.id}")
        _fold_inventory(draft, event.source, event.inventory, event.jurisdiction.division_code)
        return _finish(ledger, draft)
    if family == "resource":
        message = event.resource
        draft = _Draft(ledger, event.plane, f"{event.source}/{message.message_id}")
        if message.HasField("recall"):
            recalled = f"{event.source}/{message.recall.recall_message_id}"
            draft.recall(recalled, message.originating_message_id)
            if message.recall.type == resource_pb2.RECALL_TYPE_CANCEL:
                return _finish(ledger, draft)
        _fold_resource(draft, event.source, message)
        return _finish(ledger, draft)
    return Applied(ledger)


def _fold_inventory(
    draft: _Draft, agency: str, inventory: inventory_pb2.Inventory, division_code: str
) -> None:
    kind = inventory.WhichOneof("kind")
    if kind == "declaration":
        for declared in inventory.declaration.items:
            key = ItemKey(draft.plane, agency, declared.item_id)
            _declare(draft, key, declared, division_code)
    elif kind == "adjustment":
        key = ItemKey(draft.plane, agency, inventory.adjustment.item_id)
        item = draft.get(key)
        if item is None:
            draft.refuse(key, None, quantity(inventory.adjustment.delta), ZERO,
                         "adjustment: the item is not declared")  # fmt: skip
        else:
            _set_total(draft, item, item.total + quantity(inventory.adjustment.delta))
    elif kind == "reservation_expired":
        notice = inventory.reservation_expired
        key = ItemKey(draft.plane, notice.agency, notice.item_id)
        line = LineKey(notice.originating_message_id, notice.resource_info_element_id)
        _expire_line(draft, key, line, _time(notice.expired_at))


def _declare(
    draft: _Draft, key: ItemKey, declared: inventory_pb2.InventoryItem, division_code: str
) -> None:
    item = draft.get(key) or ItemLine(key)
    item = replace(
        item,
        division_code=division_code or item.division_code,
        unit=declared.unit,
        kind=declared.kind,
        type_info=declared.type_info,
        out_of_service=declared.status == inventory_pb2.INVENTORY_STATUS_OUT_OF_SERVICE,
        threshold=quantity(declared.replenishment_threshold),
    )
    _set_total(draft, item, quantity(declared.quantity))


def _set_total(draft: _Draft, item: ItemLine, total: Decimal) -> None:
    """A new total, refused below what the lines hold: those units are out, not gone."""
    if not (total.is_finite() and item.threshold.is_finite() and item.threshold >= 0):
        draft.refuse(item.key, None, total, item.available,
                     "a total and a threshold must be finite numbers")  # fmt: skip
    elif total < item.held:
        draft.refuse(item.key, None, item.held, total,
                     "the total would fall below what is reserved, committed or out")  # fmt: skip
    else:
        draft.put(replace(item, total=total))


def _expire_line(draft: _Draft, key: ItemKey, line: LineKey, at: datetime) -> None:
    """A reservation that expired by `at` returns to available (nothing else does, so a second
    expiry, or one for a line since committed or renewed, changes nothing)."""
    item = draft.get(key)
    current = item.holding(line) if item else None
    if current and current.stage is Stage.RESERVED and current.expires and current.expires <= at:
        draft.set_holding(key, None, line, "expiry")


def resource_lines(message: resource_pb2.ResourceMessage) -> list[resource_pb2.ResourceInfo]:
    """The resource lines of a message, whatever its type."""
    kind = message.WhichOneof("kind")
    return list(getattr(message, kind).resource_infos) if kind else []


def line_key(message: resource_pb2.ResourceMessage, info: resource_pb2.ResourceInfo) -> LineKey:
    """The resource line `info` is part of: replies name it by the line they answer."""
    element = info.resource_info_element_id
    if info.HasField("response"):
        element = info.response.preceding_resource_info_element_id
    return LineKey(message.originating_message_id, element)


def _line_amount(info: resource_pb2.ResourceInfo) -> Decimal | None:
    if info.HasField("assignment") and info.assignment.HasField("quantity"):
        return quantity(info.assignment.quantity.value)
    return None


def _reserved_until(info: resource_pb2.ResourceInfo) -> datetime | None:
    if info.HasField("reserved_until"):
        return _time(info.reserved_until)
    ends = [s for s in info.schedules
            if s.type == resource_pb2.SCHEDULE_TYPE_END_AVAILABLE and s.HasField("time")]  # fmt: skip
    return _time(ends[0].time) if ends else None


def _fold_resource(draft: _Draft, source: str, message: resource_pb2.ResourceMessage) -> None:
    kind = message.WhichOneof("kind")
    for info in resource_lines(message):
        line = line_key(message, info)
        named = _item_of(draft, source, info, line)
        amount = _line_amount(info)
        unit = info.assignment.quantity.unit
        item = draft.get(named) if named else None
        if named and amount is not None and not (amount.is_finite() and amount >= 0):
            draft.refuse(named, line, amount, item.available if item else ZERO,
                         "a quantity must be a finite number, not negative")  # fmt: skip
            continue
        if named and item and unit and item.unit and unit != item.unit:
            draft.refuse(named, line, amount or ONE, item.available,
                         f"unit {unit!r} is not the item's unit {item.unit!r}")  # fmt: skip
            continue
        response = info.response.type if info.HasField("response") else 0
        decline = response == resource_pb2.RESPONSE_TYPE_DECLINE
        # A late offer or answer never pulls a committed line back to a reservation.
        current = item.holding(line) if item else None
        reservable = current is None or current.stage is Stage.RESERVED
        if kind == "offer_unsolicited_resource" and named and reservable:
            draft.move(named, line, Stage.RESERVED, amount, _reserved_until(info), "reservation")
        elif kind == "response_to_request_resource" and decline:
            draft.release(line, None, only=(Stage.RESERVED,))
        elif (
            kind == "response_to_request_resource"
            and named
            and reservable
            and response in _RESERVING
        ):
            draft.move(named, line, Stage.RESERVED, amount, _reserved_until(info), "reservation")
        elif kind == "commit_resource" and decline:
            draft.release(line, None, only=(Stage.RESERVED,))
        elif kind == "commit_resource" and named:
            if current is None or current.stage in (Stage.RESERVED, Stage.COMMITTED):
                draft.move(named, line, Stage.COMMITTED, amount, None, "commitment")
        elif kind == "report_resource_deployment_status":
            status = info.resource.status.deployment_status
            if status in _DEPLOYED:
                draft.advance(line, Stage.DEPLOYED, (Stage.COMMITTED,))
            elif status == resource_pb2.DEPLOYMENT_STATUS_RETURNING:
                draft.advance(line, Stage.RETURNING, (Stage.COMMITTED, Stage.DEPLOYED))
        elif kind == "request_return":
            draft.advance(line, Stage.RETURNING, (Stage.COMMITTED, Stage.DEPLOYED))
        elif kind == "release_resource":
            draft.release(line, amount)


_RESERVING = (resource_pb2.RESPONSE_TYPE_ACCEPT, resource_pb2.RESPONSE_TYPE_CONDITIONAL)
_DEPLOYED = (resource_pb2.DEPLOYMENT_STATUS_EN_ROUTE, resource_pb2.DEPLOYMENT_STATUS_ON_SCENE)


def _item_of(draft: _Draft, source: str, info: resource_pb2.ResourceInfo,
             line: LineKey) -> ItemKey | None:  # fmt: skip
    """The inventory item a line names, or else the one it already holds something of."""
    resource = info.resource
    if resource.inventory_item_id:
        return ItemKey(draft.plane, resource.responsible_agency or source,
                       resource.inventory_item_id)  # fmt: skip
    return draft.holder_of(line)


def due(ledger: Ledger, now: datetime) -> tuple[Expiry, ...]:
    """The reservations whose expiry is at or before `now`, oldest first."""
    found = [
        Expiry(key, h.line, h.quantity, h.expires, item.division_code)
        for key, item in sorted(ledger.items.items())
        for h in item.holdings
        if h.stage is Stage.RESERVED and h.expires is not None and h.expires <= now
    ]
    return tuple(sorted(found, key=lambda e: (e.expired_at, e.item, e.line)))


def expire(ledger: Ledger, now: datetime) -> tuple[Ledger, tuple[Expiry, ...]]:
    """Return the reservations due by `now` to available, one expiry at a time, as folding
    each one's `inventory.reservation_expired` event would. A second call finds none."""
    expired = due(ledger, now)
    for expiry in expired:
        draft = _Draft(ledger, expiry.item.plane, "expiry")
        _expire_line(draft, expiry.item, expiry.line, expiry.expired_at)
        ledger = _finish(ledger, draft).ledger
    return ledger, expired


def rebuild(events: Iterable[event_pb2.Event]) -> Ledger:
    """The ledger from the stored events, in stream order (refused events are not stored; any
    that are fold to nothing, as they did live)."""
    ledger = Ledger()
    for event in events:
        ledger = apply(ledger, event).ledger
    return ledger


def expiry_payload(expiry: Expiry) -> inventory_pb2.Inventory:
    """The `inventory.reservation_expired` payload the edge publishes for an expiry."""
    expired_at = timestamp_pb2.Timestamp()
    expired_at.FromDatetime(expiry.expired_at)
    return inventory_pb2.Inventory(
        reservation_expired=inventory_pb2.ReservationExpired(
            agency=expiry.item.agency,
            item_id=expiry.item.item_id,
            originating_message_id=expiry.line.thread,
            resource_info_element_id=expiry.line.element,
            quantity=float(expiry.quantity),
            expired_at=expired_at,
        )
    )


def replenishment_payload(notice: ReplenishmentNeeded) -> inventory_pb2.Inventory:
    """The `inventory.replenishment_needed` payload the edge publishes for a notice."""
    return inventory_pb2.Inventory(
        replenishment_needed=inventory_pb2.ReplenishmentNotice(
            agency=notice.item.agency,
            item_id=notice.item.item_id,
            type_info=notice.type_info,
            on_hand=float(notice.on_hand),
            threshold=float(notice.threshold),
            unit=notice.unit,
        )
    )
