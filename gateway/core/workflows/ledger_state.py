"""The values of the resource ledger (gateway.core.workflows.ledger): item lines and their
holdings, and what folding an event yields (refusals, replenishment notices, expiries). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

ZERO = Decimal(0)
ONE = Decimal(1)


class Stage(StrEnum):
    """Where a held quantity is, in the order a line normally passes through."""

    RESERVED = "reserved"
    COMMITTED = "committed"
    DEPLOYED = "deployed"
    RETURNING = "returning"


@dataclass(frozen=True, order=True)
class ItemKey:
    """One item of one agency's inventory on one plane (drills never draw on actual stock)."""

    plane: int
    agency: str
    item_id: str


@dataclass(frozen=True, order=True)
class LineKey:
    """One EDXL-RM resource line: its exchange (`originating_message_id`) and its element id.
    Replies name the line in `preceding_resource_info_element_id`; the other messages of the
    exchange keep its `resource_info_element_id`."""

    thread: str
    element: str


@dataclass(frozen=True)
class Holding:
    """What one resource line holds of an item. `moved_by` is the message ("agency/message id")
    that put it in this stage; `prior` is what the line held before that message (None: nothing),
    so a recall of the message can put it back."""

    line: LineKey
    stage: Stage
    quantity: Decimal
    expires: datetime | None
    moved_by: str
    prior: Holding | None = None


@dataclass(frozen=True)
class ItemLine:
    """One item's declaration and its holdings: the unit of state the key-value store keeps.
    `version` counts the events that changed it."""

    key: ItemKey
    total: Decimal = ZERO
    unit: str = ""
    kind: int = 0
    type_info: str = ""
    out_of_service: bool = False
    threshold: Decimal = ZERO
    holdings: tuple[Holding, ...] = ()
    below_threshold: bool = False
    # The jurisdiction of its latest declaration: where the ledger's notices about it go.
    division_code: str = ""
    version: int = 0
    # The ids of the last events that changed it, newest last (see AggregateState.recent).
    recent: tuple[str, ...] = ()

    def in_stage(self, stage: Stage) -> Decimal:
        return sum((h.quantity for h in self.holdings if h.stage is stage), ZERO)

    @property
    def held(self) -> Decimal:
        return sum((h.quantity for h in self.holdings), ZERO)

    @property
    def available(self) -> Decimal:
        return self.total - self.held

    def holding(self, line: LineKey) -> Holding | None:
        return next((h for h in self.holdings if h.line == line), None)


@dataclass(frozen=True)
class Ledger:
    """Every item line, by key. Treat as immutable: the functions here return new ledgers."""

    items: dict[ItemKey, ItemLine] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """Why an event cannot be folded: it asks for more of an item than is available."""

    item: ItemKey
    line: LineKey | None
    requested: Decimal
    available: Decimal
    reason: str

    def __str__(self) -> str:
        where = f" (line {self.line.thread}/{self.line.element})" if self.line else ""
        return (
            f"{self.item.agency}/{self.item.item_id}{where}: {self.reason}: "
            f"requested {plain(self.requested)}, available {plain(self.available)}"
        )


@dataclass(frozen=True)
class ReplenishmentNeeded:
    """An item's available stock fell below its threshold (published once per crossing)."""

    item: ItemKey
    type_info: str
    on_hand: Decimal
    threshold: Decimal
    unit: str


@dataclass(frozen=True)
class Expiry:
    """A reservation that ran out: its quantity is available again."""

    item: ItemKey
    line: LineKey
    quantity: Decimal
    expired_at: datetime
    division_code: str = ""  # the item's declared jurisdiction ("": none kept)


@dataclass(frozen=True)
class Applied:
    """The result of folding one event: the new ledger (the old one when refused), the
    refusals, the replenishment notices to publish, and the item lines that changed."""

    ledger: Ledger
    refusals: tuple[Refusal, ...] = ()
    replenishments: tuple[ReplenishmentNeeded, ...] = ()
    changed: tuple[ItemKey, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.refusals


def quantity(value: float) -> Decimal:
    """A protobuf double as an exact decimal ("0.1" stays 0.1), so sums conserve exactly."""
    return Decimal(repr(value))


def plain(amount: Decimal) -> str:
    """An amount as people write it: "40", "2.5" (not "40.0" or "4E+1")."""
    return format(amount.normalize(), "f")
