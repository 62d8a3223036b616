"""The latest signed checkpoint of a gateway's audit log, kept outside the audit stream.

A message block of `DUTYLINK_AUDIT` cut short at a frame boundary loses entries and their
checkpoints together: the shorter log still verifies on its own, and appending to it would
hand out again leaf indices that auditors already hold in checkpoints. So after each signed
checkpoint is stored, the gateway also keeps the note in its data directory
(`<data_dir>/audit/<gateway id>.checkpoint`, 0600, replaced atomically), and at start-up the log
read from the stream must reach that checkpoint's size with the same root there.

Pure: the check over the note and the log's roots; the file is kept and read by
gateway.store.audit_files.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from gateway.audit.note import Checkpoint, NoteError, Verifier, open_note, signature_keys


class KeptCheckpointMismatchError(ValueError):
    """The log read from the stream does not reach the kept checkpoint, or the kept note cannot
    be trusted (the edge reports it as gateway.store.audit_files.KeptCheckpointError)."""


def check_kept_checkpoint(
    note: str,
    *,
    where: str,
    gateway_id: str,
    origin: str,
    verifiers: Iterable[Verifier],
    unverifiable_key_ids: Collection[bytes],
    size: int,
    root_at: Callable[[int], bytes],
) -> bool:
    """Check the log read from the stream (`size` entries, `root_at(n)` the root of its first
    n) against the kept note. Raises `KeptCheckpointMismatchError` if the log is shorter or differs, or
    if the note does not verify with the log's key. Returns False, unchecked, only for a note
    signed solely by a former key known by its id alone (a declared rotation), which cannot
    be verified and so is neither trusted nor held against the log."""
    try:
        text, _ = open_note(note, verifiers)
        checkpoint = Checkpoint.parse(text)
    except NoteError as error:
        with_ids = {key_id for _, key_id in _keys_or_none(note)}
        if with_ids and with_ids <= set(unverifiable_key_ids):
            return False
        raise KeptCheckpointMismatchError(
            f"audit log {gateway_id}: the kept checkpoint {where} does not verify with the "
            f"log's key ({error}); refusing to start (restore the right file or key)"
        ) from None
    if checkpoint.origin != origin:
        raise KeptCheckpointMismatchError(
            f"audit log {gateway_id}: the kept checkpoint {where} is of log "
            f"{checkpoint.origin!r}, not {origin!r}; refusing to start"
        )
    if checkpoint.size > size:
        raise KeptCheckpointMismatchError(
            f"audit log {gateway_id} lost entries: the stream holds {size} but the signed "
            f"checkpoint kept in {where} covers {checkpoint.size}; refusing to start "
            "(restore the DUTYLINK_AUDIT stream from a backup; run `dutylink audit verify`)"
        )
    if root_at(checkpoint.size) != checkpoint.root_hash:
        raise KeptCheckpointMismatchError(
            f"audit log {gateway_id} was rewritten: the stream holds {size} entries whose "
            f"first {checkpoint.size} do not match the root of the signed checkpoint kept in "
            f"{where}; refusing to start (run `dutylink audit verify`)"
        )
    return True


def _keys_or_none(note: str) -> list[tuple[str, bytes]]:
    try:
        return signature_keys(note)
    except NoteError:
        return []
