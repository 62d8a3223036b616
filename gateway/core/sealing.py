"""Personal data sealed at rest. Pure.

The fields the schema marks `SENSITIVITY_PERSONAL` or `SENSITIVITY_LOCATION_PRECISE` (and the
verbatim copies that may hold them, e.g. a resource message's RM XML) never reach the event
store in clear. `seal` splits an admitted event in two:
- the stored event: the event with those fields cleared, as every reader of the stream sees it
  (the duty board, the tracker, the store check, a raw read of the store's files);
- the sealed part: an Event holding only those fields' values, encrypted with the deployment's
  current sealing key (AES-256-GCM, or SM4-GCM in the national profile) and kept in the
  stored message's `Dutylink-Sealed` header, bound to the stored event's bytes.

Only the gateway holds the keys (a key file or a key service, gateway.store.sealing_keys):
`open_sealed` puts the values back when a delivery is planned, then the policy's redaction
decides what the recipient gets. A key ring keeps every key that may still have sealed a stored
event, and names the one that seals new ones (rotation: add a key, make it current, retire the
old one when the events it sealed are gone).

The content digest header (a retry or a conflict under a used id) of an event with a sealed
part is an HMAC under the ring's digest key: a plain hash of the whole content would let a
reader of the store test guesses of a phone number against it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from dutylink.policies.redaction import (
    graft,
    minimal_paths,
    project,
    redact,
    sensitive_fields,
    verbatim_copies,
)
from dutylink.v1 import event_pb2
from gateway.core import envelope
from gateway.core.crypto import GCM_NONCE_BYTES, PROFILES, CryptoError, CryptoProfile

SEALED_HEADER = "Dutylink-Sealed"
KEYRING_FORMAT = "dutylink-sealing-keys/1"
DIGEST_KEY_BYTES = 32
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_CONTEXT = b"dutylink/sealed/v1"


def _sealed_paths() -> tuple[str, ...]:
    marked = [path for path, _ in sensitive_fields()]
    return minimal_paths([*marked, *(copy for path in marked for copy in verbatim_copies(path))])


# Every path sealed: the marked fields and the verbatim copies that may hold them.
SEALED_PATHS: tuple[str, ...] = _sealed_paths()


class SealingError(ValueError):
    """A key ring that cannot be used, or a sealed part that cannot be opened."""


def key_id(profile: CryptoProfile, key: bytes) -> str:
    """A key's id: 8 hex digits of the profile's hash of it (two replicas that each made a key
    of their own show different ids, so a missing key is named, never guessed)."""
    return profile.hash.digest(b"dutylink/sealing-key-id\x00" + key)[:4].hex()


@dataclass(frozen=True)
class Keyring:
    """The deployment's sealing keys: every key that may have sealed a stored event (by id),
    the one that seals new events, and the digest key. `created` says when each key was made
    (for the operator; nothing depends on it)."""

    profile: CryptoProfile
    keys: Mapping[str, bytes]
    current: str
    digest_key: bytes
    created: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise SealingError(f"the current key {self.current!r} is not in the ring")
        for identifier, key in self.keys.items():
            if len(key) != self.profile.aead.key_bytes:
                raise SealingError(
                    f"key {identifier}: {self.profile.aead.name} takes "
                    f"{self.profile.aead.key_bytes}-byte keys, got {len(key)}"
                )
            if key_id(self.profile, key) != identifier:
                raise SealingError(f"key {identifier}: the id is not the key's")
        if len(self.digest_key) != DIGEST_KEY_BYTES:
            raise SealingError(f"the digest key is {DIGEST_KEY_BYTES} bytes")

    def describe(self) -> str:
        """What the ring does, by key id only (audited; never key material)."""
        others = sorted(set(self.keys) - {self.current})
        return f"{self.profile.aead.name}: seals with {self.current}" + (
            f"; opens also {', '.join(others)}" if others else ""
        )

    def rotated(self, new_key: bytes, now: str) -> Keyring:
        """This ring with `new_key` added and made current (the old keys still open)."""
        identifier = key_id(self.profile, new_key)
        return Keyring(
            self.profile,
            {**self.keys, identifier: new_key},
            identifier,
            self.digest_key,
            {**self.created, identifier: now},
        )

    def retired(self, identifier: str) -> Keyring:
        """This ring without key `identifier` (never the current one)."""
        if identifier == self.current:
            raise SealingError(f"key {identifier} seals new events: rotate before retiring it")
        if identifier not in self.keys:
            raise SealingError(f"no key {identifier} in the ring ({', '.join(sorted(self.keys))})")
        keys = {k: v for k, v in self.keys.items() if k != identifier}
        created = {k: v for k, v in self.created.items() if k != identifier}
        return Keyring(self.profile, keys, self.current, self.digest_key, created)


def new_keyring(profile: CryptoProfile, key: bytes, digest_key: bytes, now: str) -> Keyring:
    identifier = key_id(profile, key)
    return Keyring(profile, {identifier: key}, identifier, digest_key, {identifier: now})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_keyring(keyring: Keyring) -> str:
    """The ring as its file holds it (JSON; keys in base64)."""
    return json.dumps(
        {
            "format": KEYRING_FORMAT,
            "profile": keyring.profile.name,
            "current": keyring.current,
            "digest_key": _b64(keyring.digest_key),
            "keys": [
                {"id": k, "created": keyring.created.get(k, ""), "key": _b64(v)}
                for k, v in sorted(keyring.keys.items())
            ],
        },
        indent=2,
    )


def parse_keyring(text: str, where: str, profile: CryptoProfile) -> Keyring:
    """The ring in `text` (from `where`: a file, or a key service's answer), which must be
    of the deployment's crypto profile. SealingError names what is wrong, never a key."""
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
            raise SealingError(f'expected a JSON object with "format": "{KEYRING_FORMAT}"')
        named = PROFILES.get(str(document.get("profile")))
        if named is None:
            raise SealingError(f"profile: one of {', '.join(PROFILES)}")
        if named is not profile:
            raise SealingError(
                f"the keys are for the {named.name} profile; this deployment is {profile.name} "
                "(audit.crypto_profile)"
            )
        keys: dict[str, bytes] = {}
        created: dict[str, str] = {}
        for entry in document.get("keys") or []:
            identifier = str(entry["id"])
            if not _KEY_ID.fullmatch(identifier) or identifier in keys:
                raise SealingError(f"key id {identifier!r}: 8 hex digits, each id once")
            keys[identifier] = base64.b64decode(entry["key"], validate=True)
            created[identifier] = str(entry.get("created", ""))
        return Keyring(
            profile,
            keys,
            str(document.get("current")),
            base64.b64decode(document.get("digest_key", ""), validate=True),
            created,
        )
    except SealingError as error:
        raise SealingError(f"{where}: {error}") from None
    except (ValueError, KeyError, TypeError, binascii.Error, CryptoError) as error:
        # The message of a decoding error never quotes a key: only its kind and position.
        raise SealingError(f"{where}: not a sealing key ring ({type(error).__name__})") from None


@dataclass(frozen=True)
class Sealed:
    """An event's stored form: its bytes (personal fields cleared), the sealed part (None when
    it held no personal field) and its content digest."""

    data: bytes
    sealed: str | None
    content_digest: bytes


def _associated(key: str, data: bytes) -> bytes:
    # Binds the sealed part to its key and to the very bytes stored beside it.
    return b"\x00".join((_CONTEXT, key.encode(), data))


@dataclass(frozen=True)
class Sealer:
    """Seals with `keyring`; `nonce` gives fresh random bytes (the edge's secrets.token_bytes:
    GCM nonces must never repeat under one key)."""

    keyring: Keyring
    nonce: Callable[[int], bytes]

    def seal(self, event: event_pb2.Event) -> Sealed:
        """The stored form of the stamped `event`."""
        public, withheld = redact(event, SEALED_PATHS)
        if not withheld:
            digest = envelope.content_digest(event, self.keyring.profile.hash)
            return Sealed(event.SerializeToString(), None, digest)
        ring = self.keyring
        data = public.SerializeToString()
        plaintext = project(event, withheld).SerializeToString(deterministic=True)
        nonce = self.nonce(GCM_NONCE_BYTES)
        ciphertext = ring.profile.aead.encrypt(
            ring.keys[ring.current], nonce, plaintext, _associated(ring.current, data)
        )
        header = f"{ring.current}:{_b64(nonce + ciphertext)}"
        digest = ring.profile.hash.mac(ring.digest_key, envelope.content_bytes(event))
        return Sealed(data, header, digest)


def open_sealed(
    data: bytes,
    sealed: str | None,
    keyring: Keyring | None,
    *,
    parsed: event_pb2.Event | None = None,
) -> event_pb2.Event:
    """The whole event from its stored bytes and sealed part (DecodeError if the bytes are no
    event; SealingError if the part cannot be opened: no such key here, or it was changed).
    `parsed`: the event already parsed from `data`, completed in place and returned."""
    event = event_pb2.Event.FromString(data) if parsed is None else parsed
    if not sealed:
        return event
    identifier, _, body = sealed.partition(":")
    if keyring is None:
        raise SealingError(f"sealed with key {identifier}, but this gateway holds no sealing keys")
    key = keyring.keys.get(identifier)
    if key is None:
        raise SealingError(
            f"sealed with key {identifier}, which this gateway does not hold (it holds "
            f"{', '.join(sorted(keyring.keys))}): give every replica the same key ring"
        )
    try:
        raw = base64.b64decode(body, validate=True)
        plaintext = keyring.profile.aead.decrypt(
            key, raw[:GCM_NONCE_BYTES], raw[GCM_NONCE_BYTES:], _associated(identifier, data)
        )
        projection = event_pb2.Event.FromString(plaintext)
    except (binascii.Error, ValueError, CryptoError, DecodeError) as error:
        raise SealingError(
            f"the sealed part does not open with key {identifier}: {error}"
        ) from None
    graft(event, projection, SEALED_PATHS)
    return event
