"""Audit entries for what the gateway does. Pure: values in, AuditEntry out.

Entries carry ids, types, digests, rule ids and field paths — never payload content.
"""

from __future__ import annotations

import hashlib

from dutylink.v1 import audit_pb2, event_pb2
from policies.engine import Decision


def digest(data: bytes) -> bytes:
    """SHA-256 of the exact bytes stored or sent."""
    return hashlib.sha256(data).digest()


def publish_entry(
    agency: str,
    event: event_pb2.Event,
    outcome: audit_pb2.AuditOutcome.ValueType,
    *,
    reason: str = "",
    data: bytes = b"",
    decision: Decision | None = None,
) -> audit_pb2.AuditEntry:
    entry = audit_pb2.AuditEntry(
        actor_agency=agency,
        action=audit_pb2.AUDIT_ACTION_PUBLISH,
        outcome=outcome,
        reason=reason,
        event_id=event.id,
        event_type=event.type,
    )
    if data:
        entry.event_digest = digest(data)
    if decision is not None:
        entry.rule_ids.extend(decision.rule_ids)
        entry.policy_version = decision.policy_version
    return entry
