"""A tracked message as its sender and the command centre are shown it (TrackingService): who may
ask, and the wire form of the deadline tracker's entry. Pure: values in, messages out."""

from __future__ import annotations

from dutylink.v1 import event_pb2, gateway_pb2
from gateway.core.envelope import timestamp_or_none
from gateway.core.workflows.tracking import Expect, Recipient, Status, Tracked, summary

# Agencies holding this role may ask about every tracked message, not only their own.
COMMAND_ROLE = "command"

_STATUSES = {
    Status.PENDING: gateway_pb2.RECIPIENT_STATUS_PENDING,
    Status.DELIVERED: gateway_pb2.RECIPIENT_STATUS_DELIVERED,
    Status.ACKNOWLEDGED: gateway_pb2.RECIPIENT_STATUS_ACKNOWLEDGED,
    Status.DECLINED: gateway_pb2.RECIPIENT_STATUS_DECLINED,
    Status.WITHHELD: gateway_pb2.RECIPIENT_STATUS_WITHHELD,
}
_EXPECTATIONS = {
    Expect.DELIVERED: gateway_pb2.DEADLINE_EXPECTATION_DELIVERED,
    Expect.ACKNOWLEDGED: gateway_pb2.DEADLINE_EXPECTATION_ACKNOWLEDGED,
    Expect.STATE: gateway_pb2.DEADLINE_EXPECTATION_STATE,
}


def sees_every_sender(held_roles: frozenset[str]) -> bool:
    """Whether a caller holding `held_roles` (those the policy grants its agency) may ask about
    any agency's messages: the command centre."""
    return COMMAND_ROLE in held_roles


def may_see(sender: str, agency: str, held_roles: frozenset[str]) -> bool:
    """Whether `agency` may be told the status of a message `sender` published."""
    return agency == sender or sees_every_sender(held_roles)


def tracked_recipient(recipient: Recipient) -> gateway_pb2.TrackedRecipient:
    """One recipient's status with a tracked message, on the wire."""
    return gateway_pb2.TrackedRecipient(
        agency=recipient.agency,
        status=_STATUSES[recipient.status],
        delivered_at=timestamp_or_none(recipient.delivered_at),
        answered_at=timestamp_or_none(recipient.answered_at),
        answered_by=recipient.answered_by,
        reason=recipient.reason,
    )


def tracked_message(tracked: Tracked) -> gateway_pb2.TrackedMessage:
    """`tracked` on the wire, with its summary counts and their one-line reading."""
    counts = summary(tracked)
    return gateway_pb2.TrackedMessage(
        event_id=tracked.event_id,
        event_type=tracked.event_type,
        sender=tracked.sender,
        plane=event_pb2.Plane.ValueType(tracked.plane),
        received_time=timestamp_or_none(tracked.started),
        recipients=[tracked_recipient(recipient) for recipient in tracked.recipients],
        summary=gateway_pb2.TrackingSummary(
            intended=counts.intended,
            delivered=counts.delivered,
            acknowledged=counts.acknowledged,
            declined=counts.declined,
            pending=counts.pending,
            withheld=counts.withheld,
            text=str(counts),
        ),
        deadlines=[
            gateway_pb2.TrackedDeadline(
                id=deadline.deadline_id,
                expect=_EXPECTATIONS[deadline.expect],
                states=deadline.states,
                due=timestamp_or_none(deadline.due),
                levels=len(deadline.levels),
                fired_levels=deadline.fired,
                met_at=timestamp_or_none(deadline.met_at),
                resolved_at=timestamp_or_none(deadline.resolved_at),
            )
            for deadline in tracked.deadlines
        ],
        rules_version=tracked.rules_version,
        states=tracked.states,
    )
