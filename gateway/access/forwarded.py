"""Agency certificates a TLCP front forwards (docs/tlcp-front.md).

grpcio speaks TLS, not TLCP (GB/T 38636-2020, the national-algorithm transport). A deployment
that must use TLCP puts a TLCP-terminating front before the gateway: the agency's system shakes
hands with the front using its SM2 certificate, and the front calls the gateway over mutual TLS
with a certificate of its own (`urn:dutylink:front:<name>`, listed in `tls.fronts`), forwarding
the agency's certificate in the `dutylink-client-cert` metadata: base64 DER, or URL-encoded PEM
(nginx's `$ssl_client_escaped_cert`, as a Tongsuo-built front sends it: deploy/tlcp/).

The gateway does not take the front's word for who called: it checks the forwarded certificate
itself, against the CA that issues the agencies' TLCP certificates (`tls.front_ca_file`): issued
by it (SM2-with-SM3, or ECDSA), valid now, a client certificate naming exactly one agency. A front
can therefore only relay callers holding a current certificate of that CA; what it cannot prove
is that the caller it relays holds that certificate's key — the front is trusted for that, as
a TLS-terminating load balancer would be, which is why fronts are named, their certificates
revocable, and every call through one audited with its name.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import urllib.parse
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from gateway.access.pki import ClientIdentity, IdentityError, client_identity_of
from gateway.core.crypto import Sm2Scheme

# The metadata a front forwards the caller's certificate in.
FORWARDED_CERT = "dutylink-client-cert"
SM2_WITH_SM3 = x509.ObjectIdentifier("1.2.156.10197.1.501")
_SM2_CURVE = bytes.fromhex("06082a811ccf5501822d")  # the OID 1.2.156.10197.1.301, DER
_MAX_CERT_BYTES = 8192


def _element(der: bytes, offset: int) -> tuple[int, int, int]:
    """The tag, content start and content end of the DER element at `offset`."""
    tag, first = der[offset], der[offset + 1]
    start = offset + 2
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    else:
        length = first
    if start + length > len(der):
        raise IdentityError("malformed certificate: an element runs past its end")
    return tag, start, start + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _element(der, start)
        found.append(element)
        start = element[2]
    return found


def sm2_public_key(certificate: x509.Certificate) -> bytes:
    """The SM2 public key (x || y) of `certificate` (cryptography reads SM2 certificates but
    has no SM2 keys): its subjectPublicKeyInfo, read from the signed part."""
    tbs = certificate.tbs_certificate_bytes
    try:
        _, start, end = _element(tbs, 0)
        fields = _children(tbs, start, end)
        if fields[0][0] == 0xA0:  # the version
            fields = fields[1:]
        _, key_start, key_end = fields[5]  # serial, signature, issuer, validity, subject, key
        (_, algorithm_start, algorithm_end), (bits_tag, bits_start, bits_end) = _children(
            tbs, key_start, key_end
        )
    except (IndexError, ValueError):
        raise IdentityError("malformed certificate: no subjectPublicKeyInfo") from None
    bits = tbs[bits_start:bits_end]
    if _SM2_CURVE not in tbs[algorithm_start:algorithm_end] or bits_tag != 0x03:
        raise IdentityError("the issuer's key is not an SM2 key")
    if len(bits) != 66 or bits[:2] != b"\x00\x04":
        raise IdentityError("the issuer's SM2 key is not an uncompressed point")
    return bits[2:]


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.signature_algorithm_oid == SM2_WITH_SM3:
        return Sm2Scheme().verify(
            sm2_public_key(issuer), certificate.tbs_certificate_bytes, certificate.signature
        )
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def load_authorities(pem: bytes) -> list[x509.Certificate]:
    """The CA certificates of `tls.front_ca_file` (PEM, one or more)."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise IdentityError(f"not PEM certificates: {error}") from None


def _forwarded_certificate(text: str) -> x509.Certificate:
    if len(text) > _MAX_CERT_BYTES * 2:
        raise IdentityError(f"the forwarded certificate is longer than {_MAX_CERT_BYTES} bytes")
    try:
        if text.startswith(("-----BEGIN", "%2D%2D%2D%2D%2DBEGIN")):
            return x509.load_pem_x509_certificate(urllib.parse.unquote(text).encode())
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise IdentityError(
            f"'{FORWARDED_CERT}' holds no certificate (base64 DER, or URL-encoded PEM)"
        ) from None


def forwarded_identity(
    value: str | bytes, authorities: Sequence[x509.Certificate], now: dt.datetime
) -> ClientIdentity:
    """Whom the certificate a front forwarded names, once checked: issued by one of
    `authorities`, valid at `now`, a client certificate naming one agency."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    certificate = _forwarded_certificate(text)
    issuer = next((ca for ca in authorities if ca.subject == certificate.issuer), None)
    if issuer is None:
        raise IdentityError(
            f"the forwarded certificate's issuer {certificate.issuer.rfc4514_string()!r} is not "
            "a CA of tls.front_ca_file"
        )
    if not _signed_by(certificate, issuer):
        raise IdentityError("the forwarded certificate's signature does not verify")
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise IdentityError(
            f"the forwarded certificate is not valid now (valid {certificate.not_valid_before_utc:%Y-%m-%d}"
            f" to {certificate.not_valid_after_utc:%Y-%m-%d})"
        )
    identity = client_identity_of(certificate)
    if identity.console or identity.front:
        raise IdentityError("a forwarded certificate must name an agency")
    return identity
