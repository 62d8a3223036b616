"""Reading any gateway replica's audit log from JetStream: entries by range, checkpoints, proofs.

Used by the gateway's Audit and Checkpoint services and by `dutylink audit prove|export|tail`.
Each log is followed incrementally: a first read takes every stored frame, later reads only the
frames stored since. What is kept in memory per log is what proofs need — the subtree hashes
(about two hashes per entry) and where each frame starts — never the entries themselves, which
are fetched from the stream frame by frame when asked for.

A damaged log (a frame that does not decode or does not continue the one before) is refused
with `DamagedLogError`: proofs over it would prove nothing; `dutylink audit verify` says where.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext

from dutylink.v1 import audit_pb2
from gateway.audit.merkle import SubtreeHashes, leaf_hash
from gateway.audit.note import Checkpoint, NoteError, unverified_text
from gateway.core import subjects
from gateway.store.jetstream import stored_messages


class DamagedLogError(Exception):
    """The stored log does not unpack into one gapless sequence of entries."""


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as stored (not verified: callers verify `note` with the key)."""

    gateway_id: str
    note: str
    checkpoint: Checkpoint


@dataclass
class _Followed:
    hashes: SubtreeHashes = field(default_factory=SubtreeHashes)
    frame_starts: list[int] = field(default_factory=list)  # first leaf index of each frame
    frame_sequences: list[int] = field(default_factory=list)  # its stream sequence
    next_sequence: int = 1  # where to continue reading the stream
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def parse_stored_checkpoint(gateway_id: str, data: bytes) -> StoredCheckpoint:
    note = data.decode("utf-8", "surrogateescape")
    return StoredCheckpoint(gateway_id, note, Checkpoint.parse(unverified_text(note)))


class AuditReader:
    """Follows audit logs in the `DUTYLINK_AUDIT` stream."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._logs: dict[str, _Followed] = {}

    async def refresh(self, gateway_id: str) -> SubtreeHashes:
        """The log's subtree hashes, after reading whatever was stored since the last call."""
        followed = self._logs.setdefault(gateway_id, _Followed())
        async with followed.lock:
            subject = subjects.audit_entries(gateway_id)
            async for raw in stored_messages(
                self._js, subjects.AUDIT_STREAM, subject, start=followed.next_sequence
            ):
                where = f"audit log {gateway_id}: the frame at stream sequence {raw.seq}"
                try:
                    frame = audit_pb2.AuditFrame.FromString(raw.data or b"")
                except DecodeError:
                    raise DamagedLogError(f"{where} does not decode") from None
                first = frame.first_sequence
                if first != followed.hashes.size:
                    raise DamagedLogError(
                        f"{where} starts at entry {first}, expected {followed.hashes.size}"
                    )
                followed.frame_starts.append(first)
                followed.frame_sequences.append(raw.seq or 0)
                for data in frame.entries:
                    followed.hashes.append(leaf_hash(data))
                followed.next_sequence = (raw.seq or followed.next_sequence) + 1
            return followed.hashes

    async def entries(
        self, gateway_id: str, start: int, end: int
    ) -> AsyncIterator[tuple[int, bytes]]:
        """(leaf index, stored bytes) of entries start..end-1 (end clipped to the log's size)."""
        hashes = await self.refresh(gateway_id)
        followed = self._logs[gateway_id]
        end = min(end, hashes.size)
        if start >= end:
            return
        frame = bisect.bisect_right(followed.frame_starts, start) - 1
        while frame < len(followed.frame_starts) and followed.frame_starts[frame] < end:
            raw = await self._js.get_msg(subjects.AUDIT_STREAM, seq=followed.frame_sequences[frame])
            first = followed.frame_starts[frame]
            for offset, data in enumerate(audit_pb2.AuditFrame.FromString(raw.data or b"").entries):
                if start <= first + offset < end:
                    yield first + offset, data
            frame += 1

    async def entry(self, gateway_id: str, index: int) -> bytes:
        async for _, data in self.entries(gateway_id, index, index + 1):
            return data
        raise IndexError(f"audit log {gateway_id} has no entry {index}")

    async def latest_checkpoint(self, gateway_id: str) -> StoredCheckpoint | None:
        try:
            raw = await self._js.get_last_msg(
                subjects.AUDIT_STREAM, subjects.audit_checkpoints(gateway_id)
            )
        except nats.js.errors.NotFoundError:
            return None
        return parse_stored_checkpoint(gateway_id, raw.data or b"")

    async def checkpoints(self, gateway_id: str) -> AsyncIterator[StoredCheckpoint | NoteError]:
        """Every stored checkpoint of the log, oldest first (unparseable ones as errors)."""
        subject = subjects.audit_checkpoints(gateway_id)
        async for raw in stored_messages(self._js, subjects.AUDIT_STREAM, subject):
            try:
                yield parse_stored_checkpoint(gateway_id, raw.data or b"")
            except NoteError as error:
                yield error

    async def gateways(self) -> list[str]:
        """Gateway ids with an audit log in the stream."""
        try:
            info = await self._js.stream_info(
                subjects.AUDIT_STREAM, subjects_filter=subjects.audit_entries("*")
            )
        except nats.js.errors.NotFoundError:
            return []
        prefix = f"{subjects.AUDIT_PREFIX}."
        return [
            subject.removeprefix(prefix).removesuffix(".entries")
            for subject in sorted(info.state.subjects or {})
        ]


READ_FAILURES = (nats.errors.Error, OSError, TimeoutError)
