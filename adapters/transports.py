"""Transports shared by the adapters: a drop directory in, a directory out.

`DirectorySource` — the file-drop contract for department systems:
- write a file under another name (or a dot-name) and rename it into the inbox when complete;
- the adapter claims it by renaming it into `<state>/processing/` (atomic: the inbox and the
  state directory must be on one filesystem), splits it into records, publishes them in
  batches, and after each batch records how far it got in `<name>.progress`;
- after a crash it resumes that file from its progress: the batch in doubt is published again
  and the gateway reports its events as duplicates (their ids come from the records), so there
  is no duplicate and no gap;
- a finished file moves to `<state>/done/`; a file that cannot be read at all moves to
  `<state>/rejected/` with `<name>.reason.txt`; records it could not publish are kept one by
  one in `rejected/` with their line and reason (see framework.RejectedStore), each with the
  permission bits of the file it came from;
- only regular files are taken: a symbolic link (which could point at any file the adapter
  may read) is moved, as a link, to `<state>/rejected/` with its reason, its target never
  opened; other kinds (directories, FIFOs) are left alone.

`DirectorySink` writes each outbound record as a file, atomically (temporary name, fsync,
rename), named after its event so that a redelivery rewrites the same file.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import errno
import io
import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from dutylink.adapters.framework import KEPT_MODE, Pipeline, PublishUnavailableError, write_new_file
from dutylink.adapters.records import OutboundRecord, Record

log = structlog.get_logger("dutylink.adapter")

Splitter = Callable[[str, bytes], list[Record]]  # (file name, content) -> records


class UnreadableFileError(Exception):
    """The file as a whole cannot be split into records (the reason says why)."""


def split_whole(content_type: str) -> Splitter:
    """One record per file (CAP, EDXL: one XML document each)."""

    def split(name: str, data: bytes) -> list[Record]:
        return [Record(name, data, name, content_type)]

    return split


def split_json_lines(name: str, data: bytes) -> list[Record]:
    """One record per non-empty line; the record id is `name:line`."""
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            records.append(Record(f"{name}:{number}", line, f"{name}:{number}", "application/json"))
    return records


def split_csv(name: str, data: bytes) -> list[Record]:
    """One record per row, as a JSON object keyed by the header row (UTF-8, BOM allowed)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnreadableFileError(f"not UTF-8 text: {error}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise UnreadableFileError("no header row")
    records = []
    for row in reader:
        where = f"{name}:{reader.line_num}"
        extra = row.pop(None, None)
        problem = f"{len(extra)} more fields than the header" if extra else ""
        if not extra and None in row.values():
            problem = "fewer fields than the header"
        body = json.dumps(row, ensure_ascii=False).encode()
        records.append(Record(where, body, where, "application/json", problem))
    return records


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(path)


class DirectorySource:
    def __init__(
        self,
        inbox: Path,
        state_dir: Path,
        patterns: Sequence[str],
        split: Splitter,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 500,
    ) -> None:
        self.inbox = inbox
        self.processing = state_dir / "processing"
        self.done = state_dir / "done"
        self.rejected = state_dir / "rejected"
        self._patterns = patterns
        self._split = split
        self._poll = poll_seconds
        self._batch = batch_size

    def _claim_new(self) -> None:
        for pattern in self._patterns:
            for path in sorted(self.inbox.glob(pattern)):
                if path.name.startswith("."):
                    continue
                if path.is_symlink():
                    # rename() moves the link itself: its target is never opened.
                    self._reject(path, "a symbolic link, refused: drop the file itself")
                    continue
                if not path.is_file():
                    continue
                target = self.processing / path.name
                if target.exists():  # a file of that name is still being processed
                    continue
                path.rename(target)
                log.info("adapter.file_claimed", file=path.name)

    def _reject(self, path: Path, reason: str, mode: int = KEPT_MODE) -> None:
        """Move a whole file (or link) to rejected/ with `<name>.reason.txt` beside it."""
        path.rename(self.rejected / path.name)
        reason_file = self.rejected / f"{path.name}.reason.txt"
        reason_file.unlink(missing_ok=True)  # a file of the same name rejected before
        write_new_file(reason_file, f"{reason}\n".encode(), mode)
        log.warning("adapter.file_rejected", file=path.name, reason=reason)

    def _prepare(self) -> None:
        for directory in (self.inbox, self.processing, self.done, self.rejected):
            directory.mkdir(parents=True, exist_ok=True)

    def _claimed(self) -> list[Path]:
        self._claim_new()
        return sorted(
            p
            for p in self.processing.iterdir()
            if p.suffix != ".progress" and not p.name.startswith(".")
        )

    def _load(self, path: Path) -> tuple[list[Record], int] | None:
        """The file's records and how many are settled; None if it went to rejected/."""
        try:
            # O_NOFOLLOW: a link that reached processing/ (claimed before links were refused)
            # is not followed either.
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            self._reject(path, "a symbolic link, refused: drop the file itself")
            return None
        with os.fdopen(descriptor, "rb") as stream:
            mode = stat.S_IMODE(os.fstat(stream.fileno()).st_mode)
            data = stream.read()
        try:
            records = [dataclasses.replace(r, mode=mode) for r in self._split(path.name, data)]
        except UnreadableFileError as error:
            self._reject(path, str(error), mode)
            return None
        progress = self._progress_file(path)
        return records, int(progress.read_text()) if progress.exists() else 0

    @staticmethod
    def _progress_file(path: Path) -> Path:
        return path.with_name(path.name + ".progress")

    def _finish(self, path: Path) -> None:
        # Progress first: a crash in between then re-reads the file (duplicates, dropped by the
        # gateway) instead of leaving a stale progress file that would make the next file of
        # the same name skip its first records.
        self._progress_file(path).unlink(missing_ok=True)
        path.rename(self.done / path.name)

    async def run(self, pipeline: Pipeline) -> None:
        await asyncio.to_thread(self._prepare)
        while True:
            claimed = await asyncio.to_thread(self._claimed)
            if claimed:
                try:
                    await self._process(claimed, pipeline)
                except PublishUnavailableError as error:
                    # Files and their progress stay; the next poll offers them again.
                    log.warning("adapter.gateway_unavailable", reason=str(error))
            await asyncio.sleep(self._poll)

    async def _process(self, paths: list[Path], pipeline: Pipeline) -> None:
        """Publish the claimed files' records in batches that may span files (many small files,
        one alert each, still make full batches), writing each file's progress after every
        batch and moving each file to done/ once all its records are settled."""
        pending: list[_File] = []
        for path in paths:
            loaded = await asyncio.to_thread(self._load, path)
            if loaded is not None:
                pending.append(_File(path, *loaded))
                if loaded[1]:
                    log.info("adapter.file_resumed", file=path.name, from_record=loaded[1])
        while pending:
            batch: list[Record] = []
            touched: list[tuple[_File, int]] = []
            for file in pending:
                take = file.records[file.settled : file.settled + self._batch - len(batch)]
                if take:
                    batch += take
                    touched.append((file, file.settled + len(take)))
                if len(batch) >= self._batch:
                    break
            outcomes = await pipeline.publish(batch) if batch else []
            for file, settled in touched:
                file.settled = settled
                if settled < len(file.records):
                    await asyncio.to_thread(
                        _write_atomically, self._progress_file(file.path), str(settled).encode()
                    )
            rejected = sum(not o.ok for o in outcomes)
            log.info("adapter.batch_published", files=len(touched), records=len(batch), rejected=rejected)  # fmt: skip
            for file in [f for f in pending if f.settled >= len(f.records)]:
                await asyncio.to_thread(self._finish, file.path)
                pending.remove(file)
                log.info("adapter.file_done", file=file.path.name, records=len(file.records))


@dataclass
class _File:
    path: Path
    records: list[Record]
    settled: int


class DirectorySink:
    """Hands outbound records to a department system that reads files from a directory."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def _write(self, record: OutboundRecord) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.outbox / record.name, record.body)

    async def __call__(self, record: OutboundRecord) -> None:
        await asyncio.to_thread(self._write, record)
