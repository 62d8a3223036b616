"""Who is calling: the authenticated `Principal`, from the caller's credentials only.

Two ways in, chosen by configuration:
- **mutual TLS** (`[tls]` set): the agency is the `urn:dutylink:agency:<id>` URI SAN of the
  client certificate the TLS handshake verified against the exchange's CA. The handshake
  refuses foreign, expired and not-yet-valid certificates; this module refuses revoked ones
  (the CRL file is re-read when it changes) and agencies the gateway does not know.
- **bearer tokens** (no `[tls]`): `authorization: Bearer <token>` metadata; development only,
  logged loudly at start-up.
Nothing downstream reads a request to learn who sent it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from gateway.config import Agency
from gateway.pki import IdentityError, PkiError, RevocationList, check_client_certificate

log = structlog.get_logger("dutylink.auth")


class UnauthenticatedError(Exception):
    """The call carries no credential, or one that matches no agency."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an agency and the roles it holds."""

    agency: str
    roles: frozenset[str] = frozenset()


class CallContext(Protocol):
    """The part of grpc.aio.ServicerContext that authentication reads."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None: ...

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
            _digest(a.token): Principal(a.id, frozenset(a.roles)) for a in agencies if a.token
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

    def __init__(self, agencies: Iterable[Agency], ca_pem: bytes, crl_file: Path | None) -> None:
        self._principals = {a.id: Principal(a.id, frozenset(a.roles)) for a in agencies}
        self._ca_pem = ca_pem
        self._crl_file = crl_file
        self._crl: RevocationList | None = None
        self._crl_stamp: tuple[int, int] | None = None
        self._revocations()  # a bad CRL at start-up is a configuration error: fail now

    def _revocations(self) -> RevocationList | None:
        """The current CRL, re-read whenever the file changes. A new CRL that does not verify
        leaves the last good one in force (loudly) rather than un-revoking anything."""
        if self._crl_file is None:
            return None
        status = self._crl_file.stat()
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp != self._crl_stamp:
            self._crl_stamp = stamp
            try:
                self._crl = RevocationList.load(self._crl_file.read_bytes(), self._ca_pem)
                log.info(
                    "auth.crl_loaded", file=str(self._crl_file), revoked=len(self._crl.serials)
                )
            except PkiError as error:
                if self._crl is None:
                    raise
                log.error("auth.crl_rejected", file=str(self._crl_file), reason=str(error))
        return self._crl

    def authenticate(self, context: CallContext) -> Principal:
        certificates = list(context.auth_context().get("x509_pem_cert", ()))
        if not certificates:
            raise UnauthenticatedError("no verified client certificate")
        certificate = certificates[0]
        try:
            agency = check_client_certificate(certificate)
        except IdentityError as error:
            raise UnauthenticatedError(str(error)) from None
        revocations = self._revocations()
        if revocations is not None and revocations.is_revoked(certificate):
            raise UnauthenticatedError(f"the certificate of agency '{agency}' is revoked")
        principal = self._principals.get(agency)
        if principal is None:
            raise UnauthenticatedError(f"agency '{agency}' is not configured on this gateway")
        return principal
