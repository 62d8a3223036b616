"""Audit entries for what the gateway does. Pure: values in, AuditEntry out.

Entries carry ids, types, digests, rule ids and field paths — never payload content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from dutylink.v1 import (
    audit_pb2,
    audit_service_pb2,
    common_pb2,
    event_pb2,
    gateway_pb2,
    incident_pb2,
    options_pb2,
    resource_pb2,
    warning_pb2,
)
from gateway.envelope import incident_ids
from policies.engine import Decision


def schema_version() -> str:
    """SHA-256 (hex) of the event schemas this gateway runs: every dutylink.v1 file's
    descriptor, so a schema change between two starts shows in the log."""
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for module in (
        audit_pb2,
        audit_service_pb2,
        common_pb2,
        event_pb2,
        gateway_pb2,
        incident_pb2,
        options_pb2,
        resource_pb2,
        warning_pb2,
    ):
        module.DESCRIPTOR.CopyToProto(descriptor_set.file.add())
    return hashlib.sha256(descriptor_set.SerializeToString(deterministic=True)).hexdigest()


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
        incident_ids=incident_ids(event),
    )
    if data:
        entry.event_digest = digest(data)
    return _decided(entry, decision)


def stored_entry(
    agency: str, event: event_pb2.Event, data: bytes, *, sequence: int, duplicate: bool
) -> audit_pb2.AuditEntry:
    """What the event stream answered for an accepted event (`data`: its exact bytes): stored
    at `sequence`, or a duplicate of the event already stored there."""
    entry = publish_entry(
        agency,
        event,
        audit_pb2.AUDIT_OUTCOME_DUPLICATE if duplicate else audit_pb2.AUDIT_OUTCOME_STORED,
        data=data,
    )
    entry.stream_sequence = sequence
    return entry


def _decided(entry: audit_pb2.AuditEntry, decision: Decision | None) -> audit_pb2.AuditEntry:
    if decision is not None:
        entry.rule_ids.extend(decision.rule_ids)
        entry.policy_version = decision.policy_version
    return entry


@dataclass(frozen=True)
class Delivered:
    """One delivery to a subscription, as the audit log needs it."""

    recipient: str
    subscription: str
    event_id: str
    event_type: str
    stream_sequence: int
    attempt: int
    incident_ids: tuple[str, ...] = ()


def delivery_entry(
    delivered: Delivered,
    *,
    data: bytes,
    decision: Decision,
    commitments: Sequence[audit_pb2.FieldCommitment] = (),
) -> audit_pb2.AuditEntry:
    """An event sent to a subscription (`data`: the exact event bytes sent, after redaction)."""
    entry = _delivery_fact(
        delivered,
        audit_pb2.AUDIT_ACTION_DELIVER
        if delivered.attempt <= 1
        else audit_pb2.AUDIT_ACTION_REDELIVER,
        audit_pb2.AUDIT_OUTCOME_OK,
    )
    entry.event_digest = digest(data)
    entry.withheld_fields.extend(c.path for c in commitments)
    entry.withheld_commitments.extend(commitments)
    return _decided(entry, decision)


def withheld_entry(delivered: Delivered, decision: Decision) -> audit_pb2.AuditEntry:
    """An event the policy kept from a subscription altogether."""
    entry = _delivery_fact(
        delivered, audit_pb2.AUDIT_ACTION_DELIVER, audit_pb2.AUDIT_OUTCOME_DENIED
    )
    entry.reason = decision.reason
    return _decided(entry, decision)


def settled_entry(
    delivered: Delivered, action: audit_pb2.AuditAction.ValueType, reason: str = ""
) -> audit_pb2.AuditEntry:
    """An ack, nack or dead-lettering of a delivery."""
    entry = _delivery_fact(delivered, action, audit_pb2.AUDIT_OUTCOME_OK)
    entry.reason = reason
    return entry


def _delivery_fact(
    delivered: Delivered,
    action: audit_pb2.AuditAction.ValueType,
    outcome: audit_pb2.AuditOutcome.ValueType,
) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        actor_agency=delivered.recipient,
        recipient_agency=delivered.recipient,
        subscription=delivered.subscription,
        action=action,
        outcome=outcome,
        event_id=delivered.event_id,
        event_type=delivered.event_type,
        stream_sequence=delivered.stream_sequence,
        attempt=delivered.attempt,
        incident_ids=delivered.incident_ids,
    )


def gateway_entry(
    action: audit_pb2.AuditAction.ValueType,
    outcome: audit_pb2.AuditOutcome.ValueType = audit_pb2.AUDIT_OUTCOME_OK,
    *,
    reason: str = "",
    actor: str = "",
    policy_version: str = "",
    schema_version: str = "",
    grant_id: str = "",
    subscription: str = "",
    data: bytes = b"",
) -> audit_pb2.AuditEntry:
    """Any other fact: start and stop, policy reloads, break-glass, subscriptions."""
    entry = audit_pb2.AuditEntry(
        action=action,
        outcome=outcome,
        reason=reason,
        actor_agency=actor,
        policy_version=policy_version,
        schema_version=schema_version,
        grant_id=grant_id,
        subscription=subscription,
    )
    if data:
        entry.event_digest = digest(data)
    return entry


def describe(entry: audit_pb2.AuditEntry) -> str:
    """One readable line: when, what, who, about which event, decided by what."""
    action = audit_pb2.AuditAction.Name(entry.action).removeprefix("AUDIT_ACTION_")
    outcome = audit_pb2.AuditOutcome.Name(entry.outcome).removeprefix("AUDIT_OUTCOME_")
    parts = [entry.time.ToJsonString() if entry.HasField("time") else "-", action, outcome]
    if entry.actor_agency:
        parts.append(entry.actor_agency)
    if entry.recipient_agency and entry.recipient_agency != entry.actor_agency:
        parts.append(f"-> {entry.recipient_agency}")
    if entry.subscription:
        parts.append(f"subscription={entry.subscription}")
    if entry.event_id:
        parts.append(f"event={entry.event_id}")
    if entry.event_type:
        parts.append(f"type={entry.event_type}")
    if entry.stream_sequence:
        parts.append(f"seq={entry.stream_sequence}")
    if entry.attempt > 1:
        parts.append(f"attempt={entry.attempt}")
    if entry.withheld_fields:
        parts.append(f"withheld={','.join(entry.withheld_fields)}")
    if entry.rule_ids:
        parts.append(f"rules={','.join(entry.rule_ids)}")
    if entry.policy_version:
        parts.append(f"policy={entry.policy_version[:12]}")
    if entry.grant_id:
        parts.append(f"grant={entry.grant_id}")
    if entry.reason:
        parts.append(f"reason={entry.reason!r}")
    return " ".join(parts)


# --- storage frames ---------------------------------------------------------------------------

# Under NATS's default 1 MiB message limit, with room for headers.
MAX_FRAME_BYTES = 256 * 1024


def encode_frames(
    entries: Sequence[bytes], first_sequence: int, max_bytes: int = MAX_FRAME_BYTES
) -> list[bytes]:
    """Encoded entries (in log order, the first being leaf `first_sequence`) packed into as few
    `AuditFrame`s as fit `max_bytes` each; an entry larger than that gets a frame of its own."""
    frames: list[bytes] = []
    frame = audit_pb2.AuditFrame(first_sequence=first_sequence)
    size = 0
    for data in entries:
        if frame.entries and size + len(data) + 8 > max_bytes:
            frames.append(frame.SerializeToString())
            frame = audit_pb2.AuditFrame(first_sequence=frame.first_sequence + len(frame.entries))
            size = 0
        frame.entries.append(data)
        size += len(data) + 8  # the field's tag and length prefix, generously
    if frame.entries:
        frames.append(frame.SerializeToString())
    return frames


def frame_entries(data: bytes) -> tuple[int, list[bytes]]:
    """One stored frame's first leaf index and entries; ValueError if it does not decode."""
    try:
        frame = audit_pb2.AuditFrame.FromString(data)
    except DecodeError:
        raise ValueError("does not decode as an AuditFrame") from None
    return frame.first_sequence, list(frame.entries)


@dataclass(frozen=True)
class Unframed:
    """Entries recovered from stored frames, with what did not fit."""

    entries: list[bytes]
    problems: list[str]


def decode_frames(frames: Sequence[bytes]) -> Unframed:
    """The entries of stored frames, in stored order. A frame that does not decode, or does not
    start where the previous one ended, is named; its entries are kept as found (leaf positions
    then shift, which the entry checks report too)."""
    entries: list[bytes] = []
    problems: list[str] = []
    for number, data in enumerate(frames):
        try:
            frame = audit_pb2.AuditFrame.FromString(data)
        except DecodeError:
            problems.append(f"frame {number}: does not decode as an AuditFrame")
            continue
        if frame.first_sequence != len(entries):
            problems.append(
                f"frame {number}: starts at entry {frame.first_sequence}, "
                f"but the frames before it hold {len(entries)}"
            )
        entries.extend(frame.entries)
    return Unframed(entries, problems)
