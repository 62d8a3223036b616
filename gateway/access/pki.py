"""The exchange's own PKI: a small certificate authority that gives every agency a client
certificate, so the gateway authenticates callers by mutual TLS instead of bearer tokens.

Long because it is the whole certificate authority over one directory layout: private keys written
0600 atomically, the issued.json register, the agency and server certificate profiles, revocation
and the signed CRL. The readers the gateway uses at the handshake (`agency_of`,
`check_client_certificate`, `RevocationList`) sit at the end because they check the same profile
the issuers write.

Layout of a PKI directory (0700; every private key 0600 from the moment it exists):

    ca.pem  ca.key       the exchange CA (ECDSA P-256, CA:true pathlen 0)
    crl.pem              the CA-signed revocation list the gateway loads
    issued.json          serial -> {agency, "server", "console:<name>" or "front:<name>", subject,
                         not_after, revoked}
    agencies/<id>.pem    an agency's client certificate (EKU clientAuth) and its key
    agencies/<id>.key
    server.pem server.key  the gateway's server certificate (EKU serverAuth)
    consoles/<name>.pem  a web console's certificate (EKU serverAuth and clientAuth: it serves
    consoles/<name>.key  officers' browsers over HTTPS and relays their read-only calls)
    fronts/<name>.pem    a TLCP front's client certificate (EKU clientAuth: it forwards its
    fronts/<name>.key    callers' certificates, gateway.access.forwarded)

Keys are ECDSA P-256, not Ed25519: grpcio's BoringSSL refuses an Ed25519 certificate in a real
TLS handshake (NO_COMMON_SIGNATURE_ALGORITHMS), and P-256 is what every agency's TLS stack and
HSM supports. The agency is named by the URI SAN `urn:dutylink:agency:<id>`; the gateway reads it
from there (`agency_of`), never from the CN, because a SAN is a typed, exact identity field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.core.settings import AGENCY_ID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CRL = "crl.pem"
ISSUED = "issued.json"
AGENCIES = "agencies"
CONSOLES = "consoles"
SERVER_FILES = "server"  # server.pem and server.key

ORGANIZATION = "DutyLink"
AGENCY_URI_PREFIX = "urn:dutylink:agency:"
# A web console that the gateway lets relay officers' read-only calls (gateway.access.auth).
CONSOLE_URI_PREFIX = "urn:dutylink:console:"
CONSOLE_HOLDER_PREFIX = "console:"  # its name in issued.json, apart from any agency id
# A TLCP-terminating front that forwards its callers' certificates (gateway.access.forwarded).
FRONT_URI_PREFIX = "urn:dutylink:front:"
FRONT_HOLDER_PREFIX = "front:"
FRONTS = "fronts"
SERVER_HOLDER = "server"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CRL_VALIDITY = dt.timedelta(days=7)
# Backdating notBefore by a few minutes keeps a fresh certificate usable on a peer whose clock
# runs slightly behind the CA's.
CLOCK_SKEW = dt.timedelta(minutes=5)


class PkiError(Exception):
    """The PKI directory is missing, damaged or would be clobbered; the message names the file."""


class IdentityError(Exception):
    """A peer certificate does not name exactly one well-formed agency (or is no client
    certificate). Kept apart from `PkiError` so a caller maps it to UNAUTHENTICATED, never a
    broken local PKI."""


@dataclass(frozen=True)
class IssuedCertificate:
    """What `issue_agency`/`issue_server` wrote, so callers need not rebuild the paths."""

    serial: int
    holder: str
    certificate: Path
    key: Path
    not_after: dt.datetime


# --- files -------------------------------------------------------------------------------------


def _private_dir(path: Path) -> Path:
    """Create `path` 0700, or tighten it: it holds private keys, and a key's own 0600 does not
    hide which agencies exist or stop an outsider replacing a file in a writable directory."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a fresh temporary file created with `mode` (O_EXCL), then rename it into place.
    A key is therefore never readable by others even for an instant (no chmod afterwards, and
    O_TRUNC on an old file would keep that file's looser mode), and a crash leaves either the
    old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PKCS#8 PEM, unencrypted (grpcio takes key bytes, not a passphrase), readable by the owner
    only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(path, pem, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    """Certificates and the CRL are public; 0644 lets a gateway running as another user read
    them."""
    write_atomically(path, data, 0o644)


def _read(path: Path, what: str) -> bytes:
    """Read a PKI file, turning a missing file into an error that says what it should be."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: no {what} (run `dutylink pki init --dir {path.parent}`)") from None
    except OSError as error:
        raise PkiError(f"{path}: cannot read the {what}: {error.strerror}") from None


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key, checked to belong together so that a half-replaced CA
    cannot sign certificates nobody can verify."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    try:
        certificate = x509.load_pem_x509_certificate(_read(cert_path, "CA certificate"))
    except ValueError as error:
        raise PkiError(f"{cert_path}: not a PEM certificate ({error})") from None
    try:
        key = serialization.load_pem_private_key(_read(key_path, "CA private key"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise PkiError(f"{key_path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: expected an ECDSA P-256 key, found {type(key).__name__}")
    if key.public_key() != certificate.public_key():
        raise PkiError(f"{key_path}: this key does not belong to {cert_path}")
    return certificate, key


# --- the register of issued certificates ------------------------------------------------------


def _load_issued(directory: Path) -> dict[str, dict[str, Any]]:
    """issued.json: the only record of which serials exist, so `revoke` can find an agency's
    certificates and rebuild the CRL from scratch."""
    path = directory / ISSUED
    raw = _read(path, "register of issued certificates")
    try:
        issued = json.loads(raw)
    except ValueError as error:
        raise PkiError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(issued, dict) or not all(
        k.isdigit() and isinstance(v, dict) for k, v in issued.items()
    ):
        raise PkiError(f"{path}: expected an object of serial -> certificate record")
    return issued


def _save_issued(directory: Path, issued: dict[str, dict[str, Any]]) -> None:
    """Rewrite issued.json atomically: losing it would make revocation impossible."""
    text = json.dumps(issued, indent=2, sort_keys=False) + "\n"
    _write_public(directory / ISSUED, text.encode())


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _record(
    directory: Path,
    issued: dict[str, dict[str, Any]],
    certificate: x509.Certificate,
    holder: str,
    kind: str,
) -> dict[str, Any]:
    """Add a freshly issued certificate to issued.json (serials are decimal strings: they can
    never be mistaken for an agency id, which starts with a letter)."""
    entry: dict[str, Any] = {
        "agency": holder,
        "kind": kind,
        "subject": certificate.subject.rfc4514_string(),
        "not_before": _iso(certificate.not_valid_before_utc),
        "not_after": _iso(certificate.not_valid_after_utc),
        "revoked": False,
    }
    issued[str(certificate.serial_number)] = entry
    _save_issued(directory, issued)
    return entry


def list_issued(directory: Path) -> dict[int, dict[str, Any]]:
    """Every certificate this CA issued, by serial, in issue order (for `dutylink pki list`)."""
    directory = Path(directory)
    _load_ca(directory)
    return {int(serial): entry for serial, entry in _load_issued(directory).items()}


# --- building certificates --------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    """ECDSA P-256: the one key type grpcio's BoringSSL, Go, Java and HSMs all accept."""
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def _leaf_key_usage() -> x509.KeyUsage:
    """digitalSignature only: (EC)DHE handshakes sign with the key and never encrypt to it."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    usage: Sequence[x509.ObjectIdentifier],
    days: int,
    not_before: dt.datetime | None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An end-entity certificate for the `usage` purposes only (its EKUs), never a CA. Its
    notAfter is capped at the CA's: no verifier would accept it past that anyway."""
    if days < 1:
        raise PkiError(f"validity must be at least 1 day, not {days}")
    start = (_now() - CLOCK_SKEW) if not_before is None else not_before.astimezone(dt.UTC)
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    key = _new_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


# --- the CRL -----------------------------------------------------------------------------------


def _next_crl_number(directory: Path) -> int:
    """CRLNumber must grow with every CRL so a verifier can refuse an older one replayed."""
    try:
        previous = x509.load_pem_x509_crl((directory / CRL).read_bytes())
        number = previous.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 1
    return number + 1


def _write_crl(
    directory: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    issued: dict[str, dict[str, Any]],
    now: dt.datetime | None = None,
) -> None:
    """Rebuild crl.pem from issued.json: every revoked serial, signed by the CA, valid for
    `CRL_VALIDITY` so a gateway can tell a stale list from a current one."""
    now = _now() if now is None else now.astimezone(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(_next_crl_number(directory)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, entry in issued.items():
        if entry.get("revoked"):
            revoked_at = dt.datetime.fromisoformat(str(entry.get("revoked_at", _iso(now))))
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial))
                .revocation_date(revoked_at)
                .build()
            )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_public(directory / CRL, crl.public_bytes(serialization.Encoding.PEM))


# --- operations --------------------------------------------------------------------------------


def init_ca(
    directory: Path,
    *,
    name: str = "DutyLink exchange CA",
    days: int = 3650,
    force: bool = False,
) -> Path:
    """Create the exchange CA, an empty register and an empty signed CRL; returns ca.pem's path.

    An existing CA is never replaced silently: every agency's certificate chains to it, so a new
    one cuts every agency off. With `force=True` the register starts afresh too (certificates of
    the old CA are no longer trusted by anyone who installs the new ca.pem).
    """
    directory = _private_dir(Path(directory))
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    existing = [p for p in (cert_path, key_path) if p.exists()]
    if existing and not force:
        raise PkiError(
            f"{existing[0]}: a CA already exists here; replacing it invalidates every issued "
            "certificate (use force=True / --force to do so anyway)"
        )
    if days < 1:
        raise PkiError(f"validity must be at least 1 day, not {days}")
    key = _new_key()
    subject = _name(name)
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        # pathlen 0: the CA signs agencies and the gateway directly, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_public(cert_path, _pem(certificate))
    _save_issued(directory, {})
    (directory / CRL).unlink(missing_ok=True)
    _write_crl(directory, certificate, key, {})
    return cert_path


def validate_agency_id(agency_id: str) -> str:
    """An agency id becomes a file name and a URI: lowercase letters, digits and '-', 2 to 32
    long, starting with a letter, so it can never escape agencies/ or look like a serial."""
    if not AGENCY_ID.fullmatch(agency_id):
        raise PkiError(
            f"invalid agency id {agency_id!r}: use 2-32 lowercase letters, digits or '-', "
            "starting with a letter"
        )
    if agency_id == SERVER_HOLDER:
        raise PkiError(f"invalid agency id {agency_id!r}: reserved for the gateway's certificate")
    return agency_id


def _issue(
    directory: Path,
    *,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    usage: Sequence[x509.ObjectIdentifier],
    folder: Path,
    stem: str,
    holder: str,
    kind: str,
    days: int,
    not_before: dt.datetime | None = None,
) -> IssuedCertificate:
    """Sign a leaf with the CA, write it to `folder`/`stem`.pem and its key to .key (0600, the
    folder 0700) and record it in issued.json under `holder`."""
    ca_cert, ca_key = _load_ca(directory)
    issued = _load_issued(directory)
    certificate, key = _sign_leaf(
        ca_cert, ca_key, subject=subject, sans=sans, usage=usage, days=days, not_before=not_before
    )
    folder = _private_dir(folder)
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    _write_key(key_path, key)
    _write_public(cert_path, _pem(certificate))
    _record(directory, issued, certificate, holder, kind)
    return IssuedCertificate(
        certificate.serial_number, holder, cert_path, key_path, certificate.not_valid_after_utc
    )


def issue_agency(
    directory: Path,
    agency_id: str,
    *,
    days: int = 397,
    not_before: dt.datetime | None = None,
) -> IssuedCertificate:
    """Issue a client certificate (EKU clientAuth only) naming the agency in the URI SAN
    `urn:dutylink:agency:<id>`. Writes agencies/<id>.pem and .key, replacing an earlier pair; the
    earlier certificate stays valid until it expires or is revoked. `not_before` exists for tests
    that need an expired or a not-yet-valid certificate."""
    directory = Path(directory)
    validate_agency_id(agency_id)
    return _issue(
        directory,
        subject=_name(agency_id),
        sans=[x509.UniformResourceIdentifier(AGENCY_URI_PREFIX + agency_id)],
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
        folder=directory / AGENCIES,
        stem=agency_id,
        holder=agency_id,
        kind="agency",
        days=days,
        not_before=not_before,
    )


def _host_name(host: str) -> x509.GeneralName:
    """An IP literal becomes an IP SAN (clients dialling 127.0.0.1 check that), anything else a
    DNS SAN."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c.isspace() or c in "/:@" for c in host):
        raise PkiError(f"invalid server host name {host!r}")
    return x509.DNSName(host)


def issue_server(
    directory: Path,
    *,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    days: int = 397,
) -> IssuedCertificate:
    """Issue the gateway's server certificate (EKU serverAuth) for `hosts`, written to server.pem
    and server.key. Clients verify it against ca.pem, so no public CA is involved."""
    directory = Path(directory)
    names = list(dict.fromkeys(hosts))
    if not names:
        raise PkiError("a server certificate needs at least one host name or address")
    return _issue(
        directory,
        subject=_name(names[0]),
        sans=[_host_name(host) for host in names],
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        folder=directory,
        stem=SERVER_FILES,
        holder=SERVER_HOLDER,
        kind="server",
        days=days,
    )


def issue_console(
    directory: Path,
    name: str,
    *,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    days: int = 397,
) -> IssuedCertificate:
    """Issue a web console's certificate: URI SAN `urn:dutylink:console:<name>` plus `hosts`,
    EKU serverAuth (officers' browsers reach it over HTTPS) and clientAuth (it calls the
    gateway, which lets a console listed in `tls.consoles` relay officers' read-only calls).
    Written to consoles/<name>.pem and .key; revoke it as `console:<name>`."""
    directory = Path(directory)
    validate_agency_id(name)  # the same shape: it becomes a file name and a URI too
    names = list(dict.fromkeys(hosts))
    if not names:
        raise PkiError("a console certificate needs at least one host name or address")
    return _issue(
        directory,
        subject=_name(names[0]),
        sans=[x509.UniformResourceIdentifier(CONSOLE_URI_PREFIX + name)]
        + [_host_name(host) for host in names],
        usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        folder=directory / CONSOLES,
        stem=name,
        holder=CONSOLE_HOLDER_PREFIX + name,
        kind="console",
        days=days,
    )


def issue_front(directory: Path, name: str, *, days: int = 397) -> IssuedCertificate:
    """Issue a TLCP front's client certificate (EKU clientAuth only): URI SAN
    `urn:dutylink:front:<name>`. A gateway whose `tls.fronts` lists the name takes the calls it
    relays as the agency of the certificate it forwards (gateway.access.forwarded). Written to
    fronts/<name>.pem and .key; revoke it as `front:<name>`."""
    directory = Path(directory)
    validate_agency_id(name)  # the same shape: it becomes a file name and a URI too
    return _issue(
        directory,
        subject=_name(f"front {name}"),
        sans=[x509.UniformResourceIdentifier(FRONT_URI_PREFIX + name)],
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
        folder=directory / FRONTS,
        stem=name,
        holder=FRONT_HOLDER_PREFIX + name,
        kind="front",
        days=days,
    )


def revoke(directory: Path, agency_or_serial: str | int) -> list[int]:
    """Revoke one serial, or every certificate of an agency ("server" for the gateway's), and
    rewrite crl.pem. Returns the serials newly revoked; revoking again is harmless but re-signs
    the CRL (which also refreshes its nextUpdate)."""
    directory = Path(directory)
    ca_cert, ca_key = _load_ca(directory)
    issued = _load_issued(directory)
    target = str(agency_or_serial)
    if target.isascii() and target.isdigit():
        if target not in issued:
            raise PkiError(f"{directory / ISSUED}: no certificate with serial {target}")
        matches = [target]
    else:
        matches = [serial for serial, entry in issued.items() if entry.get("agency") == target]
        if not matches:
            raise PkiError(f"{directory / ISSUED}: no certificate was issued to {target!r}")
    now = _iso(_now())
    newly = []
    for serial in matches:
        if not issued[serial].get("revoked"):
            issued[serial]["revoked"] = True
            issued[serial]["revoked_at"] = now
            newly.append(int(serial))
    _save_issued(directory, issued)
    _write_crl(directory, ca_cert, ca_key, issued)
    return newly


def sign_crl(directory: Path, *, now: dt.datetime | None = None) -> Path:
    """Re-sign crl.pem as it stands (a higher CRLNumber, a fresh nextUpdate `CRL_VALIDITY` from
    `now`); gateways refuse calls once the list in force is past its nextUpdate (by default),
    so run this well within `CRL_VALIDITY` (e.g. daily). Returns crl.pem's path."""
    directory = Path(directory)
    ca_cert, ca_key = _load_ca(directory)
    _write_crl(directory, ca_cert, ca_key, _load_issued(directory), now)
    return directory / CRL


# --- parsing for the gateway (pure: bytes in, answer out) --------------------------------------


def _certificate(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as error:
        raise IdentityError(f"peer certificate is not a PEM certificate ({error})") from None


@dataclass(frozen=True)
class ClientIdentity:
    """Whom a client certificate names: an agency, or (`console`) a web console that relays
    its officers' read-only calls, or (`front`) a TLCP front that forwards its callers'
    certificates."""

    name: str
    console: bool = False
    front: bool = False

    @property
    def kind(self) -> str:
        return "console" if self.console else "front" if self.front else "agency"


_PREFIXES = {"agency": AGENCY_URI_PREFIX, "console": CONSOLE_URI_PREFIX, "front": FRONT_URI_PREFIX}


def _identity_of(certificate: x509.Certificate) -> ClientIdentity:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError(
            f"certificate {certificate.subject.rfc4514_string()} has no subjectAltName"
        ) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    named = [
        ClientIdentity(
            uri.removeprefix(prefix),
            console=prefix == CONSOLE_URI_PREFIX,
            front=prefix == FRONT_URI_PREFIX,
        )
        for uri in uris
        for prefix in _PREFIXES.values()
        if uri.startswith(prefix)
    ]
    if not named:
        raise IdentityError(
            f"certificate {certificate.subject.rfc4514_string()} has no "
            f"{AGENCY_URI_PREFIX}<agency> URI SAN"
        )
    if len(named) > 1:
        shown = ", ".join(f"{'' if n.kind == 'agency' else n.kind + ' '}{n.name}" for n in named)
        raise IdentityError(f"certificate names more than one agency or console: {shown}")
    (identity,) = named
    if not AGENCY_ID.fullmatch(identity.name) or identity.name == SERVER_HOLDER:
        prefix = _PREFIXES[identity.kind]
        raise IdentityError(f"malformed {identity.kind} in URI SAN: {prefix}{identity.name!r}")
    return identity


def _agency_of(certificate: x509.Certificate) -> str:
    identity = _identity_of(certificate)
    if identity.kind != "agency":
        raise IdentityError(
            f"certificate names the {identity.kind} {identity.name!r}, not an agency "
            f"({AGENCY_URI_PREFIX}<agency> URI SAN)"
        )
    return identity.name


def agency_of(cert_pem: bytes) -> str:
    """The agency named by the certificate's one `urn:dutylink:agency:<id>` URI SAN. The CN is
    ignored on purpose: it is free text, and two SANs would make the caller ambiguous."""
    return _agency_of(_certificate(cert_pem))


def check_client_certificate(cert_pem: bytes) -> str:
    """The agency of a certificate that is fit to be an agency's client certificate."""
    return _agency_of(_client_profile(_certificate(cert_pem)))


def client_identity(cert_pem: bytes) -> ClientIdentity:
    """The agency, console or front a certificate fit to be a client certificate names."""
    return client_identity_of(_certificate(cert_pem))


def client_identity_of(certificate: x509.Certificate) -> ClientIdentity:
    """`client_identity` of a parsed certificate."""
    return _identity_of(_client_profile(certificate))


def _client_profile(certificate: x509.Certificate) -> x509.Certificate:
    """`certificate` if it is fit to be a client certificate: not a CA, and with clientAuth in
    its EKU. BoringSSL already enforces both in the handshake; this is defence in depth for any
    path (a TLS-terminating proxy, a config mistake) that skips that check."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise IdentityError("a CA certificate cannot be a client certificate")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise IdentityError("client certificate has no extendedKeyUsage") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise IdentityError("certificate is not for client authentication (no clientAuth EKU)")
    return certificate


_LONG_AGO = dt.datetime.min.replace(tzinfo=dt.UTC)


class RevocationList:
    """A CRL whose signature was checked against the CA, answering "is this certificate
    revoked?" by (issuer, serial): serial numbers are only unique per issuer."""

    def __init__(
        self,
        issuer: x509.Name,
        serials: frozenset[int],
        next_update: dt.datetime | None,
        *,
        number: int | None = None,
        this_update: dt.datetime = _LONG_AGO,
        digest: bytes = b"",
    ) -> None:
        self.issuer = issuer
        self.serials = serials
        self.next_update = next_update
        # CRLNumber (None: the list has none) and thisUpdate tell a newer list from an older
        # one put back; `digest` (SHA-256 of the PEM) names the exact list.
        self.number = number
        self.this_update = this_update
        self.digest = digest

    @classmethod
    def load(cls, crl_pem: bytes, ca_cert_pem: bytes) -> RevocationList:
        """Parse and verify a CRL. Raises `PkiError` unless the CA issued and signed it: an
        unverified CRL could be swapped for an empty one to un-revoke a stolen certificate."""
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        except ValueError as error:
            raise PkiError(f"CA certificate is not PEM ({error})") from None
        try:
            crl = x509.load_pem_x509_crl(crl_pem)
        except ValueError as error:
            raise PkiError(f"CRL is not PEM ({error})") from None
        if crl.issuer != ca_cert.subject:
            raise PkiError(
                f"CRL was issued by {crl.issuer.rfc4514_string()}, "
                f"not by the CA {ca_cert.subject.rfc4514_string()}"
            )
        public_key = ca_cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PkiError(f"CA key is {type(public_key).__name__}, expected ECDSA P-256")
        if not crl.is_signature_valid(public_key):
            raise PkiError(
                f"CRL signature does not verify with the CA {ca_cert.subject.rfc4514_string()}"
            )
        serials = frozenset(entry.serial_number for entry in crl)
        try:
            number: int | None = crl.extensions.get_extension_for_class(
                x509.CRLNumber
            ).value.crl_number
        except x509.ExtensionNotFound:
            number = None
        return cls(
            crl.issuer,
            serials,
            crl.next_update_utc,
            number=number,
            this_update=crl.last_update_utc,
            digest=hashlib.sha256(crl_pem).digest(),
        )

    def is_stale(self, now: dt.datetime | None = None) -> bool:
        """True once nextUpdate has passed: the operator has stopped re-signing the list, and a
        gateway should alert rather than trust it forever."""
        if self.next_update is None:
            return False
        return (now or _now()) > self.next_update

    def is_revoked(self, cert_pem: bytes) -> bool:
        """Whether this CRL revokes the certificate. A certificate of another issuer is not
        covered by this list (the handshake has already refused it)."""
        certificate = _certificate(cert_pem)
        return certificate.issuer == self.issuer and certificate.serial_number in self.serials
