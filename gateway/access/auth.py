"""Who is calling: the authenticated `Principal`, from the caller's credentials only.

Two ways in, chosen by configuration:
- **mutual TLS** (`[tls]` set): the agency is the `urn:dutylink:agency:<id>` URI SAN of the
  client certificate the TLS handshake verified against the exchange's CA. The handshake
  refuses foreign, expired and not-yet-valid certificates; this module refuses revoked ones
  (the CRL is kept by gateway.access.revocation: re-read when it changes, never rolled back, calls
  refused while it is missing or stale unless configured otherwise) and agencies the gateway
  does not know.
  A web console's certificate (`urn:dutylink:console:<name>`, a console listed in
  `tls.consoles`) names no agency: the console relays an officer's call, names the officer's
  agency (read from the officer's own client certificate) in `dutylink-acting-for` metadata,
  and the principal is that agency `via` the console, for read-only calls only
  (gateway.rpc.calls.authenticate), audited as relayed.
- **bearer tokens** (no `[tls]`): `authorization: Bearer <token>` metadata; development only,
  logged loudly at start-up.
Nothing downstream reads a request to learn who sent it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import structlog
from cryptography import x509

from gateway.access.forwarded import FORWARDED_CERT, forwarded_identity
from gateway.access.pki import IdentityError, client_identity
from gateway.access.revocation import REFUSE, RevocationKeeper
from gateway.core.settings import Agency

log = structlog.get_logger("dutylink.auth")


class UnauthenticatedError(Exception):
    """The call carries no credential, or one that matches no agency."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an agency and the roles it holds; `via`: the console relaying
    the call for one of the agency's officers ("" when the agency called itself); `through`:
    the TLCP front the agency's own call came through (gateway.access.forwarded)."""

    agency: str
    roles: frozenset[str] = frozenset()
    via: str = ""
    through: str = ""

    def noted(self, reason: str) -> str:
        """An audit entry's reason, saying which console relayed the call, or which front it
        came through, if any."""
        note = f"relayed by {self.via}" if self.via else f"through {self.through}"
        if not (self.via or self.through):
            return reason
        return f"{reason} ({note})" if reason else note


# The metadata a trusted console names the officer's agency in.
ACTING_FOR = "dutylink-acting-for"

# What a console may relay for an officer (Principal.via): reading the board, the status of
# messages and the audit log, never sending, subscribing, declaring or revealing anything.
RELAYABLE_RPCS = frozenset(
    {
        "GetBoard",
        "GetIncident",
        "GetLedger",
        "WatchBoard",
        "GetStatus",
        "ListPending",
        "ListEntries",
        "GetInclusionProof",
        "GetCheckpoint",
        "GetConsistencyProof",
        "WatchCheckpoints",
    }
)


def relay_refusal(principal: Principal, rpc: str) -> str | None:
    """Why a console may not relay this call (None: it may, or no console relays it)."""
    if principal.via and rpc not in RELAYABLE_RPCS:
        return f"{principal.via} may relay read-only calls only, not {rpc}"
    return None


class CallContext(Protocol):
    """The part of grpc.aio.ServicerContext that authentication reads."""

    def invocation_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


class Authenticator(Protocol):
    def authenticate(self, context: CallContext) -> Principal: ...


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenAuthenticator:
    """Maps bearer tokens to agencies. Tokens are looked up by their SHA-256 digest, so lookup
    time does not depend on how much of a guessed token is right."""

    def __init__(self, agencies: Iterable[Agency]) -> None:
        self._by_digest = {
            _digest(a.token.get_secret_value()): Principal(a.id, frozenset(a.roles))
            for a in agencies
            if a.token
        }

    def authenticate(self, context: CallContext) -> Principal:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
                principal = self._by_digest.get(_digest(token.strip()))
                if principal is None:
                    raise UnauthenticatedError("unknown token")
                return principal
        raise UnauthenticatedError("no 'authorization: Bearer <token>' metadata")


class CertificateAuthenticator:
    """Maps the verified client certificate to a configured agency, refusing revoked ones."""

    def __init__(
        self,
        agencies: Iterable[Agency],
        ca_pem: bytes,
        crl_file: Path | None,
        *,
        crl_unusable: str = REFUSE,
        crl_kept_file: Path | None = None,
        consoles: Iterable[str] = (),
        fronts: Iterable[str] = (),
        front_authorities: Sequence[x509.Certificate] = (),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._principals = {a.id: Principal(a.id, frozenset(a.roles)) for a in agencies}
        self._consoles = frozenset(consoles)
        self._fronts = frozenset(fronts)
        self._front_authorities = tuple(front_authorities)
        self._clock = clock
        # A missing or bad CRL at start-up (and none kept) is a configuration error: raises.
        self.revocations = (
            None
            if crl_file is None
            else RevocationKeeper(crl_file, ca_pem, unusable=crl_unusable, kept_file=crl_kept_file)
        )

    def authenticate(self, context: CallContext) -> Principal:
        certificates = list(context.auth_context().get("x509_pem_cert", ()))
        if not certificates:
            raise UnauthenticatedError("no verified client certificate")
        certificate = certificates[0]
        try:
            identity = client_identity(certificate)
        except IdentityError as error:
            raise UnauthenticatedError(str(error)) from None
        who = f"{identity.kind} '{identity.name}'"
        revocations = None if self.revocations is None else self.revocations.current()
        if revocations is not None and revocations.is_revoked(certificate):
            raise UnauthenticatedError(f"the certificate of {who} is revoked")
        if identity.console:
            return self._relayed(identity.name, context)
        if identity.front:
            return self._fronted(identity.name, context)
        principal = self._principals.get(identity.name)
        if principal is None:
            raise UnauthenticatedError(f"{who} is not configured on this gateway")
        return principal

    def _relayed(self, console: str, context: CallContext) -> Principal:
        """The agency a trusted console acts for: exactly one `dutylink-acting-for` value."""
        if console not in self._consoles:
            raise UnauthenticatedError(
                f"console '{console}' may not relay calls to this gateway (not in tls.consoles)"
            )
        named = [
            value.decode() if isinstance(value, bytes) else value
            for key, value in context.invocation_metadata() or ()
            if key == ACTING_FOR
        ]
        if len(named) != 1:
            raise UnauthenticatedError(
                f"console '{console}' must name the one agency it acts for in '{ACTING_FOR}'"
            )
        principal = self._principals.get(named[0])
        if principal is None:
            raise UnauthenticatedError(
                f"console '{console}' acts for agency {named[0][:64]!r}, which is not configured "
                "on this gateway"
            )
        return replace(principal, via=f"console {console}")

    def _fronted(self, front: str, context: CallContext) -> Principal:
        """The agency whose certificate a trusted TLCP front forwards, once checked."""
        if front not in self._fronts:
            raise UnauthenticatedError(
                f"front '{front}' may not forward calls to this gateway (not in tls.fronts)"
            )
        forwarded = [
            value for key, value in context.invocation_metadata() or () if key == FORWARDED_CERT
        ]
        if len(forwarded) != 1:
            raise UnauthenticatedError(
                f"front '{front}' must forward its caller's certificate in '{FORWARDED_CERT}'"
            )
        try:
            identity = forwarded_identity(forwarded[0], self._front_authorities, self._clock())
        except IdentityError as error:
            raise UnauthenticatedError(f"front '{front}': {error}") from None
        principal = self._principals.get(identity.name)
        if principal is None:
            raise UnauthenticatedError(
                f"front '{front}' forwards agency '{identity.name}', which is not configured on "
                "this gateway"
            )
        return replace(principal, through=f"front {front}")
