"""One ledger item line as bytes, for its key-value entry: JSON with a format number and the
line's version. Quantities travel as decimal strings, so a round trip is exact. Pure."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.core.subjects import PLANE_TOKENS
from gateway.core.workflows.ledger_state import Holding, ItemKey, ItemLine, LineKey, Stage

FORMAT = 1

_SAFE_TOKEN = re.compile(r"[-_a-zA-Z0-9]+")


class LedgerFormatError(ValueError):
    """Stored bytes are not a ledger item line this code can read: our own integrity fault."""


def kv_key(key: ItemKey) -> str:
    """The item line's key-value key, `ledger.<plane>.<agency>.<item>`. An item id with
    characters keys cannot hold (`.`, `:`) is written as `=` and its base64url form."""
    item = key.item_id
    if not _SAFE_TOKEN.fullmatch(item):
        item = "=" + base64.urlsafe_b64encode(item.encode()).decode().rstrip("=")
    return f"{kv_prefix(key.plane, key.agency)}.{item}"


def kv_prefix(plane: int, agency: str) -> str:
    """The key-value prefix of every item line of `agency` on `plane` (`ledger.<plane>.<agency>`:
    whole tokens, so "fire" does not take in "fire-2")."""
    return f"ledger.{PLANE_TOKENS.get(plane, str(plane))}.{agency}"


def encode(item: ItemLine) -> bytes:
    """`item` as compact, key-sorted JSON."""
    value = {
        "format": FORMAT,
        "version": item.version,
        "plane": item.key.plane,
        "agency": item.key.agency,
        "item_id": item.key.item_id,
        "total": str(item.total),
        "unit": item.unit,
        "kind": item.kind,
        "type_info": item.type_info,
        "out_of_service": item.out_of_service,
        "threshold": str(item.threshold),
        "below_threshold": item.below_threshold,
        "holdings": [_holding(h) for h in item.holdings],
        "recent": list(item.recent),
        "division_code": item.division_code,
    }
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> ItemLine:
    """The item line `encode` wrote; LedgerFormatError for anything else."""
    try:
        value = json.loads(data)
        if value.get("format") != FORMAT:
            raise LedgerFormatError(f"ledger item line format {value.get('format')!r}, "
                                    f"expected {FORMAT}")  # fmt: skip
        return ItemLine(
            key=ItemKey(int(value["plane"]), str(value["agency"]), str(value["item_id"])),
            total=Decimal(value["total"]),
            unit=str(value["unit"]),
            kind=int(value["kind"]),
            type_info=str(value["type_info"]),
            out_of_service=bool(value["out_of_service"]),
            threshold=Decimal(value["threshold"]),
            holdings=tuple(_read_holding(h) for h in value["holdings"]),
            below_threshold=bool(value["below_threshold"]),
            version=int(value["version"]),
            recent=tuple(str(r) for r in value.get("recent", ())),
            division_code=str(value.get("division_code", "")),
        )
    except LedgerFormatError:
        raise
    except (ValueError, KeyError, TypeError, ArithmeticError, AttributeError) as error:
        raise LedgerFormatError(f"unreadable ledger item line: {error}") from error


def _holding(h: Holding) -> dict[str, Any]:
    return {
        "thread": h.line.thread,
        "element": h.line.element,
        "stage": h.stage.value,
        "quantity": str(h.quantity),
        "expires": h.expires.isoformat() if h.expires else None,
        "moved_by": h.moved_by,
        "prior": _holding(h.prior) if h.prior else None,
    }


def _read_holding(value: dict[str, Any]) -> Holding:
    return Holding(
        line=LineKey(str(value["thread"]), str(value["element"])),
        stage=Stage(value["stage"]),
        quantity=Decimal(value["quantity"]),
        expires=datetime.fromisoformat(value["expires"]) if value["expires"] else None,
        moved_by=str(value["moved_by"]),
        prior=_read_holding(value["prior"]) if value["prior"] else None,
    )
