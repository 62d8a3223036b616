"""The webhook signature scheme, the same in both directions:

    X-DutyLink-Timestamp: 1786773600
    X-DutyLink-Signature: v1=<hex of HMAC-SHA256(secret, "1786773600" + "." + raw body)>

The timestamp bounds how long a captured request stays usable (± the tolerance); within that
window `ReplayGuard` remembers every signature it admitted, so the same request is taken once.
Pure functions over bytes and a clock value: the HTTP server and client live in adapter.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from dataclasses import dataclass

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
    # Checked after the signature, so that only the secret's holder learns about our clock.
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is {timestamp - now:+.0f} s from our clock (allowed: "
            f"±{tolerance:g} s): sign again with the current time"
        )
    return Verified(timestamp, expected)


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
