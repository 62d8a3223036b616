"""The webhook signature schemes, the same in both directions.

Standard Webhooks (the default; verifiers exist for most languages):

    webhook-id: <the message's id: an event id out, the sender's id in>
    webhook-timestamp: 1786773600
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")> [v1,<...>]

with a signature per secret in force, so secrets are rotated without a gap: the sender signs
with the old and the new secret, the receiver accepts either. A secret is "whsec_<base64 of
the key>" as the standard has it, or (the scheme before it) the raw bytes of a shared secret.

DutyLink's own scheme before it, still accepted from senders that have not moved (inbound
`accept_legacy_signatures`) and still sent where a receiver needs it (outbound `signature`):

    X-DutyLink-Timestamp: 1786773600
    X-DutyLink-Signature: v1=<hex of HMAC-SHA256(secret, "1786773600" + "." + raw body)>

The timestamp bounds how long a captured request stays usable (± the tolerance); within that
window `ReplayGuard` remembers every signature it admitted, so the same request is taken once.
Pure functions over bytes and a clock value: the HTTP server and client live in adapter.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks import Webhook

TIMESTAMP_HEADER = "X-DutyLink-Timestamp"
SIGNATURE_HEADER = "X-DutyLink-Signature"
_SCHEME = "v1="
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """The request is not signed with the shared secret within the time window; the message
    says what is wrong (never what the signature should have been)."""


class ReplayGuardFullError(Exception):
    """More signed requests within one time window than the guard may remember: refusing
    them (for now) is the only way to keep refusing replays."""


STANDARD_ID = "webhook-id"
STANDARD_TIMESTAMP = "webhook-timestamp"
STANDARD_SIGNATURE = "webhook-signature"
_STANDARD_SECRET = "whsec_"
# Limits on what a sender may put in the headers (each costs an HMAC to check).
_MAX_ID_CHARS = 256
_MAX_SIGNATURES = 8


def parse_secret(line: str) -> bytes:
    """One secret of a secret file: "whsec_<base64>" (Standard Webhooks), else the line's raw
    bytes (the shared secrets of the scheme before it). ValueError for bad base64."""
    if not line.startswith(_STANDARD_SECRET):
        return line.encode("utf-8")
    try:
        key = base64.b64decode(line.removeprefix(_STANDARD_SECRET), validate=True)
    except binascii.Error as error:
        raise ValueError(f"a {_STANDARD_SECRET} secret must be base64: {error}") from None
    if len(key) < 16:
        raise ValueError(f"a {_STANDARD_SECRET} secret must hold at least 16 bytes")
    return key


def standard_signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the Standard Webhooks scheme (its reference library).
    ValueError for a body that is not UTF-8 (the scheme signs text)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return Webhook(key).sign(msg_id=message_id, timestamp=moment, data=body.decode("utf-8"))


def standard_headers(
    keys: Sequence[bytes], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed with every key in force."""
    signatures = " ".join(standard_signature(k, message_id, timestamp, body) for k in keys)
    return {
        STANDARD_ID: message_id,
        STANDARD_TIMESTAMP: str(timestamp),
        STANDARD_SIGNATURE: signatures,
    }


def verify_standard(
    keys: Sequence[bytes], body: bytes, headers: Mapping[str, str], *, now: float, tolerance: float
) -> Verified:
    """Check a Standard Webhooks request against its raw body with any key in force; raises
    SignatureError (never anything else, whatever the headers hold)."""
    message_id = headers.get(STANDARD_ID, "")
    stamp = headers.get(STANDARD_TIMESTAMP, "").strip()
    given = headers.get(STANDARD_SIGNATURE, "").split()
    if not (message_id and stamp and given):
        raise SignatureError(f"{STANDARD_ID}, {STANDARD_TIMESTAMP} and {STANDARD_SIGNATURE} are required")  # fmt: skip
    if len(message_id) > _MAX_ID_CHARS or len(given) > _MAX_SIGNATURES:
        raise SignatureError(
            f"{STANDARD_ID} is at most {_MAX_ID_CHARS} characters and {STANDARD_SIGNATURE} "
            f"holds at most {_MAX_SIGNATURES} signatures"
        )
    if not _TIMESTAMP.fullmatch(stamp):
        raise SignatureError(f"{STANDARD_TIMESTAMP} must be whole unix seconds")
    timestamp = int(stamp)
    try:
        expected = [standard_signature(key, message_id, timestamp, body) for key in keys]
    except UnicodeDecodeError:
        raise SignatureError("the body is not UTF-8 (Standard Webhooks signs text)") from None
    # Constant time per comparison: a byte-by-byte one would tell how much was right.
    matched = [
        e
        for e in expected
        for g in given
        if hmac.compare_digest(e.encode(), g.encode("utf-8", "replace"))
    ]
    if not matched:
        raise SignatureError(
            f"no signature of {STANDARD_SIGNATURE} matches the body, {STANDARD_ID} and "
            f"{STANDARD_TIMESTAMP} with a secret in force (v1,<base64 HMAC-SHA256 of "
            "'<id>.<timestamp>.<raw body>'>)"
        )
    _check_time(timestamp, now, tolerance, STANDARD_TIMESTAMP)
    return Verified(timestamp, matched[0])


