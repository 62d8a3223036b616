"""Business acknowledgements: a person at a receiving agency takes a message (a warning, an
assignment, a resource request, a task) or declines it with a reason, so that the sender and
the command centre know a person took it (the sample policy routes acknowledgements to the
message's publisher by `only_parties`).

    async for delivery in subscription:
        await client.publish(acknowledgement_of(delivery.event, by="duty officer Li"))

The acknowledgement names the message by its publisher and id, and keeps its plane, jurisdiction
and priority, so a drill's acknowledgement stays on the drill's plane. The first answer of an
agency counts; a later one is stored and audited but changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from dutylink.incidents import incident_ids
from dutylink.v1 import acknowledgement_pb2, event_pb2

__all__ = ["acknowledgement_of"]

ACKNOWLEDGED = "acknowledgement.acknowledged"
DECLINED = "acknowledgement.declined"


def acknowledgement_of(
    message: event_pb2.Event,
    *,
    by: str = "",
    note: str = "",
    decline_reason: str | None = None,
    now: datetime | None = None,
) -> event_pb2.Event:
    """The acknowledgement of `message` (as delivered), or its decline when `decline_reason` is
    given (a decline needs one). `by`: the person or post who took it."""
    declined = decline_reason is not None
    if declined and not decline_reason:
        raise ValueError("a decline needs a reason")
    decision = (
        acknowledgement_pb2.ACKNOWLEDGEMENT_DECISION_DECLINED
        if declined
        else acknowledgement_pb2.ACKNOWLEDGEMENT_DECISION_ACKNOWLEDGED
    )
    event_type = DECLINED if declined else ACKNOWLEDGED
    event = event_pb2.Event(
        id=str(uuid.uuid4()),
        type=event_type,
        subject=message.id,
        correlation_id=message.id,
        jurisdiction=message.jurisdiction,
        classification=event_pb2.CLASSIFICATION_INTERNAL,
        plane=message.plane,
        priority=message.priority,
        acknowledgement=acknowledgement_pb2.Acknowledgement(
            event_id=message.id,
            event_source=message.source,
            decision=decision,
            reason=decline_reason or "",
            acknowledged_by=by,
            note=note,
            incidents=list(dict.fromkeys(incident_ids(message)))[:64],
        ),
    )
    event.time.FromDatetime(now or datetime.now(UTC))
    return event
