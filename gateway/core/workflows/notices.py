"""The ledger's replenishment notices as events: when an item's available stock falls below the
threshold its agency declared, the gateway itself publishes `inventory.replenishment_needed`
(to the agency and the emergency management bureau, as the receive policy routes it).

The id is derived from the item line and the version that fell below the threshold, so a
replica that publishes the same notice again (a retried batch) publishes the same event, and
JetStream stores it once. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json

from dutylink.v1 import event_pb2
from gateway.core.workflows.ledger import replenishment_payload
from gateway.core.workflows.ledger_state import ReplenishmentNeeded

# The source of the events the gateway publishes of its own (the ledger's notices, the deadline
# tracker's escalations), and their types: no agency may publish these, whatever its policy
# says (gateway.rpc.publish).
GATEWAY_AGENCY = "dutylink"
REPLENISHMENT_TYPE = "inventory.replenishment_needed"
EXPIRY_TYPE = "inventory.reservation_expired"
ESCALATION_RAISED_TYPE = "escalation.raised"
ESCALATION_RESOLVED_TYPE = "escalation.resolved"
GATEWAY_TYPES = frozenset(
    {REPLENISHMENT_TYPE, EXPIRY_TYPE, ESCALATION_RAISED_TYPE, ESCALATION_RESOLVED_TYPE}
)
REPLENISHMENT_ID_PREFIX = "ledger-replenish-"
_DIGEST_HEX = 40


def replenishment_event(
    notice: ReplenishmentNeeded, version: int, cause: event_pb2.Event
) -> event_pb2.Event:
    """The notice for `notice`, raised by version `version` of its item line through `cause`
    (whose time and jurisdiction are the notice's, so a retry of the cause raises the same
    event, byte for byte)."""
    key = notice.item
    identity = json.dumps([key.plane, key.agency, key.item_id, version], ensure_ascii=False,
                          separators=(",", ":"))  # fmt: skip
    digest = hashlib.sha256(identity.encode()).hexdigest()[:_DIGEST_HEX]
    event = event_pb2.Event(
        id=REPLENISHMENT_ID_PREFIX + digest,
        source=GATEWAY_AGENCY,
        type=REPLENISHMENT_TYPE,
        subject=key.item_id,
        jurisdiction=cause.jurisdiction,
        classification=event_pb2.CLASSIFICATION_INTERNAL,
        plane=event_pb2.Plane.ValueType(key.plane),
        priority=event_pb2.PRIORITY_ROUTINE,
        correlation_id=cause.id,
        inventory=replenishment_payload(notice),
    )
    event.time.CopyFrom(cause.time)
    return event