def _check_time(timestamp: int, now: float, tolerance: float, header: str) -> None:
    # Checked after the signature, so that only the secret's holder learns about our clock.
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"{header} is {timestamp - now:+.0f} s from our clock (allowed: "
            f"±{tolerance:g} s): sign again with the current time"
        )


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-DutyLink-Signature value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return _SCHEME + mac.hexdigest()


def signed_headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


@dataclass(frozen=True)
class Verified:
    """A request whose signature checked out."""

    timestamp: int
    signature: str  # as computed: the replay guard's key


def verify(
    secret: bytes,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    *,
    now: float,
    tolerance: float,
) -> Verified:
    """Check a request's headers against its raw body; raises SignatureError."""
    if not timestamp_header or not signature_header:
        raise SignatureError(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    if not _TIMESTAMP.fullmatch(timestamp_header.strip()):
        raise SignatureError(f"{TIMESTAMP_HEADER} must be whole unix seconds")
    timestamp = int(timestamp_header.strip())
    given = signature_header.strip().lower()
    if not given.startswith(_SCHEME):
        raise SignatureError(f"{SIGNATURE_HEADER} must be '{_SCHEME}<hex HMAC-SHA256>'")
    expected = sign(secret, timestamp, body)
    # Constant time: a byte-by-byte comparison would tell an attacker how much was right.
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
        raise SignatureError(
            f"{SIGNATURE_HEADER} does not match the body and {TIMESTAMP_HEADER} "
            "(HMAC-SHA256 of '<timestamp>.<raw body>' with the shared secret)"
        )
    _check_time(timestamp, now, tolerance, TIMESTAMP_HEADER)
    return Verified(timestamp, expected)


def verify_request(
    keys: Sequence[bytes],
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float,
    tolerance: float,
    accept_legacy: bool,
) -> Verified:
    """A request signed either way: Standard Webhooks when it carries `webhook-signature`, else
    DutyLink's own scheme if still accepted (with any key in force). `headers` must look names
    up without regard to case (aiohttp's do). Raises SignatureError."""
    if STANDARD_SIGNATURE in headers:
        return verify_standard(keys, body, headers, now=now, tolerance=tolerance)
    if SIGNATURE_HEADER not in headers:
        raise SignatureError(
            f"unsigned: {STANDARD_ID}, {STANDARD_TIMESTAMP} and {STANDARD_SIGNATURE} are "
            "required (Standard Webhooks)"
        )
    if not accept_legacy:
        raise SignatureError(
            f"{SIGNATURE_HEADER} is no longer accepted here: sign with Standard Webhooks "
            f"({STANDARD_SIGNATURE})"
        )
    refused: SignatureError | None = None
    for key in keys:
        try:
            return verify(
                key, body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER),
                now=now, tolerance=tolerance,
            )  # fmt: skip
        except SignatureError as error:
            refused = refused or error
    assert refused is not None  # a secret file holds at least one secret
    raise refused


class ReplayGuard:
    """The signatures admitted while their timestamps are still acceptable: a bounded set whose
    entries expire when the timestamp leaves the window (after that `verify` refuses them)."""

    def __init__(self, tolerance: float, capacity: int) -> None:
        self._tolerance = tolerance
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> forget after

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float, *, everything: bool = False) -> None:
        # Insertion order is nearly expiry order (timestamps differ by at most the window), so
        # trimming from the front is enough; a full sweep only when the set is full.
        if everything:
            for signature in [s for s, until in self._seen.items() if until < now]:
                del self._seen[signature]
            return
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)

    def admit(self, verified: Verified, now: float) -> bool:
        """True the first time this signature is seen, False for a replay; raises
        ReplayGuardFullError when it cannot remember one more."""
        self._expire(now)
        if verified.signature in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            self._expire(now, everything=True)
            if len(self._seen) >= self._capacity:
                raise ReplayGuardFullError(
                    f"{self._capacity} signed requests within ±{self._tolerance:g} s"
                )
        self._seen[verified.signature] = verified.timestamp + self._tolerance
        return True

    def forget(self, verified: Verified) -> None:
        """Admit this signature again: its request was not taken (the sender may resend it)."""
        self._seen.pop(verified.signature, None)
