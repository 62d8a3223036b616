"""Reservation expiry as events: from the ledger's item lines and `now`, the
`inventory.reservation_expired` events that return the expired reservations to available.

Everything in such an event is derived from what expired, its id included (`expiry_event_id`:
plane, agency, item, resource line and expiry time). So two gateway replicas, or one restarted
after a crash, that publish the same expiry publish the same event, byte for byte: JetStream
stores it once (it de-duplicates by source and id), and folding it a second time would change
nothing anyway (gateway.core.workflows.ledger). The edge that reads the item lines from the
key-value store and publishes is gateway.store.ledger_timer. Pure: no I/O, `now` is a parameter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime

from dutylink.v1 import common_pb2, event_pb2
from gateway.core.workflows.ledger import due, expiry_payload
from gateway.core.workflows.ledger_state import Expiry, ItemLine, Ledger
from gateway.core.workflows.notices import EXPIRY_TYPE, GATEWAY_AGENCY

# Ids of the events the ledger publishes start with this; the rest is a digest (within the
# 128 characters and the pattern an event id allows).
EXPIRY_ID_PREFIX = "ledger-expiry-"
_DIGEST_HEX = 40  # 160 bits: no two expiries of one agency share an id by accident


def expiry_event_id(expiry: Expiry) -> str:
    """The id of `expiry`'s event: the same for the same reservation line and expiry time on
    every replica, another one for a renewed reservation (a new expiry time). The expiry time
    is taken as the event carries it (RFC 3339, UTC), so equal instants give equal ids."""
    payload = expiry_payload(expiry).reservation_expired
    # A JSON array: no separator inside a field can make two different expiries read alike.
    identity = json.dumps(
        [
            expiry.item.plane,
            expiry.item.agency,
            expiry.item.item_id,
            expiry.line.thread,
            expiry.line.element,
            payload.expired_at.ToJsonString(),
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:_DIGEST_HEX]
    return EXPIRY_ID_PREFIX + digest


def expiry_event(expiry: Expiry, jurisdiction: common_pb2.Jurisdiction) -> event_pb2.Event:
    """The `inventory.reservation_expired` event for `expiry`, on the item's plane, from the
    item's agency. It happened when the reservation ran out (`time` is the expiry time, not
    when it was noticed, so every replica's event is the same); `jurisdiction` is that of
    the item's declaration (from the item line), else the deployment's."""
    event = event_pb2.Event(
        id=expiry_event_id(expiry),
        source=GATEWAY_AGENCY,
        type=EXPIRY_TYPE,
        subject=expiry.item.item_id,
        jurisdiction=(
            common_pb2.Jurisdiction(division_code=expiry.division_code)
            if expiry.division_code
            else jurisdiction
        ),
        classification=event_pb2.CLASSIFICATION_INTERNAL,
        plane=event_pb2.Plane.ValueType(expiry.item.plane),
        priority=event_pb2.PRIORITY_ROUTINE,
        # Followed with the EDXL-RM exchange whose line it ends.
        correlation_id=expiry.line.thread,
        inventory=expiry_payload(expiry),
    )
    event.time.CopyFrom(event.inventory.reservation_expired.expired_at)
    return event


def due_expiries(items: Iterable[ItemLine], now: datetime) -> tuple[Expiry, ...]:
    """The reservations of `items` that ran out at or before `now`, oldest first."""
    return due(Ledger({item.key: item for item in items}), now)


def expiry_events(
    items: Iterable[ItemLine], now: datetime, jurisdiction: common_pb2.Jurisdiction
) -> tuple[event_pb2.Event, ...]:
    """The events to publish for the reservations of `items` due by `now`, oldest first."""
    return tuple(expiry_event(expiry, jurisdiction) for expiry in due_expiries(items, now))
