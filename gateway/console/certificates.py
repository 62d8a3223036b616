"""Client-certificate login, for a console beside a mutual-TLS gateway.

The console serves HTTPS with its own certificate (`dutylink pki console NAME`) and asks every
browser for a client certificate chained to the exchange CA (the TLS handshake verifies it).
The officer is the agency the certificate names, exactly as the gateway names a caller; a
revoked certificate is refused here, at every request, and ends a live stream at its next
keepalive. The console then relays the officer's read-only calls to the gateway with its own
certificate, naming that agency (gateway.access.auth), so the gateway answers as it would
answer the agency itself and audits the call as relayed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.access.pki import IdentityError, client_identity
from gateway.access.revocation import RevocationKeeper, RevocationUnavailableError


class LoginRefused(Exception):
    """The browser's certificate names no agency, or is revoked; the message says which."""


@dataclass(frozen=True)
class CertificateLogin:
    """Who a verified browser certificate is; `revocations`: the exchange's CRL, if one is
    configured (as for the gateway)."""

    revocations: RevocationKeeper | None = None

    def agency(self, certificate_der: bytes | None) -> str:
        if not certificate_der:
            raise LoginRefused("no client certificate: install your agency's certificate")
        pem = ssl.DER_cert_to_PEM_cert(certificate_der).encode()
        try:
            identity = client_identity(pem)
        except IdentityError as error:
            raise LoginRefused(str(error)) from None
        if identity.console:
            raise LoginRefused(f"the certificate of console {identity.name!r} names no officer")
        try:
            revoked = self.revocations is not None and self.revocations.current().is_revoked(pem)
        except RevocationUnavailableError as error:
            raise LoginRefused(str(error)) from None
        if revoked:
            raise LoginRefused(f"the certificate of agency {identity.name!r} is revoked")
        return identity.name

    def still_valid(self, certificate_der: bytes | None) -> bool:
        try:
            self.agency(certificate_der)
        except LoginRefused:
            return False
        return True


def https_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The console's server side: its own certificate, TLS 1.2 or later, and a client
    certificate from the exchange CA required of every browser."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.verify_mode = ssl.CERT_REQUIRED
    return context
