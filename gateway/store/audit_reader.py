"""Reading any gateway replica's audit log from JetStream: entries by range, checkpoints, proofs.

Used by the gateway (start-up, its Audit and Checkpoint services) and by `dutylink audit`.
Frames read from the stream are unpacked here alone, by `stored_frames` (each frame in turn,
checked to continue the one before) and `read_entries` (a whole log as found, damage named, for
verification); both decode with the pure `gateway.audit.entries.frame_entries`.

`AuditReader` follows each log incrementally: a first read takes every stored frame, later reads
only the frames stored since. What is kept in memory per log is what proofs need — the subtree
hashes (about two hashes per entry) and where each frame starts — never the entries themselves,
which are fetched from the stream frame by frame when asked for.

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
from nats.js import JetStreamContext

from gateway.audit.entries import decode_frames, frame_entries
from gateway.audit.merkle import SHA256_TREE, SubtreeHashes, TreeHash, leaf_hash
from gateway.audit.note import Checkpoint, NoteError, unverified_text
from gateway.core import subjects
from gateway.core.ports import StoreDamagedError
from gateway.store.streams import stored_messages

READ_FAILURES = (nats.errors.Error, OSError, TimeoutError)


class DamagedLogError(Exception):
    """The stored log does not unpack into one gapless sequence of entries."""


class LogNotFoundError(LookupError):
    """The audit stream does not exist on this NATS."""


# --- frames -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredFrame:
    """One stored frame, unpacked: its stream sequence, first leaf index and entries."""

    sequence: int
    first: int
    entries: list[bytes]


async def stored_frames(
    js: JetStreamContext, gateway_id: str, *, start: int = 1, expected: int | None = None
) -> AsyncIterator[StoredFrame]:
    """The log's frames stored from stream sequence `start` on, in order. Raises
    `DamagedLogError` naming the first frame that does not decode or does not continue the one
    before (the first one read must start at leaf `expected`, unless None)."""
    subject = subjects.audit_entries(gateway_id)
    async for raw in stored_messages(js, subjects.AUDIT_STREAM, subject, start=start):
        where = f"audit log {gateway_id}: the frame at stream sequence {raw.seq}"
        try:
            first, entries = frame_entries(raw.data or b"")
        except ValueError as error:
            raise DamagedLogError(f"{where} {error}") from None
        if expected is not None and first != expected:
            raise DamagedLogError(f"{where} starts at entry {first}, expected {expected}")
        yield StoredFrame(raw.seq or 0, first, entries)
        expected = first + len(entries)


@dataclass(frozen=True)
class StoredEntries:
    """A log's entries as found, in stored order, with each frame that did not unpack named
    (`problems`), how many frames were read and the stream sequence of the last."""

    entries: list[bytes]
    problems: list[str]
    frames: int
    last_sequence: int


async def read_entries(js: JetStreamContext, gateway_id: str) -> StoredEntries:
    """Every stored entry of the log, reading on past damage (which `problems` names)."""
    frames: list[bytes] = []
    last_sequence = 0
    subject = subjects.audit_entries(gateway_id)
    async for raw in stored_messages(js, subjects.AUDIT_STREAM, subject):
        frames.append(raw.data or b"")
        last_sequence = raw.seq or last_sequence
    unframed = decode_frames(frames)
    return StoredEntries(unframed.entries, unframed.problems, len(frames), last_sequence)


async def audit_entries_from(
    js: JetStreamContext, gateway_id: str, start: int = 1
) -> tuple[list[tuple[int, bytes]], int]:
    """This gateway's audit entries (leaf index, stored bytes) in the frames stored from
    stream sequence `start` on, and the sequence to continue from. A frame that does not decode
    or does not continue the one before raises StoreDamagedError naming it."""
    entries: list[tuple[int, bytes]] = []
    following = start
    try:
        async for frame in stored_frames(js, gateway_id, start=start):
            entries.extend(
                (frame.first + offset, item) for offset, item in enumerate(frame.entries)
            )
            following = (frame.sequence or following) + 1
    except DamagedLogError as error:
        raise StoreDamagedError(f"{error}; run `dutylink audit verify`") from None
    return entries, following


# --- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as stored (not verified: callers verify `note` with the key)."""

    gateway_id: str
    note: str
    checkpoint: Checkpoint


