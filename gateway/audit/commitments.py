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

from dutylink.policies.redaction import project
from dutylink.v1 import audit_pb2, event_pb2
from gateway.core.crypto import HashSuite

_CONTEXT = b"dutylink/commitment/v1"
KEY_BYTES = 32


def salt(key: bytes, event_id: str, recipient: str, path: str, hashing: HashSuite) -> bytes:
    """The salt of one withheld field of one delivery."""
    message = b"\x00".join((_CONTEXT, event_id.encode(), recipient.encode(), path.encode()))
    return hashing.mac(key, message)


def withheld_value(event: event_pb2.Event, path: str) -> bytes:
    """The deterministic encoding of an Event holding only the values at `path` (a path of
    `dutylink.policies.redaction`, repeated fields keeping their element positions)."""
    return project(event, (path,), unset_too=True).SerializeToString(deterministic=True)


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
