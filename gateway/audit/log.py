"""This gateway's audit log in JetStream: append entries, keep the Merkle state, sign checkpoints.

Layout (one stream for every replica, one subject pair per replica, names in `gateway.subjects`):
    dutylink.audit.<gateway id>.entries       AuditFrames: the entries of one append each, in
                                              order; leaf i = the i-th entry over all frames
    dutylink.audit.<gateway id>.checkpoints   C2SP signed notes of tlog-checkpoints
The stream denies delete and purge, discards new messages when full (fail closed, never evict)
and has no age limit (leaf numbering depends on every entry staying). One process appends per gateway id, in order, under a lock;
after a crash the log state is rebuilt from the entries themselves.

Ordering on publish (see `AuditOutcome.ACCEPTED`): audit entry durable, then the event stored,
then the publisher acknowledged. If the audit append fails the publish is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
import nats.js.errors
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import timestamp_pb2
from nats.js import api

from dutylink.v1 import audit_pb2
from gateway import subjects
from gateway.audit.entries import decode_frames, encode_frames
from gateway.audit.merkle import TreeState, leaf_hash
from gateway.audit.note import Checkpoint, Signer, sign_note
from gateway.jetstream import EventStore, StoreError, ensure_stream, stored_messages

log = structlog.get_logger("dutylink.audit")
APPEND_TIMEOUT_SECONDS = 5.0


class AuditUnavailableError(Exception):
    """The audit log cannot be appended: whatever needed the entry must not happen."""


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
    ) -> None:
        self._store = store
        self._js = store.client.jetstream()
        self._queued: list[tuple[Sequence[audit_pb2.AuditEntry], asyncio.Future[list[int]]]] = []
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
            await ensure_stream(self._js, config)
            entries = subjects.audit_entries(self.gateway_id)
            frames = []
            last_stored = 0
            async for raw in stored_messages(self._js, subjects.AUDIT_STREAM, entries):
                frames.append(raw.data or b"")
                last_stored = raw.seq or last_stored
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
        self._tree = TreeState.from_leaf_hashes(leaves)
        self._in_doubt = False
        log.info(
            "audit.log_ready", gateway_id=self.gateway_id, size=self._tree.size, origin=self.origin
        )

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

    async def _write(
        self, queued: list[tuple[Sequence[audit_pb2.AuditEntry], asyncio.Future[list[int]]]]
    ) -> None:
        try:
            if self._in_doubt:
                # A failed append may still have been stored: the stream, not memory, decides.
                await self.start()
            now = timestamp_pb2.Timestamp()
            now.FromDatetime(datetime.now(UTC))
            first = self._tree.size
            encoded: list[bytes] = []
            indices: list[list[int]] = []
            for entries, _ in queued:
                positions = []
                for entry in entries:
                    entry.sequence = first + len(encoded)
                    entry.gateway_id = self.gateway_id
                    if not entry.HasField("time"):
                        entry.time.CopyFrom(now)
                    positions.append(entry.sequence)
                    encoded.append(entry.SerializeToString())
                indices.append(positions)
            subject = subjects.audit_entries(self.gateway_id)
            # Frames one after another (nearly always just one): a later frame must never be
            # stored after an earlier one failed. The expected last sequence makes JetStream
            # refuse a frame if anything else wrote to this log meanwhile (a second process
            # misconfigured with the same gateway id), instead of interleaving two histories.
            for frame in encode_frames(encoded, first):
                headers = {"Nats-Expected-Last-Subject-Sequence": str(self._last_stored)}
                [outcome] = await self._store.publish_pipelined(
                    [(subject, frame, headers)],
                    APPEND_TIMEOUT_SECONDS,
                    stream=subjects.AUDIT_STREAM,
                )
                if isinstance(outcome, StoreError):
                    self._in_doubt = True
                    raise AuditUnavailableError(f"audit log append failed: {outcome}")
                self._last_stored = outcome.sequence
        except (AuditUnavailableError, StoreError) as error:
            failure = (
                error
                if isinstance(error, AuditUnavailableError)
                else AuditUnavailableError(str(error))
            )
            for _, done in queued:
                done.set_exception(failure)
            return
        for data in encoded:
            self._tree.append(leaf_hash(data))
        for (_, done), positions in zip(queued, indices, strict=True):
            done.set_result(positions)

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
        note = sign_note(Checkpoint(self.origin, size, root).to_text(), [self._signer])
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
