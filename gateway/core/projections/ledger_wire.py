"""The resource ledger on the wire (BoardService.GetLedger): an agency's item lines
(gateway.core.workflows.ledger_state) as `LedgerItem`s, chosen and paged. Pure.

Quantities travel as doubles, as `InventoryItem.quantity` and the ledger's own notices carry
them; the ledger keeps exact decimals, so each figure is computed there and converted last."""

from __future__ import annotations

from collections.abc import Iterable

from dutylink.v1 import board_pb2, resource_pb2
from gateway.core.envelope import timestamp_or_none
from gateway.core.workflows.ledger_state import Holding, ItemLine, Stage

STAGES = {
    Stage.RESERVED: board_pb2.LEDGER_STAGE_RESERVED,
    Stage.COMMITTED: board_pb2.LEDGER_STAGE_COMMITTED,
    Stage.DEPLOYED: board_pb2.LEDGER_STAGE_DEPLOYED,
    Stage.RETURNING: board_pb2.LEDGER_STAGE_RETURNING,
}


def ledger_holding(holding: Holding) -> board_pb2.LedgerHolding:
    return board_pb2.LedgerHolding(
        originating_message_id=holding.line.thread,
        resource_info_element_id=holding.line.element,
        stage=STAGES[holding.stage],
        quantity=float(holding.quantity),
        expires=timestamp_or_none(holding.expires),
        moved_by=holding.moved_by,
    )


def ledger_item(line: ItemLine) -> board_pb2.LedgerItem:
    """`line` with its figures: total, available and what each stage holds."""
    return board_pb2.LedgerItem(
        agency=line.key.agency,
        item_id=line.key.item_id,
        unit=line.unit,
        kind=resource_pb2.ResourceKind.ValueType(line.kind),
        type_info=line.type_info,
        total=float(line.total),
        available=float(line.available),
        reserved=float(line.in_stage(Stage.RESERVED)),
        committed=float(line.in_stage(Stage.COMMITTED)),
        deployed=float(line.in_stage(Stage.DEPLOYED)),
        returning=float(line.in_stage(Stage.RETURNING)),
        threshold=float(line.threshold),
        below_threshold=line.below_threshold,
        out_of_service=line.out_of_service,
        division_code=line.division_code,
        holdings=[ledger_holding(holding) for holding in line.holdings],
    )


def ledger_page(
    lines: Iterable[ItemLine], *, item_prefix: str, limit: int
) -> tuple[list[board_pb2.LedgerItem], bool]:
    """The lines whose item id starts with `item_prefix`, by item id, at most `limit` of them;
    and whether more matched."""
    chosen = sorted(
        (line for line in lines if line.key.item_id.startswith(item_prefix)),
        key=lambda line: line.key.item_id,
    )
    return [ledger_item(line) for line in chosen[:limit]], len(chosen) > limit