def parse_stored_checkpoint(gateway_id: str, data: bytes) -> StoredCheckpoint:
    note = data.decode("utf-8", "surrogateescape")
    return StoredCheckpoint(gateway_id, note, Checkpoint.parse(unverified_text(note)))


async def latest_note(js: JetStreamContext, gateway_id: str) -> bytes | None:
    """The stored bytes of the log's latest checkpoint, or None before the first."""
    try:
        raw = await js.get_last_msg(subjects.AUDIT_STREAM, subjects.audit_checkpoints(gateway_id))
    except nats.js.errors.NotFoundError:
        return None
    return raw.data or b""


# --- a whole log, for verification (gateway.audit.verify) -------------------------------------


@dataclass(frozen=True)
class StoredLog:
    """A gateway's log as read: its entries (unpacked from their frames), its checkpoints
    (note texts), both in stored order, and any frame that did not unpack."""

    entries: list[bytes]
    checkpoints: list[str]
    frame_problems: list[str]


async def read_log(js: JetStreamContext, gateway_id: str) -> StoredLog:
    """A gateway's stored log, the values `gateway.audit.verify.verify_log` checks.

    Checkpoints are read first: a gateway appending meanwhile then only adds entries beyond
    what the checkpoints cover, never checkpoints beyond the entries read. Raises
    `LogNotFoundError` if the audit stream does not exist, and nats errors if NATS fails.
    """
    try:
        await js.stream_info(subjects.AUDIT_STREAM)
    except nats.js.errors.NotFoundError:
        raise LogNotFoundError(f"stream {subjects.AUDIT_STREAM} does not exist") from None
    subject = subjects.audit_checkpoints(gateway_id)
    notes = [raw.data or b"" async for raw in stored_messages(js, subjects.AUDIT_STREAM, subject)]
    stored = await read_entries(js, gateway_id)
    # Invalid UTF-8 survives as lone surrogates, which the note parser names with their offset.
    checkpoints = [data.decode("utf-8", "surrogateescape") for data in notes]
    return StoredLog(stored.entries, checkpoints, stored.problems)


# --- following logs ---------------------------------------------------------------------------


@dataclass
class _Followed:
    hashes: SubtreeHashes
    frame_starts: list[int] = field(default_factory=list)  # first leaf index of each frame
    frame_sequences: list[int] = field(default_factory=list)  # its stream sequence
    next_sequence: int = 1  # where to continue reading the stream
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AuditReader:
    """Follows audit logs in the `DUTYLINK_AUDIT` stream, hashed with the deployment's tree
    hash (its crypto profile's)."""

    def __init__(self, js: JetStreamContext, tree: TreeHash = SHA256_TREE) -> None:
        self._js = js
        self._tree = tree
        self._logs: dict[str, _Followed] = {}

    async def refresh(self, gateway_id: str) -> SubtreeHashes:
        """The log's subtree hashes, after reading whatever was stored since the last call."""
        followed = self._logs.setdefault(gateway_id, _Followed(SubtreeHashes(tree=self._tree)))
        async with followed.lock:
            async for frame in stored_frames(
                self._js,
                gateway_id,
                start=followed.next_sequence,
                expected=followed.hashes.size,
            ):
                followed.frame_starts.append(frame.first)
                followed.frame_sequences.append(frame.sequence)
                for data in frame.entries:
                    followed.hashes.append(leaf_hash(data, self._tree))
                followed.next_sequence = (frame.sequence or followed.next_sequence) + 1
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
            for offset, data in enumerate(frame_entries(raw.data or b"")[1]):
                if start <= first + offset < end:
                    yield first + offset, data
            frame += 1

    async def entry(self, gateway_id: str, index: int) -> bytes:
        async for _, data in self.entries(gateway_id, index, index + 1):
            return data
        raise IndexError(f"audit log {gateway_id} has no entry {index}")

    async def latest_checkpoint(self, gateway_id: str) -> StoredCheckpoint | None:
        data = await latest_note(self._js, gateway_id)
        return None if data is None else parse_stored_checkpoint(gateway_id, data)

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
