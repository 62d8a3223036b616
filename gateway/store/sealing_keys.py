"""Where the sealing key ring comes from (gateway.core.sealing): a 0600 file outside the event
store, or a key service's command. Read at start, again every `reload_seconds` (a rotation takes
effect without a restart), created with a first key when the file does not exist yet."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from gateway.access.pki import write_atomically
from gateway.core.crypto import CryptoProfile
from gateway.core.sealing import (
    DIGEST_KEY_BYTES,
    Keyring,
    SealingError,
    new_keyring,
    parse_keyring,
    render_keyring,
)
from gateway.core.settings import PersonalDataSettings

log = structlog.get_logger("dutylink.sealing")
# A key service answers within this long, in at most this many bytes (a ring of many keys is a
# few kilobytes).
COMMAND_TIMEOUT_SECONDS = 10.0
MAX_RING_BYTES = 256 * 1024


def default_key_file(data_dir: str) -> Path:
    return Path(data_dir) / "keys" / "sealing.keys"


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def fresh_keyring(profile: CryptoProfile) -> Keyring:
    return new_keyring(
        profile,
        secrets.token_bytes(profile.aead.key_bytes),
        secrets.token_bytes(DIGEST_KEY_BYTES),
        _now(),
    )


def rotated(keyring: Keyring) -> Keyring:
    """`keyring` with a fresh key that seals from now on."""
    return keyring.rotated(secrets.token_bytes(keyring.profile.aead.key_bytes), _now())


def read_key_file(path: Path, profile: CryptoProfile) -> Keyring:
    """The ring in `path`; SealingError if others may read it or it is no ring of `profile`."""
    try:
        status = path.stat()
        mode = stat.S_IMODE(status.st_mode)
        if status.st_size > MAX_RING_BYTES:
            raise SealingError(f"{path}: larger than {MAX_RING_BYTES} bytes: not a key ring")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SealingError(f"{path}: cannot read: {error}") from None
    # Group read stays allowed: it is how a Kubernetes secret reaches a non-root pod
    # (defaultMode 0440 with the pod's fsGroup).
    if mode & 0o027:
        raise SealingError(
            f"{path}: mode {mode:04o} lets other users read it or its group change it: "
            "chmod 600 it (or 640 for a group that must read it)"
        )
    return parse_keyring(text, str(path), profile)


def create_key_file(path: Path, profile: CryptoProfile) -> None:
    """A fresh ring at `path` unless one is there: written whole to a 0600 temporary file, then
    linked into place, so that a replica (or worker) starting at the same moment reads either
    nothing or the whole ring made first, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    keyring = fresh_keyring(profile)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(render_keyring(keyring) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileExistsError):  # another start linked its own first
            os.link(temporary, path)
            log.info("sealing.keys_created", where=str(path), keyring=keyring.describe())
    finally:
        os.unlink(temporary)


def write_key_file(path: Path, keyring: Keyring) -> None:
    """Replace (or create) `path` with `keyring`: 0600, atomically, in a 0700 directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, (render_keyring(keyring) + "\n").encode(), 0o600)


async def _run_key_command(argv: tuple[str, ...], profile: CryptoProfile) -> Keyring:
    where = f"personal_data.key_command {argv[0]!r}"
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:
        raise SealingError(f"{where}: cannot run: {error.strerror}") from None
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
            output, errors = await asyncio.gather(
                _read_at_most(process.stdout, MAX_RING_BYTES + 1),
                _read_at_most(process.stderr, 4096),
            )
            if len(output) > MAX_RING_BYTES:
                raise SealingError(f"{where}: answered more than {MAX_RING_BYTES} bytes")
            await process.wait()
    except TimeoutError:
        raise SealingError(f"{where}: no answer within {COMMAND_TIMEOUT_SECONDS:g} s") from None
    finally:
        if process.returncode is None:  # timed out, or answered too much
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0:
        said = errors.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise SealingError(f"{where}: exit status {process.returncode}: {said[0][:200]}")
    return parse_keyring(output.decode("utf-8", "replace"), where, profile)


async def _read_at_most(stream: asyncio.StreamReader | None, limit: int) -> bytes:
    """What `stream` gives until its end or `limit` bytes, whichever comes first: a command
    that writes without end costs no more memory than that."""
    if stream is None:
        return b""
    data = bytearray()
    while len(data) < limit and (chunk := await stream.read(limit - len(data))):
        data += chunk
    return bytes(data)


class KeyringSource:
    """The deployment's key ring, from `settings` (the key service, else the file, created on
    first use under `data_dir`)."""

    def __init__(self, settings: PersonalDataSettings, data_dir: str, profile: CryptoProfile):
        self._settings = settings
        self._profile = profile
        self.path = Path(settings.key_file) if settings.key_file else default_key_file(data_dir)

    @property
    def where(self) -> str:
        command = self._settings.key_command
        return f"key service {command[0]}" if command else str(self.path)

    async def load(self, *, create: bool = False) -> Keyring:
        if self._settings.key_command:
            return await _run_key_command(self._settings.key_command, self._profile)
        if create and not self.path.exists():
            create_key_file(self.path, self._profile)
        return read_key_file(self.path, self._profile)

    async def watch(
        self,
        current: Keyring,
        on_change: Callable[[Keyring | None, Keyring | SealingError], Awaitable[None]],
    ) -> None:
        """Read the ring again every `reload_seconds` until cancelled; report a changed ring
        (old, new) or a ring that no longer loads (old, the error; the old ring stays in
        force), once per change."""
        last_error = ""
        while True:
            await asyncio.sleep(self._settings.reload_seconds)
            try:
                loaded = await self.load()
            except SealingError as error:
                if str(error) != last_error:
                    last_error = str(error)
                    await on_change(current, error)
                continue
            last_error = ""
            if loaded != current:
                previous, current = current, loaded
                await on_change(previous, loaded)
