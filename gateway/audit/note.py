"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and Ed25519 signed notes (c2sp.org/signed-note).

A log signs its checkpoint text as a note; auditors and agencies open the note with the keys
they trust, then parse the checkpoint. Both parsers are strict so that a value has exactly one
text: signatures are checked over the received bytes, never over a re-serialisation. Key
strings follow golang.org/x/mod/sumdb/note, so Go and Python tools can share keys.
Pure: text and bytes in, values out; reading keys and fetching notes happen elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_NOTE_SIZE = 1 << 20  # bytes; the spec asks verifiers to cap a note's size or signatures
MAX_SIGNATURES = 100  # signature lines; the spec requires accepting at least 16
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in every C2SP log format

_ED25519 = b"\x01"  # signature type byte in key ids and key strings
_DASH = "\u2014 "  # em dash and space start every signature line
_PRIVATE = "PRIVATE+KEY+"
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # signed-note: below U+0020, except newline
_DECIMAL = re.compile("0|[1-9][0-9]{0,19}")
_KEY_ID = re.compile("[0-9a-f]{8}")


class NoteError(ValueError):
    """A checkpoint, note or key string is malformed, or a note's signatures do not verify."""


def _check_text(what: str, text: str) -> None:
    """Reject what c2sp.org/signed-note forbids anywhere in a note."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise NoteError(f"{what} is not valid UTF-8 (lone surrogate at {error.start})") from None
    if control := _CONTROL.search(text):
        raise NoteError(
            f"{what} contains control character U+{ord(control.group()):04X} at {control.start()}"
        )


def _check_name(name: str) -> None:
    if not name or "+" in name or any(char.isspace() for char in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    _check_text(f"key name {name!r}", name)


def _b64decode(what: str, text: str) -> bytes:
    """Standard padded base64, canonical only, so each value has a single spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise NoteError(f"{what} {text[:100]!r} is not standard padded base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(
            f"{what} {text[:100]!r} is not canonical base64 (stray bits after the data)"
        )
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head body: origin line, tree size, root hash, then extension lines.

    Origins SHOULD be schema-less URLs without spaces or '+' (often the signer's key name);
    that is a SHOULD in the spec, so only emptiness and control characters are refused here.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        named = [("origin", self.origin), *(("extension line", e) for e in self.extensions)]
        for what, line in named:
            if not line:
                raise NoteError(f"checkpoint {what} is empty")
            if "\n" in line:
                raise NoteError(f"checkpoint {what} {line[:100]!r} contains a newline")
            _check_text(f"checkpoint {what} {line[:100]!r}", line)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"checkpoint tree size {self.size} is outside 0..2**64-1")
        if len(self.root_hash) != 32:
            raise NoteError(f"checkpoint root hash is {len(self.root_hash)} bytes, expected 32")

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The inverse of `to_text`: anything `to_text` would not produce is rejected."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint does not end with a newline")
        _check_text("checkpoint", text)
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(
                f"checkpoint has {len(lines)} lines, expected origin, size and root hash"
            )
        origin, size, root_hash, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise NoteError(
                f"checkpoint tree size {size[:30]!r} is not decimal without leading zeros"
            )
        return cls(
            origin, int(size), _b64decode("checkpoint root hash", root_hash), tuple(extensions)
        )


def _key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key).digest()[:4]


def _parse_key(what: str, key: str) -> tuple[str, bytes, bytes]:
    """Split `name+<8 hex key id>+base64(0x01 || key32)`; the base64 part may contain '+'."""
    parts = key.split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"{what} must look like name+keyid+base64")
    name, key_id, encoded = parts
    _check_name(name)
    if not _KEY_ID.fullmatch(key_id):
        raise NoteError(f"{what} key id {key_id!r} is not 8 lowercase hex digits")
    raw = _b64decode(f"{what} key", encoded)
    if len(raw) != 33 or raw[:1] != _ED25519:
        raise NoteError(f"{what} is not an Ed25519 key (type 0x01 then 32 bytes)")
    return name, bytes.fromhex(key_id), raw[1:]


def _check_key_id(name: str, stated: bytes, computed: bytes) -> None:
    if stated != computed:
        raise NoteError(
            f"key {name}: key id {stated.hex()} does not match computed {computed.hex()}"
        )


