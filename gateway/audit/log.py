"""This gateway's audit log in JetStream: append entries, keep the Merkle state, sign checkpoints.

Layout (one stream for every replica, one subject pair per replica, names in `gateway.core.subjects`):
    dutylink.audit.<gateway id>.entries       AuditFrames: the entries of one append each, in
                                              order; leaf i = the i-th entry over all frames
    dutylink.audit.<gateway id>.checkpoints   C2SP signed notes of tlog-checkpoints
The stream denies delete and purge, discards new messages when full (fail closed, never evict)
and has no age limit (leaf numbering depends on every entry staying). One process appends per gateway id, in order, under a lock;
after a crash the log state is rebuilt from the entries themselves.

The log's checkpoint key is fixed by its first checkpoint: start-up refuses to sign on with
another key unless `audit.rotate_from_key` declares the change, which is then recorded as a
KEY_ROTATION entry (and, with the former private key at hand, endorsed: the first checkpoint
covering it is signed by both keys), so that verifiers can follow it.

Ordering on publish (see `AuditOutcome.ACCEPTED`): audit entry durable, then the event stored,
then the publisher acknowledged. If the audit append fails the publish is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
import nats.js.errors
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError
from nats.js import api

from dutylink.v1 import audit_pb2
from gateway.audit.entries import (
    KeyRotation,
    bound_entry,
    decode_frames,
    encode_frames,
    fits_a_frame,
    frame_budget,
    parse_rotation,
    rotation_entry,
)
from gateway.audit.kept import check_kept_checkpoint, keep_checkpoint, read_kept_checkpoint
from gateway.audit.merkle import TreeState, leaf_hash, root
from gateway.audit.note import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    sign_note,
    signature_keys,
    unverified_text,
)
from gateway.config import AuditSettings, ConfigError
from gateway.core import subjects
from gateway.store.jetstream import EventStore, StoreError, ensure_stream, stored_messages

log = structlog.get_logger("dutylink.audit")
APPEND_TIMEOUT_SECONDS = 5.0


class AuditUnavailableError(Exception):
    """The audit log cannot be appended: whatever needed the entry must not happen."""


class AuditEntryRefusedError(AuditUnavailableError):
    """This caller's entries cannot be encoded or do not fit a frame; others' are unaffected."""


class SigningKeyChangedError(ConfigError):
    """The log's checkpoints are signed with another key than this gateway's, and no key
    rotation from that key is declared (`audit.rotate_from_key`)."""


_Queued = tuple[Sequence[audit_pb2.AuditEntry], asyncio.Future[list[int]]]


@dataclass(frozen=True)
class DeclaredRotation:
    """`audit.rotate_from_key`: the log's former checkpoint key, as the operator knows it: its
    id alone (the refusal at start-up names it), its public key, or its private key (which
    then endorses the new key: it co-signs the first checkpoint after the rotation)."""

    key_id: bytes
    key: Verifier | None = None
    signer: Signer | None = None


def declared_rotation(value: str) -> DeclaredRotation:
    """Parse `audit.rotate_from_key`: 8 hex digits (a key id), a verifier key string, or the
    path of a file holding the former private key or its `.pub`."""
    where = "audit.rotate_from_key"
    text = value.strip()
    if len(text) == 8 and not text.strip("0123456789abcdef"):
        return DeclaredRotation(bytes.fromhex(text))
    if text.startswith("PRIVATE+KEY+"):  # configuration is shown (`config show`): no secrets
        raise ConfigError(f"{where}: give the path of the former key file, never the key itself")
    if text.count("+") < 2:
        try:
            text = Path(text).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(
                f"{where}: {value!r} is neither a key id (8 hex digits), a key nor a readable "
                f"key file ({error.strerror})"
            ) from None
        where = f"{where}: {value}"
    try:
        if text.startswith("PRIVATE+KEY+"):
            signer = Signer.from_key_string(text)
            return DeclaredRotation(signer.key_id, signer.verifier(), signer)
        key = Verifier.from_key_string(text)
    except NoteError as error:
        raise ConfigError(f"{where}: not a checkpoint key: {error}") from None
    return DeclaredRotation(key.key_id, key)


def load_or_create_signer(key_file: Path, name: str) -> Signer:
    """The gateway's Ed25519 checkpoint key, created (0600) on first start. The verifier key
    string is written beside it (`.pub`) for auditors."""
    if key_file.exists():
        return Signer.from_key_string(key_file.read_text(encoding="utf-8").strip())
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = Signer(name, Ed25519PrivateKey.generate())
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(signer.key_string() + "\n")
    key_file.with_suffix(".pub").write_text(signer.verifier().key_string() + "\n", encoding="utf-8")
    return signer


def _last_rotation(entries: Sequence[bytes]) -> KeyRotation | None:
    """The latest readable KEY_ROTATION among stored entries (read from the end)."""
    for data in reversed(entries):
        try:
            entry = audit_pb2.AuditEntry.FromString(data)
            if entry.action == audit_pb2.AUDIT_ACTION_KEY_ROTATION:
                return parse_rotation(entry)
        except (DecodeError, NoteError):
            continue  # a damaged entry is for `dutylink audit verify` to name
    return None


class AuditLog:
    """Appends this gateway's entries and signs checkpoints of the log."""

    def __init__(
        self,
        store: EventStore,
        gateway_id: str,
        signer: Signer,
        *,
        origin: str,
        replicas: int,
        max_field_bytes: int = AuditSettings.max_field_bytes,
        max_field_items: int = AuditSettings.max_field_items,
        rotate_from: DeclaredRotation | None = None,
        key_source: str = "audit.key_file",
        create_stream: bool = True,
        kept_checkpoint: Path | None = None,
    ) -> None:
        self._store = store
        # False for a writer that may neither create nor update streams (the operator log,
        # gateway.cli.operator_audit): it appends to the stream the gateway created.
        self._create_stream = create_stream
        self._js = store.client.jetstream()
        self._queued: list[_Queued] = []
        self._max_field_bytes = max_field_bytes
        self._max_field_items = max_field_items
        self._rotate_from = rotate_from
        self._key_source = key_source  # where the signing key came from, for messages
        # The latest signed checkpoint, also kept outside the stream (gateway.audit.kept).
        self._kept_file = kept_checkpoint
        self._kept_size = -1
        self._keeping = asyncio.Lock()
        # The former key, while it still has to co-sign the first checkpoint after a rotation.
        self._endorser: Signer | None = None
        self._frame_bytes = frame_budget(store.client.max_payload)
        self.gateway_id = gateway_id
        self._signer = signer
        self.origin = origin
        self._replicas = replicas
        self._tree = TreeState()
        self._lock = asyncio.Lock()
        self._signed_size = -1
        self._in_doubt = False
        self._last_stored = 0  # stream sequence of this log's last stored frame
        self.latest_checkpoint: str | None = None
        # Frames read back from the stream (start-up reads them all; a re-sync only the tail).
        self.frames_read = 0

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def signed_size(self) -> int:
        """Entries covered by the latest checkpoint this process signed (0 before the first)."""
        return max(self._signed_size, 0)

    async def start(self) -> None:
        """Ensure the stream, then rebuild the tree from every entry already stored."""
        config = api.StreamConfig(
            name=subjects.AUDIT_STREAM,
            description="Audit entries and signed checkpoints of every gateway replica",
            subjects=[f"{subjects.AUDIT_PREFIX}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.NEW,
            # No age limit: leaf i is the i-th stored entry, so nothing may ever age out (the
            # law asks for at least 180 days; archiving comes with `dutylink audit export`).
            max_age=0,
            num_replicas=self._replicas,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
        )
        try:
            if self._create_stream:
                await ensure_stream(self._js, config)
            entries = subjects.audit_entries(self.gateway_id)
            frames = []
            last_stored = 0
            async for raw in stored_messages(self._js, subjects.AUDIT_STREAM, entries):
                frames.append(raw.data or b"")
                last_stored = raw.seq or last_stored
                self.frames_read += 1
            try:
                last_note = await self._js.get_last_msg(
                    subjects.AUDIT_STREAM, subjects.audit_checkpoints(self.gateway_id)
                )
            except nats.js.errors.NotFoundError:
                last_note = None
        except (nats.errors.Error, OSError) as error:
            raise AuditUnavailableError(f"audit stream unavailable: {error}") from error
        stored = decode_frames(frames)
        if stored.problems:
            # Appending to a damaged log would sign over the damage: refuse, loudly.
            raise AuditUnavailableError(
                f"audit log of {self.gateway_id} is damaged ({'; '.join(stored.problems[:3])}); "
                "run `dutylink audit verify`"
            )
        leaves = [leaf_hash(data) for data in stored.entries]
        self._last_stored = last_stored
        self._frame_bytes = frame_budget(self._store.client.max_payload)
        self._tree = TreeState.from_leaf_hashes(leaves)
        self._in_doubt = False
        rotation = self._check_signing_key(
            None if last_note is None else (last_note.data or b"").decode("utf-8", "replace"),
            stored.entries,
        )
        self._check_kept_checkpoint(leaves)
        log.info(
            "audit.log_ready", gateway_id=self.gateway_id, size=self._tree.size, origin=self.origin
        )
        if rotation is not None:
            await self.append([rotation_entry(rotation)])
            await self.checkpoint()  # at once: the former key's endorsement, if it is at hand
            log.warning(
                "audit.key_rotated",
                gateway_id=self.gateway_id,
                old=rotation.old_label,
                new=rotation.new_label,
                endorsed=self._signed_size == self._tree.size and rotation.old_key is not None,
            )

    def _check_kept_checkpoint(self, leaves: Sequence[bytes]) -> None:
        """Refuse a log read from the stream that does not reach the checkpoint kept in the
        data directory (its stream lost entries and checkpoints together), before appending."""
        if self._kept_file is None or (note := read_kept_checkpoint(self._kept_file)) is None:
            return
        declared = self._rotate_from
        verifiers = [self._signer.verifier()]
        if declared is not None and declared.key is not None:
            verifiers.append(declared.key)
        checked = check_kept_checkpoint(
            note,
            where=self._kept_file,
            gateway_id=self.gateway_id,
            origin=self.origin,
            verifiers=verifiers,
            unverifiable_key_ids=[declared.key_id] if declared and declared.key is None else [],
            size=len(leaves),
            root_at=lambda size: root(leaves[:size]),
        )
        if not checked:
            log.warning(
                "audit.kept_checkpoint_unchecked",
                file=str(self._kept_file),
                reason="signed by the former key, known by its id alone",
            )

    async def _keep_checkpoint(self, size: int, note: str) -> None:
        """Keep the note outside the stream; never an older one over a newer one. A failure
        only weakens the next start's check (the older kept note still holds)."""
        if self._kept_file is None:
            return
        async with self._keeping:
            if size <= self._kept_size:
                return
            try:
                await asyncio.to_thread(keep_checkpoint, self._kept_file, note)
            except OSError as error:
                log.error("audit.checkpoint_not_kept", file=str(self._kept_file), reason=str(error))
                return
            self._kept_size = size

    def _check_signing_key(
        self, last_note: str | None, entries: Sequence[bytes]
    ) -> KeyRotation | None:
        """A log's key is fixed by its first checkpoint; it changes only by a rotation recorded
        in the log. Returns the rotation to record now, if one is declared and due; raises
        `SigningKeyChangedError` if the log is signed with another key and none is."""
        mine = (self._signer.name, self._signer.key_id)
        if last_note is None:
            return None  # nothing signed yet: this key will be the log's
        try:
            keys = signature_keys(last_note)
            signed_size = Checkpoint.parse(unverified_text(last_note)).size
        except NoteError as error:
            raise AuditUnavailableError(
                f"audit log of {self.gateway_id}: its last checkpoint is damaged ({error}); "
                "run `dutylink audit verify`"
            ) from None
        log_key = self._log_key(keys, entries[:signed_size])
        if log_key == mine:
            return None
        name, key_id = log_key
        declared = self._rotate_from
        pending = _last_rotation(entries[signed_size:])
        if (
            pending is not None
            and pending.new_key.key_id == self._signer.key_id
            and pending.old_key_id == key_id
        ):
            # Recorded before a crash, not yet signed: sign on (endorsed if we still can).
            if declared is not None and declared.signer is not None:
                self._endorser = declared.signer
            return None
        if declared is None or declared.key_id != key_id:
            mismatch = (
                f"this gateway's key is {self._signer.name}+{self._signer.key_id.hex()} "
                f"({self._key_source}) but its log's checkpoints are signed by {name}+{key_id.hex()}"
            )
            remedy = (
                "restore that key file, or declare a rotation with "
                f'audit.rotate_from_key = "{key_id.hex()}" (or the path of that key file, so '
                "that the old key endorses the new one)"
            )
            if declared is not None:
                remedy = f"audit.rotate_from_key names key {declared.key_id.hex()}, not {key_id.hex()}: {remedy}"
            raise SigningKeyChangedError(
                f"audit log of gateway {self.gateway_id}: {mismatch}; {remedy}"
            )
        self._endorser = declared.signer
        return KeyRotation(name, key_id, declared.key, self._signer.verifier())

    def _log_key(
        self, keys: Sequence[tuple[str, bytes]], signed: Sequence[bytes]
    ) -> tuple[str, bytes]:
        """(name, key id) of the log's key in force, from its last checkpoint's signers. A
        checkpoint signed by two keys of this name follows a rotation: the newer one is the
        rotation's (so a former key put back in place is refused, not taken for the log's)."""
        same_name = [(n, k) for n, k in keys if n == self._signer.name]
        if len(same_name) > 1 and (rotation := _last_rotation(signed)) is not None:
            return self._signer.name, rotation.new_key.key_id
        mine = (self._signer.name, self._signer.key_id)
        return mine if mine in keys else (same_name or list(keys))[0]

    async def append(self, entries: Sequence[audit_pb2.AuditEntry]) -> list[int]:
        """Append entries in order, durably; returns their leaf indices. Raises
        `AuditUnavailableError` if they could not all be stored.

        Group commit: while one append is in flight, others queue up, and the next one writes
        everything queued in one pipelined round trip — so concurrent publishes do not pay one
        JetStream round trip each, and the log still has exactly one writer."""
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queued.append((entries, done))
        async with self._lock:
            if not done.done():
                queued, self._queued = self._queued, []
                await self._write(queued)
        return await done

    async def _write(self, queued: list[_Queued]) -> None:
        try:
            if self._in_doubt:
                await self._resync()
        except AuditUnavailableError as error:
            for _, done in queued:
                done.set_exception(error)
            return
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(datetime.now(UTC))
        first = self._tree.size
        encoded: list[bytes] = []
        admitted: list[tuple[asyncio.Future[list[int]], list[int]]] = []
        for entries, done in queued:
            # Each caller's entries are encoded on their own: one caller's entry that cannot be
            # stored fails that caller alone, never the others sharing this group commit.
            try:
                own = [
                    self._encode(entry, first + len(encoded) + n, now)
                    for n, entry in enumerate(entries)
                ]
            except AuditEntryRefusedError as error:
                log.error("audit.entry_refused", reason=str(error))
                done.set_exception(error)
                continue
            admitted.append(
                (done, list(range(first + len(encoded), first + len(encoded) + len(own))))
            )
            encoded.extend(own)
        stored, failure = await self._publish(encoded, first)
        for data in encoded[:stored]:
            self._tree.append(leaf_hash(data))
        for done, positions in admitted:
            # Entries in frames stored before a failed one are durable: their callers succeed.
            if not positions or positions[-1] < first + stored:
                done.set_result(positions)
            else:
                assert failure is not None
                done.set_exception(failure)

    def _encode(
        self, entry: audit_pb2.AuditEntry, sequence: int, now: timestamp_pb2.Timestamp
    ) -> bytes:
        """The entry's stored bytes, with bounded content, its leaf index, gateway id and time."""
        entry.sequence = sequence
        entry.gateway_id = self.gateway_id
        if not entry.HasField("time"):
            entry.time.CopyFrom(now)
        try:
            bound_entry(entry, self._max_field_bytes, self._max_field_items)
            data = entry.SerializeToString()
        except Exception as error:  # whatever the encoder objects to, it is this entry's fault
            raise AuditEntryRefusedError(f"audit entry cannot be encoded: {error}") from error
        if not fits_a_frame(data, self._frame_bytes):
            raise AuditEntryRefusedError(
                f"audit entry of {len(data)} bytes does not fit a frame of {self._frame_bytes}"
            )
        return data

    async def _publish(
        self, encoded: list[bytes], first: int
    ) -> tuple[int, AuditUnavailableError | None]:
        """Store the entries as frames; (how many entries are durable, the failure if any)."""
        subject = subjects.audit_entries(self.gateway_id)
        stored = 0
        # Frames one after another (nearly always just one): a later frame must never be
        # stored after an earlier one failed. The expected last sequence makes JetStream
        # refuse a frame if anything else wrote to this log meanwhile (a second process
        # misconfigured with the same gateway id), instead of interleaving two histories.
        for frame in encode_frames(encoded, first, self._frame_bytes):
            headers = {"Nats-Expected-Last-Subject-Sequence": str(self._last_stored)}
            try:
                [outcome] = await self._store.publish_pipelined(
                    [(subject, frame, headers)],
                    APPEND_TIMEOUT_SECONDS,
                    stream=subjects.AUDIT_STREAM,
                )
            except StoreError as error:
                outcome = error
            if isinstance(outcome, StoreError):
                # It may still have been stored: the stream, not memory, decides (`_resync`).
                self._in_doubt = True
                return stored, AuditUnavailableError(f"audit log append failed: {outcome}")
            self._last_stored = outcome.sequence
            stored += len(audit_pb2.AuditFrame.FromString(frame).entries)
        return stored, None

    async def _resync(self) -> None:
        """After a failed append: adopt whatever the stream holds beyond the last frame this
        process knows it stored (a frame whose acknowledgement was lost, or another writer's),
        reading only those frames — never the whole log again."""
        subject = subjects.audit_entries(self.gateway_id)
        try:
            async for raw in stored_messages(
                self._js, subjects.AUDIT_STREAM, subject, start=self._last_stored + 1
            ):
                self.frames_read += 1
                try:
                    frame = audit_pb2.AuditFrame.FromString(raw.data or b"")
                except DecodeError:
                    frame = None
                if frame is None or frame.first_sequence != self._tree.size:
                    raise AuditUnavailableError(
                        f"audit log of {self.gateway_id} is damaged: the frame at stream "
                        f"sequence {raw.seq} does not continue entry {self._tree.size}; "
                        "run `dutylink audit verify`"
                    )
                for data in frame.entries:
                    self._tree.append(leaf_hash(data))
                self._last_stored = raw.seq or self._last_stored
        except (nats.errors.Error, OSError, TimeoutError) as error:
            raise AuditUnavailableError(f"audit stream unavailable: {error}") from error
        self._in_doubt = False
        log.info("audit.resynced", gateway_id=self.gateway_id, size=self._tree.size)

    async def checkpoint(self) -> str | None:
        """Sign and store a checkpoint if the log grew since the last one (signing is per
        checkpoint, never per entry); returns the signed note."""
        async with self._lock:
            if self._in_doubt:
                return (
                    None  # never sign a root the stream might contradict; the next append resyncs
                )
            size, root = self._tree.size, self._tree.root()
        if size == self._signed_size:
            return None
        endorser = self._endorser
        signers = [self._signer] if endorser is None else [endorser, self._signer]
        note = sign_note(Checkpoint(self.origin, size, root).to_text(), signers)
        try:
            await self._js.publish(
                subjects.audit_checkpoints(self.gateway_id),
                note.encode(),
                stream=subjects.AUDIT_STREAM,
            )
        except (TimeoutError, nats.errors.Error, OSError) as error:
            log.error("audit.checkpoint_failed", size=size, reason=str(error))
            return None
        self._signed_size, self.latest_checkpoint = size, note
        await self._keep_checkpoint(size, note)
        if endorser is not None and self._endorser is endorser:
            self._endorser = None  # endorsed once, in a checkpoint covering the rotation
        return note

    async def run_checkpoints(
        self, interval: float, before: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Sign a checkpoint every `interval` seconds while entries arrive, until cancelled;
        sign a last one on the way out. `before` runs before each (appending facts that wait
        for an append, so the checkpoint covers them)."""
        try:
            while True:
                await asyncio.sleep(interval)
                if before is not None:
                    await before()
                await self.checkpoint()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.checkpoint())
