"""One gateway per data directory: an exclusive lock held while the gateway runs.

Two gateways on one data directory would run two nats-servers on one JetStream store, append to
one audit log and delete each other's files. `flock` on `<data_dir>/dutylink.lock` stops the
second before it writes anything; the kernel drops the lock when its holder exits, however it
exits (kill -9 included), so a crash never leaves the directory locked. The file keeps the
holder's pid, for the message the second one prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

LOCK_FILE = "dutylink.lock"


class DataDirInUseError(RuntimeError):
    """Another process holds the data directory's lock."""


class DataDirLock:
    """`with DataDirLock(data_dir):` (or `acquire`/`release`) holds the data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.data_dir / LOCK_FILE

    def acquire(self) -> None:
        """Take the lock, or raise DataDirInUseError naming the directory and the holder's pid."""
        if self._fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Not inherited by children (os.open's default): a nats-server left behind by a
        # crashed gateway must not keep its directory locked under the dead gateway's pid.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"data directory {self.data_dir.resolve()} is in use by another gateway "
                f"(pid {holder}): stop it, or give this one another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go (the file stays: removing it would race with the next holder's open)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