class Verifier:
    """A trusted Ed25519 public key and its name; (name, key id) picks it out of a note."""

    __slots__ = ("_key", "_key_id", "_name")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        self._name, self._key = name, public_key
        self._key_id = _key_id(name, public_key.public_bytes_raw())

    @classmethod
    def from_key_string(cls, key: str) -> Verifier:
        name, key_id, public = _parse_key("verifier key", key)
        try:
            public_key = Ed25519PublicKey.from_public_bytes(public)
        except ValueError:
            raise NoteError(f"verifier key {name} is not a valid Ed25519 public key") from None
        verifier = cls(name, public_key)
        _check_key_id(name, key_id, verifier.key_id)
        return verifier

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key id (a big-endian uint32 in the spec)."""
        return self._key_id

    def key_string(self) -> str:
        public = _b64encode(_ED25519 + self._key.public_bytes_raw())
        return f"{self._name}+{self._key_id.hex()}+{public}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"Verifier({self.key_string()!r})"


class Signer:
    """An Ed25519 private key and its name. Ed25519 is deterministic: same text, same line."""

    __slots__ = ("_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._verifier = Verifier(name, private_key.public_key())

    @classmethod
    def from_key_string(cls, key: str) -> Signer:
        if not key.startswith(_PRIVATE):
            raise NoteError(f"signer key must start with {_PRIVATE!r}")
        name, key_id, seed = _parse_key("signer key", key.removeprefix(_PRIVATE))
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        _check_key_id(name, key_id, signer.key_id)
        return signer

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    def key_string(self) -> str:
        seed = _b64encode(_ED25519 + self._key.private_bytes_raw())
        return f"{_PRIVATE}{self.name}+{self.key_id.hex()}+{seed}"

    def verifier(self) -> Verifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:  # never show the seed
        return f"Signer({self.name!r}, key id {self.key_id.hex()})"


def sign_note(text: str, signers: Iterable[Signer]) -> str:
    """`text` (ending in a newline), a blank line, and one signature line per signer."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_text("note text", text)
    message = text.encode()
    lines = [f"{_DASH}{s.name} {_b64encode(s.key_id + s.sign(message))}\n" for s in signers]
    if not lines:
        raise NoteError("a note needs at least one signer")
    return text + "\n" + "".join(lines)


def _decode_note(note: str | bytes, max_size: int) -> str:
    if len(note) > max_size:  # cheap first: a str is never shorter than its UTF-8
        raise NoteError(f"note is larger than the limit of {max_size} bytes")
    if isinstance(note, str):
        try:
            note = note.encode()
        except UnicodeEncodeError as error:
            raise NoteError(f"note is not valid UTF-8 (lone surrogate at {error.start})") from None
        if len(note) > max_size:
            raise NoteError(f"note is larger than the limit of {max_size} bytes")
    try:
        text = note.decode()
    except UnicodeDecodeError as error:
        raise NoteError(f"note is not valid UTF-8 (byte {error.start})") from None
    _check_text("note", text)
    return text


def _parse_signature(number: int, line: str) -> tuple[str, bytes, bytes]:
    if not line.startswith(_DASH):
        raise NoteError(
            f"signature line {number} {line[:40]!r} does not start with an em dash (U+2014) and a space"
        )
    name, space, encoded = line[len(_DASH) :].partition(" ")
    if not space:
        raise NoteError(f"signature line {number} has no space between key name and signature")
    _check_name(name)
    raw = _b64decode(f"signature line {number}", encoded)
    if len(raw) < 5:
        raise NoteError(f"signature line {number} has {len(raw)} bytes, expected a key id and more")
    return name, raw[:4], raw[4:]


def _index(verifiers: Iterable[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        key = (verifier.name, verifier.key_id)
        if key in known:
            raise NoteError(f"two verifiers share name and key id {verifier.name}+{key[1].hex()}")
        known[key] = verifier
    return known


def unverified_text(note: str) -> str:
    """A note's text without checking its signatures: for display and routing only; trust
    nothing in it before `open_note` verified it."""
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no blank line between its text and its signatures")
    return note[: cut + 1]


def signature_keys(note: str) -> list[tuple[str, bytes]]:
    """(key name, key id) of each signature line, without checking any signature: to tell
    which key signed a note before knowing that key (a log's key at start-up)."""
    text = _decode_note(note, MAX_NOTE_SIZE)
    cut = text.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no blank line between its text and its signatures")
    lines = text[cut + 2 :].removesuffix("\n").split("\n")
    return [_parse_signature(number, line)[:2] for number, line in enumerate(lines, start=1)]


def open_note(
    note: str | bytes,
    verifiers: Iterable[Verifier],
    *,
    max_size: int = MAX_NOTE_SIZE,
    max_signatures: int = MAX_SIGNATURES,
) -> tuple[str, list[str]]:
    """Verify a signed note; return its text and the names of the trusted keys that signed it.

    Signatures by keys not in `verifiers` (by name and key id) are ignored; one bad signature
    by a trusted key rejects the whole note, and at least one trusted key must have signed."""
    text = _decode_note(note, max_size)
    cut = text.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no blank line between its text and its signatures")
    text, block = text[: cut + 1], text[cut + 2 :]
    if not block:
        raise NoteError("note has no signature lines after its last blank line")
    if not block.endswith("\n"):
        raise NoteError("note does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > max_signatures:
        raise NoteError(
            f"note has {len(lines)} signature lines, more than the limit of {max_signatures}"
        )
    known, message = _index(verifiers), text.encode()
    signed: list[str] = []
    for number, line in enumerate(lines, start=1):
        name, key_id, signature = _parse_signature(number, line)
        verifier = known.get((name, key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, signature):
            raise NoteError(f"signature by trusted key {name}+{key_id.hex()} does not verify")
        if name not in signed:
            signed.append(name)
    if not signed:
        trusted = ", ".join(f"{name}+{key_id.hex()}" for name, key_id in known) or "none"
        raise NoteError(f"note has no signature by a trusted key (trusted: {trusted})")
    return text, signed
