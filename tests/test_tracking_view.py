"""What the sender and the command centre are shown of a tracked message, as pure values: who
may ask, the wire form of an entry, its audit entry, and the CLI's lines."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from dutylink.v1 import audit_pb2, gateway_pb2
from gateway.audit.entries import status_query_entry
from gateway.cli.duty import status_lines
from gateway.core.workflows import tracking
from gateway.core.workflows.tracking import ArmedDeadline, ArmedLevel, Expect
from gateway.core.workflows.tracking_view import may_see, tracked_message

T0 = datetime(2026, 8, 15, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def answered_warning() -> tracking.Tracked:
    """Fire took it, police declined, transport has it unanswered, energy is kept from it; the
    deadline escalated once and was met later."""
    deadline = ArmedDeadline(
        "ack-2m", Expect.ACKNOWLEDGED, at(2), (ArmedLevel(timedelta(0), ("command",)),)
    )
    tracked = tracking.start("W-1", "warning.alert", "ecology", T0, "policy-v1",
                             ("fire", "police", "transport", "energy"), ("energy",),
                             (deadline,), plane=1)  # fmt: skip
    tracked, _ = tracking.delivered(tracked, "transport", at(0.5))
    tracked, _ = tracking.answered(tracked, "fire", True, at(1), by="duty 3")
    tracked, _ = tracking.answered(tracked, "police", False, at(1), reason="not our area")
    tracked, _ = tracking.due(tracked, at(3))
    return tracked


def test_the_sender_and_the_command_role_may_see_a_message_no_one_else() -> None:
    assert may_see("ecology", "ecology", frozenset())
    assert may_see("ecology", "command", frozenset({"command"}))
    assert not may_see("ecology", "fire", frozenset())
    assert not may_see("ecology", "audit", frozenset({"auditor", "supervisor"}))


def test_the_wire_form_carries_every_recipient_the_counts_and_the_deadline() -> None:
    message = tracked_message(answered_warning())
    assert (message.event_id, message.sender, message.plane) == ("W-1", "ecology", 1)
    assert message.summary.text == (
        "delivered 3 of 3, acknowledged 1, declined 1, pending 1: transport; "
        "withheld by policy from energy"
    )
    assert (message.summary.intended, message.summary.delivered) == (3, 3)
    assert list(message.summary.pending) == ["transport"]
    statuses = {r.agency: r.status for r in message.recipients}
    assert statuses == {
        "energy": gateway_pb2.RECIPIENT_STATUS_WITHHELD,
        "fire": gateway_pb2.RECIPIENT_STATUS_ACKNOWLEDGED,
        "police": gateway_pb2.RECIPIENT_STATUS_DECLINED,
        "transport": gateway_pb2.RECIPIENT_STATUS_DELIVERED,
    }
    fire = next(r for r in message.recipients if r.agency == "fire")
    assert fire.answered_by == "duty 3" and fire.answered_at.ToDatetime(tzinfo=UTC) == at(1)
    transport = next(r for r in message.recipients if r.agency == "transport")
    assert not transport.HasField("answered_at")
    (deadline,) = message.deadlines
    assert (deadline.id, deadline.expect, deadline.levels, deadline.fired_levels) == (
        "ack-2m",
        gateway_pb2.DEADLINE_EXPECTATION_ACKNOWLEDGED,
        1,
        1,
    )
    assert not deadline.HasField("met_at")
    assert message.rules_version == "policy-v1"


def test_the_audit_entry_names_asker_and_message_and_the_digest_of_the_answer() -> None:
    answer = gateway_pb2.GetStatusResponse(message=tracked_message(answered_warning()))
    data = answer.SerializeToString()
    entry = status_query_entry("command", audit_pb2.AUDIT_OUTCOME_OK, sender="ecology",
                               event_id="W-1", reason="delivered …",
                               answer_digest=hashlib.sha256(data).digest())  # fmt: skip
    assert entry.action == audit_pb2.AUDIT_ACTION_STATUS_QUERY
    assert (entry.actor_agency, entry.recipient_agency, entry.event_id) == (
        "command",
        "ecology",
        "W-1",
    )
    assert entry.event_digest == hashlib.sha256(data).digest()
    refused = status_query_entry("fire", audit_pb2.AUDIT_OUTCOME_DENIED, sender="ecology",
                                 event_id="W-1", reason="not the sender")  # fmt: skip
    assert not refused.event_digest


def test_the_cli_shows_the_summary_then_one_line_per_recipient_then_the_deadlines() -> None:
    lines = status_lines(tracked_message(answered_warning()))
    assert lines == [
        "delivered 3 of 3, acknowledged 1, declined 1, pending 1: transport; "
        "withheld by policy from energy",
        "  energy: withheld",
        "  fire: acknowledged 2026-08-15 09:01:00Z by duty 3",
        "  police: declined 2026-08-15 09:01:00Z: not our area",
        "  transport: delivered 2026-08-15 09:00:30Z",
        "deadline ack-2m: due 2026-08-15 09:02:00Z, escalated 1 of 1 levels",
    ]
