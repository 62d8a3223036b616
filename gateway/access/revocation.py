"""The certificate revocation list in force, kept from being rolled back, lost or outlived.

The CRL file is re-read whenever it changes (`refresh`, cheap: one stat). A replacement comes
into force only if the CA signed it and it is newer than the list in force (a higher CRLNumber,
or a later thisUpdate when either has none): putting an older list back cannot un-revoke a
certificate. When the file is missing, unreadable, or the list in force is past its nextUpdate,
the list is *unusable*; `tls.crl_unusable` says what then happens to calls:
- "refuse" (default): every call is refused (UNAVAILABLE, saying why) until a current CRL is in
  place: nobody is let in on a list that may be missing recent revocations;
- "last_good": calls go on, checked against the last good list kept in memory.
Either way the last good list is never forgotten: it is kept in memory and, for the next start,
copied to the gateway's data directory (so an older CRL put back while the gateway was stopped
is refused too). Every change (loaded, refused, unusable, usable again) is queued as a
`RevocationChange` for the audit log (`take_changes`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import structlog

from gateway.access.pki import PkiError, RevocationList
from gateway.core.settings import CRL_UNUSABLE_POLICIES

log = structlog.get_logger("dutylink.auth")

REFUSE, LAST_GOOD = CRL_UNUSABLE_POLICIES  # the values of `tls.crl_unusable`
# The copy of the list in force, under the gateway's data directory (nats.data_dir).
CRL_KEPT_FILE = "tls/crl-in-force.pem"


class RevocationUnavailableError(Exception):
    """No usable CRL and the policy refuses calls without one (the message says why)."""


class ChangeKind(Enum):
    LOADED = "loaded"  # a new list came into force (or the one in force is back in place)
    REFUSED = "refused"  # a replacement was refused; the list in force stays
    UNUSABLE = "unusable"  # the file is gone or unreadable, or the list is past nextUpdate


@dataclass(frozen=True)
class RevocationChange:
    """One change to the revocation state, for the audit log."""

    kind: ChangeKind
    reason: str
    digest: bytes = b""  # SHA-256 of the CRL file concerned (empty: no file)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(crl: RevocationList) -> str:
    number = f"number {crl.number}" if crl.number is not None else "without a number"
    return f"CRL {number} of {crl.this_update.isoformat()}"


def replacement_refusal(in_force: RevocationList, candidate: RevocationList) -> str | None:
    """Why `candidate` may not replace `in_force` (None: it may). Pure."""
    if candidate.digest == in_force.digest:
        return None
    if candidate.number is not None and in_force.number is not None:
        if candidate.number > in_force.number:
            return None
        return f"{_name(candidate)} is not newer than {_name(in_force)} in force"
    if candidate.this_update > in_force.this_update:
        return None
    return f"{_name(candidate)} was issued no later than {_name(in_force)} in force"


class RevocationKeeper:
    """The CRL of `crl_file`, verified against the CA, kept as described above."""

    def __init__(
        self,
        crl_file: Path,
        ca_pem: bytes,
        *,
        unusable: str = REFUSE,
        kept_file: Path | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        """`kept_file` (in the gateway's data directory) holds a copy of the list in force, so
        that an older CRL put back while the gateway was stopped is refused at start too, and a
        missing file at start-up falls back to it (under the unusable policy)."""
        if unusable not in CRL_UNUSABLE_POLICIES:
            raise ValueError(f"crl_unusable must be one of {CRL_UNUSABLE_POLICIES}: {unusable!r}")
        self._file = crl_file
        self._kept_file = kept_file
        self._ca_pem = ca_pem
        self._refuse = unusable == REFUSE
        self._clock = clock
        self._changes: list[RevocationChange] = []
        self._problem: str | None = None
        self._stamp_seen: tuple[int, int] | None = None
        kept = self._load_kept()
        try:
            data = crl_file.read_bytes()
            stamp = self._stamp()
        except OSError as error:
            if kept is None:
                raise PkiError(f"{crl_file}: cannot read the CRL ({error.strerror})") from None
            self._in_force = kept
            self._note(ChangeKind.LOADED, f"{kept_file}: {self._summary()} (kept)", kept.digest)
            self._missing(error)
            self._check_stale()
            return
        self._stamp_seen = stamp
        refusal: str | None = None
        try:
            candidate: RevocationList | None = RevocationList.load(data, ca_pem)
        except PkiError as error:
            if kept is None:
                raise PkiError(f"{crl_file}: {error}") from None
            candidate, refusal = None, str(error)
        if candidate is not None:
            refusal = None if kept is None else replacement_refusal(kept, candidate)
        if candidate is not None and refusal is None:
            self._in_force = candidate
            self._note(ChangeKind.LOADED, f"{crl_file}: {self._summary()}", candidate.digest)
            self._keep(data)
        else:
            assert kept is not None
            self._in_force = kept
            self._note(ChangeKind.LOADED, f"{kept_file}: {self._summary()} (kept)", kept.digest)
            self._refused(f"{crl_file}: {refusal}", hashlib.sha256(data).digest())
        self._check_stale()

    def _load_kept(self) -> RevocationList | None:
        if self._kept_file is None:
            return None
        try:
            return RevocationList.load(self._kept_file.read_bytes(), self._ca_pem)
        except FileNotFoundError:
            return None
        except (OSError, PkiError) as error:  # e.g. the CA changed: start from the file
            log.error("auth.crl_kept_unusable", file=str(self._kept_file), reason=str(error))
            return None

    def _keep(self, data: bytes) -> None:
        """Copy the list now in force to `kept_file` (atomically)."""
        if self._kept_file is None:
            return
        try:
            self._kept_file.parent.mkdir(parents=True, exist_ok=True)
            # One name per process: the workers of `serve --workers` share the data directory.
            temporary = self._kept_file.with_name(f".{self._kept_file.name}.{os.getpid()}.tmp")
            temporary.write_bytes(data)
            temporary.replace(self._kept_file)
        except OSError as error:
            log.error("auth.crl_not_kept", file=str(self._kept_file), reason=str(error))

    @property
    def in_force(self) -> RevocationList:
        return self._in_force

    @property
    def problem(self) -> str | None:
        """Why the list is unusable right now (None: it is usable)."""
        return self._problem

    def take_changes(self) -> list[RevocationChange]:
        changes, self._changes = self._changes, []
        return changes

    def current(self) -> RevocationList:
        """The list to check a call against, after a refresh. Raises
        `RevocationUnavailableError` while it is unusable and the policy refuses calls."""
        self.refresh()
        if self._problem is not None and self._refuse:
            raise RevocationUnavailableError(
                f"revocation list unusable ({self._problem}); calls are refused until a current "
                "CRL is in place (tls.crl_unusable = refuse)"
            )
        return self._in_force

    def refresh(self) -> None:
        """Re-read the file if it changed, and notice a list that has gone past nextUpdate."""
        try:
            stamp = self._stamp()
        except OSError as error:
            self._missing(error)
            return
        if stamp != self._stamp_seen:
            self._read(stamp)
        self._check_stale()

    def _stamp(self) -> tuple[int, int]:
        status = self._file.stat()
        return status.st_mtime_ns, status.st_size

    def _read(self, stamp: tuple[int, int]) -> None:
        try:
            data = self._file.read_bytes()
        except OSError as error:
            self._missing(error)
            return
        self._stamp_seen = stamp
        try:
            candidate = RevocationList.load(data, self._ca_pem)
        except PkiError as error:
            self._refused(f"{self._file}: {error}", hashlib.sha256(data).digest())
            return
        refusal = replacement_refusal(self._in_force, candidate)
        if refusal is not None:
            self._refused(f"{self._file}: {refusal}", candidate.digest)
            return
        same = candidate.digest == self._in_force.digest
        self._in_force = candidate
        if not same:
            self._keep(data)
        was_unusable, self._problem = self._problem, None
        if not same or was_unusable is not None:
            verb = "back in place" if same else "in force"
            self._note(
                ChangeKind.LOADED, f"{self._file}: {self._summary()} {verb}", candidate.digest
            )

    def _check_stale(self) -> None:
        if self._problem is None and self._in_force.is_stale(self._clock()):
            next_update = self._in_force.next_update
            assert next_update is not None
            self._unusable(
                f"{_name(self._in_force)} is past its nextUpdate {next_update.isoformat()}",
                self._in_force.digest,
            )

    def _summary(self) -> str:
        crl = self._in_force
        until = crl.next_update.isoformat() if crl.next_update else "no nextUpdate"
        return f"{_name(crl)} ({len(crl.serials)} revoked, next update {until})"

    def _missing(self, error: OSError) -> None:
        self._stamp_seen = None  # whatever file appears next is read
        self._unusable(f"{self._file}: {error.strerror or error}", None)

    def _unusable(self, problem: str, digest: bytes | None) -> None:
        if problem == self._problem:
            return
        self._problem = problem
        then = "calls refused" if self._refuse else "calls checked against it"
        self._note(
            ChangeKind.UNUSABLE,
            f"{problem}; keeping {_name(self._in_force)} in memory ({then})",
            digest or b"",
        )

    def _refused(self, reason: str, digest: bytes) -> None:
        self._note(ChangeKind.REFUSED, f"{reason}; {_name(self._in_force)} stays in force", digest)

    def _note(self, kind: ChangeKind, reason: str, digest: bytes) -> None:
        level = log.info if kind is ChangeKind.LOADED else log.error
        level(f"auth.crl_{kind.value}", reason=reason)
        self._changes.append(RevocationChange(kind, reason, digest))
