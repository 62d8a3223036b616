"""Salted commitments to withheld field values. Pure.

When policy withholds a field from a recipient, the audit entry of that delivery carries, per
withheld path, H(salt || the deterministic encoding of an Event holding only that path's
values). The salt is an HMAC of the delivery's context under the deployment's commitment key, so
(H and the HMAC's hash are the crypto profile's: SHA-256, or SM3 in the national profile):
- the log alone reveals nothing (no salt, no dictionary attack on a phone number);
- an auditor given the original event and the salt (`AuditService.RevealCommitmentSalts`)
  recomputes the commitment and proves exactly what was withheld from whom;
- nothing per delivery has to be stored besides the entry itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from dutylink.v1 import audit_pb2, event_pb2
from gateway.core.crypto import HashSuite

_CONTEXT = b"dutylink/commitment/v1"
KEY_BYTES = 32


def salt(key: bytes, event_id: str, recipient: str, path: str, hashing: HashSuite) -> bytes:
    """The salt of one withheld field of one delivery."""
    message = b"\x00".join((_CONTEXT, event_id.encode(), recipient.encode(), path.encode()))
    return hashing.mac(key, message)


def _project(source: Message, target: Message, parts: Sequence[str]) -> None:
    field = cast(FieldDescriptor, source.DESCRIPTOR.fields_by_name[parts[0]])
    value = getattr(source, field.name)
    if len(parts) == 1:
        if field.is_repeated:
            getattr(target, field.name).MergeFrom(value)
        elif field.message_type is not None:
            if source.HasField(field.name):
                getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
        return
    if field.is_repeated:
        for element in value:
            _project(element, getattr(target, field.name).add(), parts[1:])
    elif source.HasField(field.name):
        nested = getattr(target, field.name)
        nested.SetInParent()
        _project(value, nested, parts[1:])


def withheld_value(event: event_pb2.Event, path: str) -> bytes:
    """The deterministic encoding of an Event holding only the values at `path` (a path of
    `dutylink.policies.redaction`, repeated fields keeping their element positions)."""
    projection = event_pb2.Event()
    _project(event, projection, path.split("."))
    return projection.SerializeToString(deterministic=True)


def commitment(salt_bytes: bytes, event: event_pb2.Event, path: str, hashing: HashSuite) -> bytes:
    return hashing.digest(salt_bytes + withheld_value(event, path))


def commit(
    key: bytes, event: event_pb2.Event, recipient: str, paths: Sequence[str], hashing: HashSuite
) -> list[audit_pb2.FieldCommitment]:
    """Commitments to the values of `paths` in the original `event`, withheld from `recipient`."""
    return [
        audit_pb2.FieldCommitment(
            path=path,
            commitment=commitment(
                salt(key, event.id, recipient, path, hashing), event, path, hashing
            ),
        )
        for path in paths
    ]
