"""This gateway's audit log in JetStream: append entries, keep the Merkle state, sign checkpoints.

Layout (one stream for every replica, one subject pair per replica, names in `gateway.core.subjects`):
    dutylink.audit.<gateway id>.entries       AuditFrames: the entries of one append each, in
                                              order; leaf i = the i-th entry over all frames
    dutylink.audit.<gateway id>.checkpoints   C2SP signed notes of tlog-checkpoints
The stream (gateway.core.streams.audit_stream_spec) denies delete and purge, discards new messages
when full (fail closed, never evict) and has no age limit (leaf numbering depends on every entry
staying).
One process appends per gateway id, in order, under a lock; after a crash the log state is
rebuilt from the entries themselves.

The log's key rule (gateway.audit.log.check_signing_key), frames, Merkle maths and notes are the
pure audit core; this module is their writer over JetStream, with the clock.

Ordering on publish (see `AuditOutcome.ACCEPTED`): audit entry durable, then the event stored,
then the publisher acknowledged. If the audit append fails the publish is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
import structlog
from google.protobuf import timestamp_pb2

from dutylink.v1 import audit_pb2
from gateway.audit.entries import (
    bound_entry,
    encode_frames,
    fits_a_frame,
    frame_budget,
    frame_entries,
    rotation_entry,
)
from gateway.audit.kept import KeptCheckpointMismatchError, check_kept_checkpoint
from gateway.audit.log import (
    AuditEntryRefusedError,
    AuditUnavailableError,
    DeclaredRotation,
    check_signing_key,
)
from gateway.audit.merkle import TreeState, leaf_hash, root, tree_for
from gateway.audit.note import Checkpoint, Signer, sign_note
from gateway.core import subjects
from gateway.core.crypto import HashSuite
from gateway.core.ports import StoreError
from gateway.core.settings import AuditSettings
from gateway.core.streams import audit_stream_spec
from gateway.store.audit_files import KeptCheckpointError, keep_checkpoint, read_kept_checkpoint
from gateway.store.audit_reader import DamagedLogError, latest_note, read_entries, stored_frames
from gateway.store.jetstream import EventStore
from gateway.store.streams import ensure_stream, stream_config

log = structlog.get_logger("dutylink.audit")
APPEND_TIMEOUT_SECONDS = 5.0

_Queued = tuple[Sequence[audit_pb2.AuditEntry], asyncio.Future[list[int]]]


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
        # The tree's hash follows the key: SHA-256 under Ed25519, SM3 under SM2 (the profile).
        self._tree_hash = tree_for(signer.profile)
        self._tree = TreeState(tree=self._tree_hash)
        self._lock = asyncio.Lock()
        self._signed_size = -1
        self._signed_at = time.monotonic()  # the last checkpoint signed (or the start)
        self._in_doubt = False
        self._last_stored = 0  # stream sequence of this log's last stored frame
        self.latest_checkpoint: str | None = None
        # Frames read back from the stream (start-up reads them all; a re-sync only the tail).
        self.frames_read = 0

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def hashing(self) -> HashSuite:
        """The log's profile's hash: of its tree, and of the bytes its entries record."""
        return self._signer.profile.hash

    @property
    def signed_size(self) -> int:
        """Entries covered by the latest checkpoint this process signed (0 before the first)."""
        return max(self._signed_size, 0)

    def unsigned_seconds(self) -> float:
        """0 while every entry is covered by a signed checkpoint; else the seconds since the
        last one was signed (a bound on how long an entry has waited for its signature)."""
        if self._tree.size == self._signed_size:
            return 0.0
        return time.monotonic() - self._signed_at

    async def start(self) -> None:
        """Ensure the stream, then rebuild the tree from every entry already stored."""
        try:
            if self._create_stream:
                await ensure_stream(self._js, stream_config(audit_stream_spec(self._replicas)))
            stored = await read_entries(self._js, self.gateway_id)
            last_note = await latest_note(self._js, self.gateway_id)
        except (nats.errors.Error, OSError) as error:
            raise AuditUnavailableError(f"audit stream unavailable: {error}") from error
        self.frames_read += stored.frames
        if stored.problems:
            # Appending to a damaged log would sign over the damage: refuse, loudly.
            raise AuditUnavailableError(
                f"audit log of {self.gateway_id} is damaged ({'; '.join(stored.problems[:3])}); "
                "run `dutylink audit verify`"
            )
        leaves = [leaf_hash(data, self._tree_hash) for data in stored.entries]
        self._last_stored = stored.last_sequence
        self._frame_bytes = frame_budget(self._store.client.max_payload)
        self._tree = TreeState.from_leaf_hashes(leaves, self._tree_hash)
        self._in_doubt = False
        checked = check_signing_key(
            self._signer,
            None if last_note is None else last_note.decode("utf-8", "replace"),
            stored.entries,
            gateway_id=self.gateway_id,
            declared=self._rotate_from,
            key_source=self._key_source,
        )
        rotation, self._endorser = checked.rotation, checked.endorser
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
        try:
            checked = check_kept_checkpoint(
                note,
                where=str(self._kept_file),
                gateway_id=self.gateway_id,
                origin=self.origin,
                verifiers=verifiers,
                unverifiable_key_ids=[declared.key_id] if declared and declared.key is None else [],
                size=len(leaves),
                root_at=lambda size: root(leaves[:size], self._tree_hash),
            )
        except KeptCheckpointMismatchError as error:
            raise KeptCheckpointError(str(error)) from None
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
            self._tree.append(leaf_hash(data, self._tree_hash))
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
            bound_entry(entry, self._max_field_bytes, self._max_field_items, self.hashing)
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
            stored += len(frame_entries(frame)[1])
        return stored, None

    async def _resync(self) -> None:
        """After a failed append: adopt whatever the stream holds beyond the last frame this
        process knows it stored (a frame whose acknowledgement was lost, or another writer's),
        reading only those frames — never the whole log again."""
        try:
            async for frame in stored_frames(
                self._js, self.gateway_id, start=self._last_stored + 1, expected=self._tree.size
            ):
                self.frames_read += 1
                for data in frame.entries:
                    self._tree.append(leaf_hash(data, self._tree_hash))
                self._last_stored = frame.sequence or self._last_stored
        except DamagedLogError as error:
            raise AuditUnavailableError(
                f"audit log of {self.gateway_id} is damaged ({error}); run `dutylink audit verify`"
            ) from None
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
        self._signed_at = time.monotonic()
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
