"""The audit log's rules that need no stream: its errors and whose key signs it.

A log's checkpoint key is fixed by its first checkpoint: start-up refuses to sign on with
another key unless `audit.rotate_from_key` declares the change, which is then recorded as a
KEY_ROTATION entry (and, with the former private key at hand, endorsed: the first checkpoint
covering it is signed by both keys), so that verifiers can follow it. `check_signing_key`
decides that over values (the last stored note, the stored entries); the appending writer over
JetStream is gateway.store.audit_log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from dutylink.v1 import audit_pb2
from gateway.audit.entries import KeyRotation, parse_rotation
from gateway.audit.note import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    signature_keys,
    unverified_text,
)
from gateway.core.crypto import INTERNATIONAL
from gateway.core.settings import ConfigError


class AuditUnavailableError(Exception):
    """The audit log cannot be appended: whatever needed the entry must not happen."""


class AuditEntryRefusedError(AuditUnavailableError):
    """This caller's entries cannot be encoded or do not fit a frame; others' are unaffected."""


class SigningKeyChangedError(ConfigError):
    """The log's checkpoints are signed with another key than this gateway's, and no key
    rotation from that key is declared (`audit.rotate_from_key`)."""


@dataclass(frozen=True)
class DeclaredRotation:
    """`audit.rotate_from_key`: the log's former checkpoint key, as the operator knows it: its
    id alone (the refusal at start-up names it), its public key, or its private key (which
    then endorses the new key: it co-signs the first checkpoint after the rotation)."""

    key_id: bytes
    key: Verifier | None = None
    signer: Signer | None = None


def started_profile(entries: Sequence[bytes]) -> str | None:
    """The crypto profile the log started with: its first GATEWAY_START entry's (a log begun
    before profiles existed is "international"); None for a log not started yet."""
    for data in entries:
        try:
            entry = audit_pb2.AuditEntry.FromString(data)
        except DecodeError:
            continue  # a damaged entry is for `dutylink audit verify` to name
        if entry.action == audit_pb2.AUDIT_ACTION_GATEWAY_START:
            return entry.crypto_profile or INTERNATIONAL.name
    return None


def last_rotation(entries: Sequence[bytes]) -> KeyRotation | None:
    """The latest readable KEY_ROTATION among stored entries (read from the end)."""
    for data in reversed(entries):
        try:
            entry = audit_pb2.AuditEntry.FromString(data)
            if entry.action == audit_pb2.AUDIT_ACTION_KEY_ROTATION:
                return parse_rotation(entry)
        except (DecodeError, NoteError):
            continue  # a damaged entry is for `dutylink audit verify` to name
    return None


@dataclass(frozen=True)
class SigningKeyCheck:
    """What start-up found about the log's key: a declared rotation to record now (if due) and
    the former key that is to co-sign the first checkpoint after it (if at hand)."""

    rotation: KeyRotation | None = None
    endorser: Signer | None = None


def check_signing_key(
    signer: Signer,
    last_note: str | None,
    entries: Sequence[bytes],
    *,
    gateway_id: str,
    declared: DeclaredRotation | None,
    key_source: str,
) -> SigningKeyCheck:
    """A log's key is fixed by its first checkpoint; it changes only by a rotation recorded in
    the log. `last_note` is the log's last stored checkpoint, `entries` its stored entries.
    Raises `SigningKeyChangedError` if the log is signed with another key and no rotation from
    it is declared, `AuditUnavailableError` if the last checkpoint is damaged."""
    started = started_profile(entries)
    if started is not None and started != signer.profile.name:
        raise SigningKeyChangedError(
            f"audit log of gateway {gateway_id} started with the {started} crypto profile, but "
            f"this gateway's key ({key_source}) is an {signer.verifier().key_type.name} key of "
            f"the {signer.profile.name} one: a log's profile is fixed when it starts; set "
            f'audit.crypto_profile = "{started}", or start a new log under another gateway_id'
        )
    mine = (signer.name, signer.key_id)
    if last_note is None:
        return SigningKeyCheck()  # nothing signed yet: this key will be the log's
    try:
        keys = signature_keys(last_note)
        signed_size = Checkpoint.parse(unverified_text(last_note)).size
    except NoteError as error:
        raise AuditUnavailableError(
            f"audit log of {gateway_id}: its last checkpoint is damaged ({error}); "
            "run `dutylink audit verify`"
        ) from None
    log_key = _log_key(signer, keys, entries[:signed_size])
    if log_key == mine:
        return SigningKeyCheck()
    name, key_id = log_key
    pending = last_rotation(entries[signed_size:])
    if (
        pending is not None
        and pending.new_key.key_id == signer.key_id
        and pending.old_key_id == key_id
    ):
        # Recorded before a crash, not yet signed: sign on (endorsed if we still can).
        return SigningKeyCheck(endorser=None if declared is None else declared.signer)
    if declared is None or declared.key_id != key_id:
        mismatch = (
            f"this gateway's key is {signer.name}+{signer.key_id.hex()} "
            f"({key_source}) but its log's checkpoints are signed by {name}+{key_id.hex()}"
        )
        remedy = (
            "restore that key file, or declare a rotation with "
            f'audit.rotate_from_key = "{key_id.hex()}" (or the path of that key file, so '
            "that the old key endorses the new one)"
        )
        if declared is not None:
            remedy = f"audit.rotate_from_key names key {declared.key_id.hex()}, not {key_id.hex()}: {remedy}"
        raise SigningKeyChangedError(f"audit log of gateway {gateway_id}: {mismatch}; {remedy}")
    return SigningKeyCheck(
        KeyRotation(name, key_id, declared.key, signer.verifier()), declared.signer
    )


def _log_key(
    signer: Signer, keys: Sequence[tuple[str, bytes]], signed: Sequence[bytes]
) -> tuple[str, bytes]:
    """(name, key id) of the log's key in force, from its last checkpoint's signers. A
    checkpoint signed by two keys of this name follows a rotation: the newer one is the
    rotation's (so a former key put back in place is refused, not taken for the log's)."""
    same_name = [(n, k) for n, k in keys if n == signer.name]
    if len(same_name) > 1 and (rotation := last_rotation(signed)) is not None:
        return signer.name, rotation.new_key.key_id
    mine = (signer.name, signer.key_id)
    return mine if mine in keys else (same_name or list(keys))[0]
