"""The audit log's files: checkpoint and commitment keys, the kept checkpoint, evidence bundles.

The edge around the pure audit core (gateway.audit): keys are read or created here and passed
in as values; bundles are rendered and checked in gateway.audit.bundle and only written and read
here.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.access.pki import write_atomically
from gateway.audit.bundle import Bundle, BundleError, render
from gateway.audit.commitments import KEY_BYTES
from gateway.audit.log import DeclaredRotation
from gateway.audit.note import ED25519, KeyType, NoteError, Signer, Verifier
from gateway.core.ports import StoreDamagedError
from gateway.core.settings import ConfigError

# --- keys -------------------------------------------------------------------------------------


def _create_secret_file(key_file: Path, text: str) -> None:
    """Write `text` to a new 0600 file (never over an existing one), its directory 0700."""
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text + "\n")


def load_or_create_signer(key_file: Path, name: str, key_type: KeyType = ED25519) -> Signer:
    """The gateway's checkpoint key of `key_type` (its crypto profile's), created (0600) on
    first start; a key file of another type is refused. The verifier key string is written
    beside it (`.pub`) for auditors."""
    if key_file.exists():
        signer = Signer.from_key_string(key_file.read_text(encoding="utf-8").strip())
        if signer.verifier().key_type != key_type:
            raise ConfigError(
                f"{key_file} holds an {signer.verifier().key_type.name} key, but the crypto "
                f"profile {key_type.profile.name!r} signs with {key_type.name}: a log's profile "
                "is fixed when it starts (audit.crypto_profile)"
            )
        return signer
    signer = Signer.generate(name, key_type)
    _create_secret_file(key_file, signer.key_string())
    key_file.with_suffix(".pub").write_text(signer.verifier().key_string() + "\n", encoding="utf-8")
    return signer


def load_or_create_key(key_file: Path) -> bytes:
    """A 32-byte secret (hex in a 0600 file), created on first use: the deployment's commitment
    key (replicas share it, so that any of them can reveal salts for any entry), or the embedded
    JetStream store's key. ConfigError if it holds no such key."""
    if key_file.exists():
        try:
            key = bytes.fromhex(key_file.read_text(encoding="utf-8").strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{key_file}: expected a {KEY_BYTES}-byte key in hex")
        return key
    key = secrets.token_bytes(KEY_BYTES)
    _create_secret_file(key_file, key.hex())
    return key


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


# --- the kept checkpoint (see gateway.audit.kept) ---------------------------------------------


class KeptCheckpointError(StoreDamagedError):
    """The audit log read from the stream does not reach the checkpoint kept in the data
    directory (or that file cannot be trusted): one line naming the gateway id and the file."""


def kept_checkpoint_file(audit_dir: Path, gateway_id: str) -> Path:
    return audit_dir / f"{gateway_id}.checkpoint"


def keep_checkpoint(path: Path, note: str) -> None:
    """Replace the kept note: a 0600 temporary file, fsynced, renamed into place (a crash leaves
    the old note or the new one, both true prefixes of the log)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, note.encode(), 0o600)


def read_kept_checkpoint(path: Path) -> str | None:
    """The kept note, or None if there is none (first start, or a new data directory)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise KeptCheckpointError(
            f"cannot read the kept audit checkpoint {path}: {error.strerror}"
        ) from None
    return data.decode("utf-8", "surrogateescape")


# --- evidence bundles (see gateway.audit.bundle) ----------------------------------------------


def write_bundle(directory: Path, bundle: Bundle) -> None:
    """Write `bundle` as files under `directory` (created; must be empty or absent)."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise BundleError(f"{directory}: not empty; export into a new directory")
    for name, data in render(bundle).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_files(directory: Path) -> dict[str, bytes | None]:
    """Every file under `directory` by relative POSIX path: its bytes, or None for what is not
    a regular file (a symbolic link, say: a bundle holds none). Raises `BundleError`."""
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a directory")
    found: dict[str, bytes | None] = {}
    try:
        for top, directories, names in os.walk(directory):
            for name in names + [d for d in directories if os.path.islink(os.path.join(top, d))]:
                path = Path(top, name)
                relative = path.relative_to(directory).as_posix()
                found[relative] = (
                    path.read_bytes() if path.is_file() and not path.is_symlink() else None
                )
    except OSError as error:
        raise BundleError(f"{directory}: cannot read: {error}") from None
    return found
