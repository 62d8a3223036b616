"""Audit entries for what the gateway does. Pure: values in, AuditEntry out.

Entries carry ids, types, digests, rule ids and field paths — never payload content. Digests
of bytes stored or sent come in made: the caller hashes with its crypto profile's hash (SHA-256
or SM3), the one the log's tree uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from dutylink.policies.engine import Decision
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
from gateway.audit.note import NoteError, Verifier
from gateway.core.crypto import SHA256, HashSuite
from gateway.core.envelope import incident_ids

if TYPE_CHECKING:  # the type alone: the revocation keeper reads certificate files
    from gateway.access.revocation import RevocationChange


def schema_version(hashing: HashSuite = SHA256) -> str:
    """The digest (hex; the crypto profile's hash: SHA-256, or SM3) of the event schemas this
    gateway runs: every dutylink.v1 file's descriptor, so a schema change between two starts
    shows in the log."""
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
    return hashing.digest(descriptor_set.SerializeToString(deterministic=True)).hex()


def publish_entry(
    agency: str,
    event: event_pb2.Event,
    outcome: audit_pb2.AuditOutcome.ValueType,
    *,
    reason: str = "",
    digest: bytes = b"",
    decision: Decision | None = None,
) -> audit_pb2.AuditEntry:
    """A publish's fact; `digest`: of the event's exact bytes, when it was admitted."""
    entry = audit_pb2.AuditEntry(
        actor_agency=agency,
        action=audit_pb2.AUDIT_ACTION_PUBLISH,
        outcome=outcome,
        reason=reason,
        event_id=event.id,
        event_type=event.type,
        incident_ids=incident_ids(event),
    )
    if digest:
        entry.event_digest = digest
    return _decided(entry, decision)


def stored_entry(
    agency: str, event: event_pb2.Event, digest: bytes, *, sequence: int, duplicate: bool
) -> audit_pb2.AuditEntry:
    """What the event stream answered for an accepted event (`digest`: of its exact bytes):
    stored at `sequence`, or a duplicate of the event already stored there."""
    entry = publish_entry(
        agency,
        event,
        audit_pb2.AUDIT_OUTCOME_DUPLICATE if duplicate else audit_pb2.AUDIT_OUTCOME_STORED,
        digest=digest,
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
    digest: bytes,
    decision: Decision,
    commitments: Sequence[audit_pb2.FieldCommitment] = (),
) -> audit_pb2.AuditEntry:
    """An event sent to a subscription (`digest`: of the exact event bytes sent, after
    redaction)."""
    entry = _delivery_fact(
        delivered,
        audit_pb2.AUDIT_ACTION_DELIVER
        if delivered.attempt <= 1
        else audit_pb2.AUDIT_ACTION_REDELIVER,
        audit_pb2.AUDIT_OUTCOME_OK,
    )
    entry.event_digest = digest
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
    digest: bytes = b"",
) -> audit_pb2.AuditEntry:
    """Any other fact: start and stop, policy reloads, break-glass, subscriptions (`digest`:
    of the request's bytes, where one is kept)."""
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
    if digest:
        entry.event_digest = digest
    return entry


# --- bounded content --------------------------------------------------------------------------

# Lists whose items a caller supplies (an event's incident ids): their count is capped too.
# Lists the policy produces (rule ids, withheld fields and their commitments) stay whole.
_CALLER_LISTS = ("incident_ids",)


def _digest_label(hashing: HashSuite, data: bytes) -> str:
    """ "sha256:<hex>" or "sm3:<hex>": a digest named by its hash."""
    return f"{hashing.name.lower().replace('-', '')}:{hashing.digest(data).hex()}"


def bounded_text(text: str, max_bytes: int, hashing: HashSuite = SHA256) -> str:
    """`text` if its UTF-8 fits `max_bytes`; otherwise as much of its start as fits beside a
    marker naming its full length and digest (the crypto profile's hash), so the entry still
    identifies it without holding it. The result never exceeds `max(max_bytes, len(marker))`
    bytes."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return text
    marker = f"…[{len(raw)} bytes, {_digest_label(hashing, raw)}]"
    room = max(0, max_bytes - len(marker.encode()))
    return raw[:room].decode("utf-8", "ignore") + marker


def bound_entry(
    entry: audit_pb2.AuditEntry,
    max_field_bytes: int,
    max_items: int,
    hashing: HashSuite = SHA256,
) -> None:
    """Bound, in place, every string the entry holds (see `bounded_text`), and the number of
    items of caller-supplied lists: past `max_items`, the rest become one item naming their
    count and digest. An entry's size then has a fixed ceiling, whatever the input was."""
    for field, value in entry.ListFields():
        if field.type != field.TYPE_STRING:
            continue
        if not field.is_repeated:
            setattr(entry, field.name, bounded_text(value, max_field_bytes, hashing))
            continue
        items = list(value)
        if field.name in _CALLER_LISTS and len(items) > max_items:
            rest = items[max_items - 1 :]
            joined = "\n".join(rest).encode("utf-8", "surrogatepass")
            items = [
                *items[: max_items - 1],
                f"…[{len(rest)} more, {_digest_label(hashing, joined)}]",
            ]
        del value[:]
        value.extend(bounded_text(item, max_field_bytes, hashing) for item in items)


# --- key rotation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRotation:
    """A declared change of a log's checkpoint key (an AUDIT_ACTION_KEY_ROTATION entry). The
    old key may be known by its id alone (its files lost); the new key is always whole."""

    old_name: str
    old_key_id: bytes
    old_key: Verifier | None
    new_key: Verifier

    @property
    def old_label(self) -> str:
        return f"{self.old_name}+{self.old_key_id.hex()}"

    @property
    def new_label(self) -> str:
        return f"{self.new_key.name}+{self.new_key.key_id.hex()}"


def rotation_entry(rotation: KeyRotation) -> audit_pb2.AuditEntry:
    old = rotation.old_key.key_string() if rotation.old_key else rotation.old_label
    return gateway_entry(
        audit_pb2.AUDIT_ACTION_KEY_ROTATION,
        reason=f"from {old} to {rotation.new_key.key_string()}",
    )


def parse_rotation(entry: audit_pb2.AuditEntry) -> KeyRotation:
    """The rotation a KEY_ROTATION entry records; NoteError if its reason is not one."""
    words = entry.reason.split(" ")
    if len(words) != 4 or words[0] != "from" or words[2] != "to":
        raise NoteError(f"key rotation {entry.reason[:200]!r} is not 'from <key> to <key>'")
    new_key = Verifier.from_key_string(words[3])
    if words[1].count("+") >= 2:
        old_key = Verifier.from_key_string(words[1])
        return KeyRotation(old_key.name, old_key.key_id, old_key, new_key)
    name, _, key_id = words[1].partition("+")
    if not name or len(key_id) != 8 or key_id.strip("0123456789abcdef"):
        raise NoteError(f"key rotation names old key {words[1][:100]!r}, not name+<8 hex key id>")
    return KeyRotation(name, bytes.fromhex(key_id), None, new_key)


def salt_reveal_entry(
    auditor: str, gateway_id: str, index: int, revealed: audit_pb2.AuditEntry
) -> audit_pb2.AuditEntry:
    """An auditor was given the salts of entry `index` of `gateway_id`'s log (`revealed`, a
    delivery): who asked, about which event, delivered to whom, which paths."""
    entry = audit_pb2.AuditEntry(
        action=audit_pb2.AUDIT_ACTION_SALT_REVEAL,
        outcome=audit_pb2.AUDIT_OUTCOME_OK,
        actor_agency=auditor,
        recipient_agency=revealed.recipient_agency,
        subscription=revealed.subscription,
        event_id=revealed.event_id,
        event_type=revealed.event_type,
        stream_sequence=revealed.stream_sequence,
        incident_ids=revealed.incident_ids,
        withheld_fields=[c.path for c in revealed.withheld_commitments],
        reason=f"salts of entry {index} of audit log {gateway_id} revealed to {auditor}",
    )
    return entry


def status_query_entry(
    asker: str,
    outcome: audit_pb2.AuditOutcome.ValueType,
    *,
    sender: str,
    event_id: str = "",
    event_type: str = "",
    reason: str,
    answer_digest: bytes = b"",
) -> audit_pb2.AuditEntry:
    """`asker` asked for the acknowledgement status of `sender`'s message `event_id` (none: the
    list of pending ones); `answer_digest`: of the response sent."""
    entry = audit_pb2.AuditEntry(
        action=audit_pb2.AUDIT_ACTION_STATUS_QUERY,
        outcome=outcome,
        actor_agency=asker,
        recipient_agency=sender,
        event_id=event_id,
        event_type=event_type,
        reason=reason,
    )
    if answer_digest:
        entry.event_digest = answer_digest
    return entry


def board_query_entry(
    asker: str,
    outcome: audit_pb2.AuditOutcome.ValueType,
    *,
    reason: str,
    incidents: Sequence[str] = (),
    answer_digest: bytes = b"",
) -> audit_pb2.AuditEntry:
    """`asker` asked for the duty board (`reason`: what, and how much was answered) about
    `incidents`; `answer_digest`: of the response sent."""
    entry = audit_pb2.AuditEntry(
        action=audit_pb2.AUDIT_ACTION_BOARD_QUERY,
        outcome=outcome,
        actor_agency=asker,
        reason=reason,
        incident_ids=incidents,
    )
    if answer_digest:
        entry.event_digest = answer_digest
    return entry


def dead_letter_replay_entry(
    operator: str,
    letter_sequence: int,
    *,
    recipient: str,
    subscription: str,
    event_id: str,
    event_type: str,
    original_sequence: int,
    outcome: audit_pb2.AuditOutcome.ValueType = audit_pb2.AUDIT_OUTCOME_OK,
    reason: str = "",
) -> audit_pb2.AuditEntry:
    """An operator replayed dead letter `letter_sequence` (event `event_id`, first stored at
    `original_sequence`) to `recipient`'s `subscription`."""
    told = f"dead letter {letter_sequence} replayed by {operator}"
    return audit_pb2.AuditEntry(
        action=audit_pb2.AUDIT_ACTION_DEAD_LETTER_REPLAY,
        outcome=outcome,
        actor_agency=operator,
        recipient_agency=recipient,
        subscription=subscription,
        event_id=event_id,
        event_type=event_type,
        stream_sequence=original_sequence,
        reason=f"{told}: {reason}" if reason else told,
    )


# By `ChangeKind` value.
_REVOCATION_OUTCOMES = {
    "loaded": audit_pb2.AUDIT_OUTCOME_OK,
    "refused": audit_pb2.AUDIT_OUTCOME_INVALID,
    "unusable": audit_pb2.AUDIT_OUTCOME_FAILED,
}


def revocation_entry(change: RevocationChange) -> audit_pb2.AuditEntry:
    """A change of the CRL in force: loaded, a replacement refused, or unusable."""
    entry = gateway_entry(
        audit_pb2.AUDIT_ACTION_REVOCATION_LIST,
        _REVOCATION_OUTCOMES[change.kind.value],
        reason=change.reason,
    )
    if change.digest:
        entry.event_digest = change.digest
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

# Under NATS's default 1 MiB message limit, with room for headers; less if the server's
# max_payload is smaller (see `frame_budget`).
MAX_FRAME_BYTES = 256 * 1024
# Room left in a NATS message for the frame's headers (expected stream and last sequence).
HEADER_ROOM_BYTES = 4096
# A frame's own fields besides its entries: first_sequence's tag and varint.
_FRAME_HEAD_BYTES = 11


def frame_budget(max_payload: int, max_bytes: int = MAX_FRAME_BYTES) -> int:
    """The largest frame to publish to a server whose messages carry `max_payload` bytes."""
    return max(0, min(max_bytes, max_payload - HEADER_ROOM_BYTES))


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def framed_size(data: bytes) -> int:
    """Bytes an encoded entry takes inside a frame: tag, length prefix, the entry."""
    return 1 + _varint_size(len(data)) + len(data)


def fits_a_frame(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> bool:
    return _FRAME_HEAD_BYTES + framed_size(data) <= max_bytes


class FrameTooLargeError(ValueError):
    """An entry does not fit a frame by itself (the log refuses it before packing)."""


def encode_frames(
    entries: Sequence[bytes], first_sequence: int, max_bytes: int = MAX_FRAME_BYTES
) -> list[bytes]:
    """Encoded entries (in log order, the first being leaf `first_sequence`) packed into as few
    `AuditFrame`s as fit `max_bytes` each. No frame is ever larger: an entry that does not fit
    one by itself raises `FrameTooLargeError` (check with `fits_a_frame` first)."""
    frames: list[bytes] = []
    frame = audit_pb2.AuditFrame(first_sequence=first_sequence)
    size = _FRAME_HEAD_BYTES
    for data in entries:
        if not fits_a_frame(data, max_bytes):
            raise FrameTooLargeError(
                f"an audit entry of {len(data)} bytes does not fit a frame of {max_bytes} bytes"
            )
        if frame.entries and size + framed_size(data) > max_bytes:
            frames.append(frame.SerializeToString())
            frame = audit_pb2.AuditFrame(first_sequence=frame.first_sequence + len(frame.entries))
            size = _FRAME_HEAD_BYTES
        frame.entries.append(data)
        size += framed_size(data)
    if frame.entries:
        frames.append(frame.SerializeToString())
    return frames


def frame_entries(data: bytes) -> tuple[int, list[bytes]]:
    """One stored frame's first leaf index and entries; ValueError if it does not decode. The
    one place a stored frame is decoded (gateway.store.audit_reader reads them)."""
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
            first, unpacked = frame_entries(data)
        except ValueError as error:
            problems.append(f"frame {number}: {error}")
            continue
        if first != len(entries):
            problems.append(
                f"frame {number}: starts at entry {first}, "
                f"but the frames before it hold {len(entries)}"
            )
        entries.extend(unpacked)
    return Unframed(entries, problems)
