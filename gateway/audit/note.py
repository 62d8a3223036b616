"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and signed notes (c2sp.org/signed-note), signed
with Ed25519 (type 0x01) or, in the national crypto profile, SM2 over SM3 with the default signer
ID (GB/T 32918.2, GB/T 35276): type 0xff then "dutylink.sm2-sm3", as the spec reserves 0xff for
types it has not assigned; an SM2 key's id hashes with SM3, so a national deployment uses no
other hash. A log signs its checkpoint text as a note; auditors and agencies open the note with
the keys they trust, then parse the checkpoint. Both parsers are strict so that a value has
exactly one text: signatures are checked over the received bytes, never a re-serialisation. Key
strings follow golang.org/x/mod/sumdb/note, so Go and Python tools share Ed25519 keys.
Pure: text and bytes in, values out; reading keys and fetching notes happen elsewhere.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.crypto import INTERNATIONAL, NATIONAL, CryptoError, CryptoProfile

MAX_NOTE_SIZE = 1 << 20  # bytes; the spec asks verifiers to cap a note's size or signatures
MAX_SIGNATURES = 100  # signature lines; the spec requires accepting at least 16
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in every C2SP log format

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


@dataclass(frozen=True)
class KeyType:
    """A signature type: its identifier (in key ids and strings), profile and key sizes."""

    name: str
    identifier: bytes
    profile: CryptoProfile
    public_size: int
    private_size: int

    def key_id(self, name: str, public_key: bytes) -> bytes:
        return self.profile.hash.digest(name.encode() + b"\n" + self.identifier + public_key)[:4]


ED25519 = KeyType("Ed25519", b"\x01", INTERNATIONAL, 32, 32)
SM2 = KeyType("SM2", b"\xff" + b"dutylink.sm2-sm3", NATIONAL, 64, 96)
KEY_TYPES = (ED25519, SM2)


def key_type_of(profile: CryptoProfile) -> KeyType:
    return next(kind for kind in KEY_TYPES if kind.profile == profile)  # its checkpoints' type


def _parse_key(what: str, key: str, private: bool = False) -> tuple[str, bytes, KeyType, bytes]:
    """Split `name+<8 hex key id>+base64(type || key)`; the base64 part may contain '+'."""
    parts = key.split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"{what} must look like name+keyid+base64")
    name, key_id, encoded = parts
    _check_name(name)
    if not _KEY_ID.fullmatch(key_id):
        raise NoteError(f"{what} key id {key_id!r} is not 8 lowercase hex digits")
    raw = _b64decode(f"{what} key", encoded)
    for kind in KEY_TYPES:
        size = kind.private_size if private else kind.public_size
        if raw.startswith(kind.identifier) and len(raw) == len(kind.identifier) + size:
            return name, bytes.fromhex(key_id), kind, raw[len(kind.identifier) :]
    raise NoteError(
        f"{what} is neither an Ed25519 key (type 0x01 then 32 bytes) nor an SM2 key "
        f"(type 0xff 'dutylink.sm2-sm3' then {'96' if private else '64'} bytes)"
    )


def _check_key_id(name: str, stated: bytes, computed: bytes) -> None:
    if stated != computed:
        raise NoteError(
            f"key {name}: key id {stated.hex()} does not match computed {computed.hex()}"
        )


class Verifier:
    """A trusted public key, its type and its name; (name, key id) picks it out of a note."""

    __slots__ = ("_key", "_key_id", "_name", "_type")

    def __init__(self, name: str, public_key: bytes, key_type: KeyType = ED25519) -> None:
        _check_name(name)
        if len(public_key) != key_type.public_size:
            raise NoteError(
                f"verifier key {name}: an {key_type.name} public key is "
                f"{key_type.public_size} bytes, got {len(public_key)}"
            )
        self._name, self._key, self._type = name, bytes(public_key), key_type
        self._key_id = key_type.key_id(name, self._key)

    @classmethod
    def from_key_string(cls, key: str) -> Verifier:
        name, key_id, key_type, public = _parse_key("verifier key", key)
        verifier = cls(name, public, key_type)
        _check_key_id(name, key_id, verifier.key_id)
        return verifier

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key id (a big-endian uint32 in the spec)."""
        return self._key_id

    @property
    def key_type(self) -> KeyType:
        return self._type

    @property
    def profile(self) -> CryptoProfile:
        """The crypto profile of what this key signs: its trees' hash, its commitments'."""
        return self._type.profile

    @property
    def public_key(self) -> bytes:
        return self._key

    def key_string(self) -> str:
        return f"{self._name}+{self._key_id.hex()}+{_b64encode(self._type.identifier + self._key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            return self._type.profile.signature.verify(self._key, message, signature)
        except CryptoError:
            return False

    def __repr__(self) -> str:
        return f"Verifier({self.key_string()!r})"


class Signer:
    """A private key, its type and its name. Ed25519 is deterministic (same text, same line);
    SM2 is not (each signature differs, each verifies)."""

    __slots__ = ("_key", "_verifier")

    def __init__(self, name: str, private_key: bytes, key_type: KeyType = ED25519) -> None:
        if len(private_key) != key_type.private_size:
            raise NoteError(
                f"signer key {name}: an {key_type.name} private key is "
                f"{key_type.private_size} bytes, got {len(private_key)}"
            )
        self._key = bytes(private_key)
        public = key_type.profile.signature.public_key(self._key)
        self._verifier = Verifier(name, public, key_type)

    @classmethod
    def generate(cls, name: str, key_type: KeyType = ED25519) -> Signer:
        private, _ = key_type.profile.signature.generate()
        return cls(name, private, key_type)

    @classmethod
    def from_key_string(cls, key: str) -> Signer:
        if not key.startswith(_PRIVATE):
            raise NoteError(f"signer key must start with {_PRIVATE!r}")
        name, key_id, key_type, private = _parse_key("signer key", key.removeprefix(_PRIVATE), private=True)  # fmt: skip
        signer = cls(name, private, key_type)
        _check_key_id(name, key_id, signer.key_id)
        return signer

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    @property
    def profile(self) -> CryptoProfile:
        return self._verifier.profile

    def key_string(self) -> str:
        private = _b64encode(self._verifier.key_type.identifier + self._key)
        return f"{_PRIVATE}{self.name}+{self.key_id.hex()}+{private}"

    def verifier(self) -> Verifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return self._verifier.profile.signature.sign(self._key, message)

    def __repr__(self) -> str:  # never show the private key
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
