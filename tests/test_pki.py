"""The exchange PKI: real certificates, real files, and real mutual-TLS handshakes in grpcio."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from gateway.access import pki
from gateway.access.revocation import (
    ChangeKind,
    RevocationKeeper,
    RevocationUnavailableError,
    replacement_refusal,
)
from gateway.cli.pki import pki_app

METHOD = "/dutylink.test.WhoAmI/Call"
AUTH_KEYS_SEEN: list[str] = []
_PEM = serialization.Encoding.PEM


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA with a server certificate and two agencies, shared by the read-only tests."""
    directory = tmp_path_factory.mktemp("pki") / "exchange"
    pki.init_ca(directory)
    pki.issue_server(directory)
    pki.issue_agency(directory, "fire")
    pki.issue_agency(directory, "police")
    return directory


# --- files and certificate contents ------------------------------------------------------------


def test_private_keys_are_0600_and_directories_0700(ca_dir: Path) -> None:
    keys = [ca_dir / "ca.key", ca_dir / "server.key", *sorted((ca_dir / "agencies").glob("*.key"))]
    assert len(keys) >= 4
    assert {_mode(key) for key in keys} == {0o600}
    assert _mode(ca_dir) == 0o700 and _mode(ca_dir / "agencies") == 0o700
    assert not list(ca_dir.rglob("*.tmp")), "no temporary files are left behind"


def test_a_key_is_0600_even_when_it_replaces_a_looser_file(tmp_path: Path) -> None:
    """The key goes to a fresh file created 0600 and renamed over the old one, so an existing
    0644 file cannot leak its mode to the new key."""
    pki.init_ca(tmp_path)
    loose = tmp_path / "agencies" / "fire.key"
    loose.parent.mkdir(mode=0o700)
    loose.write_text("old")
    loose.chmod(0o644)
    pki.issue_agency(tmp_path, "fire")
    assert _mode(loose) == 0o600


def test_ca_certificate_is_a_p256_ca_limited_to_signing(ca_dir: Path) -> None:
    ca = _load(ca_dir / "ca.pem")
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    ca.verify_directly_issued_by(ca)


def test_agency_certificate_names_the_agency_in_its_uri_san_for_client_auth_only(
    ca_dir: Path,
) -> None:
    cert = _load(ca_dir / "agencies" / "fire.pem")
    cert.verify_directly_issued_by(_load(ca_dir / "ca.pem"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:dutylink:agency:fire"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.rfc4514_string() == "O=DutyLink,CN=fire"
    assert pki.agency_of(cert.public_bytes(_PEM)) == "fire"


def test_server_certificate_has_dns_and_ip_sans_for_server_auth_only(ca_dir: Path) -> None:
    cert = _load(ca_dir / "server.pem")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]


def test_register_records_every_issued_certificate(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    pki.issue_server(tmp_path)
    pki.issue_agency(tmp_path, "fire")
    issued = json.loads((tmp_path / "issued.json").read_text())
    assert [entry["agency"] for entry in issued.values()] == ["server", "fire"]
    fire = _load(tmp_path / "agencies" / "fire.pem")
    entry = issued[str(fire.serial_number)]
    assert entry["revoked"] is False
    assert entry["not_after"] == fire.not_valid_after_utc.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    "bad", ["Fire", "f", "9-1-1", "fire/../../x", "a" * 33, "fire\n", "server"]
)
def test_malformed_agency_ids_are_refused(ca_dir: Path, bad: str) -> None:
    with pytest.raises(pki.PkiError, match="invalid agency id"):
        pki.issue_agency(ca_dir, bad)


def test_init_refuses_to_replace_a_ca_unless_forced(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    old = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(pki.PkiError, match=r"ca\.pem: a CA already exists"):
        pki.init_ca(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == old
    pki.init_ca(tmp_path, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != old


def test_issuing_without_a_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match=r"ca\.pem: no CA certificate"):
        pki.issue_agency(tmp_path, "fire")


# --- agency_of and the client-certificate check ------------------------------------------------


def _foreign_certificate(uris: list[str], eku: x509.ObjectIdentifier) -> bytes:
    """A self-signed certificate with arbitrary URI SANs, for the parser's error paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "fire")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(_PEM)


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        ([], "no subjectAltName"),
        (["https://fire.example"], "no urn:dutylink:agency:<agency> URI SAN"),
        (["urn:dutylink:agency:fire", "urn:dutylink:agency:police"], "more than one agency"),
        (["urn:dutylink:agency:Fire!"], "malformed agency"),
        (["urn:dutylink:agency:"], "malformed agency"),
        (["urn:dutylink:agency:fire", "urn:dutylink:console:duty"], "more than one agency or"),
        (["urn:dutylink:console:duty"], "names the console 'duty', not an agency"),
        (["urn:dutylink:console:Duty!"], "malformed console"),
    ],
)
def test_agency_of_refuses_a_missing_ambiguous_or_malformed_san(
    uris: list[str], message: str
) -> None:
    """The CN says "fire" in every case; only the SAN counts."""
    with pytest.raises(pki.IdentityError, match=message):
        pki.agency_of(_foreign_certificate(uris, ExtendedKeyUsageOID.CLIENT_AUTH))


def test_agency_of_refuses_garbage() -> None:
    with pytest.raises(pki.IdentityError, match="not a PEM certificate"):
        pki.agency_of(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_check_client_certificate_wants_client_auth(ca_dir: Path) -> None:
    assert pki.check_client_certificate((ca_dir / "agencies" / "fire.pem").read_bytes()) == "fire"
    server_auth_only = _foreign_certificate(
        ["urn:dutylink:agency:fire"], ExtendedKeyUsageOID.SERVER_AUTH
    )
    with pytest.raises(pki.IdentityError, match="clientAuth"):
        pki.check_client_certificate(server_auth_only)


def test_a_console_certificate_serves_https_and_names_the_console_as_a_client(
    ca_dir: Path,
) -> None:
    issued = pki.issue_console(ca_dir, "duty-room", hosts=["127.0.0.1", "console.city"])
    assert issued.certificate == ca_dir / "consoles" / "duty-room.pem"
    assert issued.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["console.city"]
    pem = issued.certificate.read_bytes()
    assert pki.client_identity(pem) == pki.ClientIdentity("duty-room", console=True)
    with pytest.raises(pki.IdentityError, match="names the console"):
        pki.check_client_certificate(pem)  # never taken for an agency
    # In the register apart from any agency of the same name, and revocable by that name.
    assert pki.revoke(ca_dir, "console:duty-room") == [issued.serial]
    with pytest.raises(pki.PkiError, match="no certificate was issued to 'duty-room'"):
        pki.revoke(ca_dir, "duty-room")


# --- real mutual TLS in grpcio ------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    port: int
    ca_pem: bytes


async def _who_am_i(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    auth = context.auth_context()
    if not AUTH_KEYS_SEEN:
        AUTH_KEYS_SEEN.extend(sorted(auth))
        print("auth_context keys:", AUTH_KEYS_SEEN)
    return pki.agency_of(auth["x509_pem_cert"][0]).encode()


@pytest.fixture
async def server(ca_dir: Path) -> AsyncIterator[Server]:
    """A grpc.aio server that demands a client certificate from our CA and answers with the
    agency it names."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "dutylink.test.WhoAmI", {"Call": grpc.unary_unary_rpc_method_handler(_who_am_i)}
            )
        ]
    )
    ca_pem = (ca_dir / "ca.pem").read_bytes()
    credentials = grpc.ssl_server_credentials(
        [((ca_dir / "server.key").read_bytes(), (ca_dir / "server.pem").read_bytes())],
        root_certificates=ca_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    assert port > 0
    await server.start()
    try:
        yield Server(port, ca_pem)
    finally:
        await server.stop(None)


async def _call(server: Server, key: bytes | None = None, chain: bytes | None = None) -> bytes:
    """One RPC to 127.0.0.1 (the server certificate's IP SAN: no target-name override needed)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server.ca_pem, private_key=key, certificate_chain=chain
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        reply: bytes = await channel.unary_unary(METHOD)(b"", timeout=5)
        return reply


async def _refused(server: Server, key: bytes | None = None, chain: bytes | None = None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(server, key, chain)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()


def _pair(issued: pki.IssuedCertificate) -> tuple[bytes, bytes]:
    return issued.key.read_bytes(), issued.certificate.read_bytes()


async def test_each_agency_is_told_its_own_name(server: Server, ca_dir: Path) -> None:
    for agency in ("fire", "police"):
        key = (ca_dir / "agencies" / f"{agency}.key").read_bytes()
        chain = (ca_dir / "agencies" / f"{agency}.pem").read_bytes()
        assert await _call(server, key, chain) == agency.encode()
    assert {"x509_pem_cert", "x509_subject_alternative_name", "peer_uri"} <= set(AUTH_KEYS_SEEN)


async def test_no_client_certificate_is_refused(server: Server) -> None:
    await _refused(server)


async def test_a_certificate_from_another_ca_is_refused(server: Server, tmp_path: Path) -> None:
    pki.init_ca(tmp_path, name="DutyLink exchange CA")  # same name, different key
    await _refused(server, *_pair(pki.issue_agency(tmp_path, "fire")))


async def test_an_expired_certificate_is_refused(server: Server, ca_dir: Path) -> None:
    ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired = pki.issue_agency(ca_dir, "expired", days=1, not_before=ten_days_ago)
    await _refused(server, *_pair(expired))


async def test_a_not_yet_valid_certificate_is_refused(server: Server, ca_dir: Path) -> None:
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    await _refused(server, *_pair(pki.issue_agency(ca_dir, "future", not_before=tomorrow)))


async def test_a_server_auth_certificate_is_refused_as_a_client_certificate(
    server: Server, ca_dir: Path
) -> None:
    """BoringSSL checks the client certificate's EKU itself: the gateway's own certificate,
    though signed by the same CA, cannot be used to call it."""
    key = (ca_dir / "server.key").read_bytes()
    await _refused(server, key, (ca_dir / "server.pem").read_bytes())


# --- revocation ---------------------------------------------------------------------------------


def test_revoking_an_agency_lists_all_its_certificates_and_nothing_else(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    first = pki.issue_agency(tmp_path, "fire").certificate.read_bytes()
    second = pki.issue_agency(tmp_path, "fire").certificate.read_bytes()  # re-issued
    police = pki.issue_agency(tmp_path, "police").certificate.read_bytes()
    ca_pem = (tmp_path / "ca.pem").read_bytes()

    before = pki.RevocationList.load((tmp_path / "crl.pem").read_bytes(), ca_pem)
    assert not before.is_revoked(first) and not before.is_revoked(police)

    assert len(pki.revoke(tmp_path, "fire")) == 2
    after = pki.RevocationList.load((tmp_path / "crl.pem").read_bytes(), ca_pem)
    assert after.is_revoked(first) and after.is_revoked(second)
    assert not after.is_revoked(police)
    assert not after.is_stale()
    issued = json.loads((tmp_path / "issued.json").read_text())
    assert [e["revoked"] for e in issued.values()] == [True, True, False]


def test_revoking_one_serial(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    old = pki.issue_agency(tmp_path, "fire")
    new = pki.issue_agency(tmp_path, "fire")
    assert pki.revoke(tmp_path, str(old.serial)) == [old.serial]
    crl = pki.RevocationList.load(
        (tmp_path / "crl.pem").read_bytes(), (tmp_path / "ca.pem").read_bytes()
    )
    assert crl.serials == {old.serial} and not crl.is_revoked(new.certificate.read_bytes())
    with pytest.raises(pki.PkiError, match="no certificate with serial 12345"):
        pki.revoke(tmp_path, "12345")


def test_a_crl_signed_by_another_ca_is_rejected(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    pki.init_ca(ours)
    pki.init_ca(theirs)  # same subject name: only the signature tells them apart
    with pytest.raises(pki.PkiError, match="signature does not verify"):
        pki.RevocationList.load((theirs / "crl.pem").read_bytes(), (ours / "ca.pem").read_bytes())
    other = tmp_path / "other"
    pki.init_ca(other, name="Some other CA")
    with pytest.raises(pki.PkiError, match="not by the CA"):
        pki.RevocationList.load((other / "crl.pem").read_bytes(), (ours / "ca.pem").read_bytes())


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_happy_path(tmp_path: Path) -> None:
    runner = CliRunner()
    directory = str(tmp_path / "pki")

    def run(*args: str) -> str:
        result = runner.invoke(pki_app, [*args, "--dir", directory])
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "ca.pem" in run("init")
    assert "to fire" in run("issue", "fire", "--days", "30")
    assert "to police" in run("issue", "police")
    assert "to server" in run("server", "--host", "gw.dutylink.test", "--host", "127.0.0.1")
    assert "to console:duty-room" in run("console", "duty-room", "--host", "127.0.0.1")
    assert (tmp_path / "pki" / "consoles" / "duty-room.key").stat().st_mode & 0o777 == 0o600
    san = _load(tmp_path / "pki" / "server.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["gw.dutylink.test"]
    fire_serial = str(_load(tmp_path / "pki" / "agencies" / "fire.pem").serial_number)
    assert f"revoked {fire_serial}" in run("revoke", "fire")
    assert "CRL re-signed, valid for 7 days" in run("crl")
    resigned = pki.RevocationList.load(
        (tmp_path / "pki" / "crl.pem").read_bytes(), (tmp_path / "pki" / "ca.pem").read_bytes()
    )
    assert resigned.number == 3 and resigned.serials == {int(fire_serial)}

    listing = run("list")
    rows = {line.split("│")[1].strip(): line for line in listing.splitlines() if "│" in line}
    assert "CN=fire" in rows[fire_serial] and "yes" in rows[fire_serial]
    assert sum("CN=police" in row and " no " in row for row in rows.values()) == 1
    assert sum("CN=gw.dutylink.test" in row for row in rows.values()) == 1


def test_cli_init_twice_fails_naming_the_file(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(pki_app, ["init", "--dir", str(tmp_path)]).exit_code == 0
    result = runner.invoke(pki_app, ["init", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'ca.pem'}" in result.stderr and "--force" in result.stderr
    assert runner.invoke(pki_app, ["init", "--dir", str(tmp_path), "--force"]).exit_code == 0


def test_cli_errors_and_usage(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(pki_app, ["issue", "fire", "--dir", str(tmp_path)])
    assert missing.exit_code == 1 and "ca.pem: no CA certificate" in missing.stderr
    runner.invoke(pki_app, ["init", "--dir", str(tmp_path)])
    assert runner.invoke(pki_app, ["issue", "Fire", "--dir", str(tmp_path)]).exit_code == 2
    assert runner.invoke(pki_app, ["issue", "fire"]).exit_code == 2  # no --dir
    unknown = runner.invoke(pki_app, ["revoke", "nobody", "--dir", str(tmp_path)])
    assert unknown.exit_code == 1 and "'nobody'" in unknown.stderr


def test_a_crl_replaces_the_one_in_force_only_if_newer(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    first = pki.RevocationList.load((tmp_path / "crl.pem").read_bytes(), ca_pem)
    pki.sign_crl(tmp_path)
    second = pki.RevocationList.load((tmp_path / "crl.pem").read_bytes(), ca_pem)
    assert (first.number, second.number) == (1, 2)
    assert replacement_refusal(first, second) is None
    assert replacement_refusal(second, second) is None, "the same list again is no change"
    assert "CRL number 1 of" in (replacement_refusal(second, first) or "")


def test_the_keeper_notices_a_crl_outliving_its_next_update_without_a_new_file(
    tmp_path: Path,
) -> None:
    pki.init_ca(tmp_path)
    now = [dt.datetime.now(dt.UTC)]
    keeper = RevocationKeeper(
        tmp_path / "crl.pem", (tmp_path / "ca.pem").read_bytes(), clock=lambda: now[0]
    )
    assert keeper.current().number == 1 and keeper.problem is None
    now[0] += pki.CRL_VALIDITY + dt.timedelta(seconds=1)
    with pytest.raises(RevocationUnavailableError, match="past its nextUpdate"):
        keeper.current()
    kinds = [c.kind for c in keeper.take_changes()]
    assert kinds == [ChangeKind.LOADED, ChangeKind.UNUSABLE]
    keeper.refresh()
    assert keeper.take_changes() == [], "an unusable list is reported once"


def test_a_missing_crl_at_start_up_is_an_error_naming_the_file(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    (tmp_path / "crl.pem").unlink()
    with pytest.raises(pki.PkiError, match=r"crl\.pem: cannot read the CRL"):
        RevocationKeeper(tmp_path / "crl.pem", (tmp_path / "ca.pem").read_bytes())


def test_a_crl_missing_at_start_up_falls_back_to_the_kept_copy_under_the_policy(
    tmp_path: Path,
) -> None:
    pki.init_ca(tmp_path)
    ca_pem, kept = (tmp_path / "ca.pem").read_bytes(), tmp_path / "data" / "crl-in-force.pem"
    RevocationKeeper(tmp_path / "crl.pem", ca_pem, kept_file=kept)
    assert kept.read_bytes() == (tmp_path / "crl.pem").read_bytes()
    (tmp_path / "crl.pem").unlink()
    keeper = RevocationKeeper(tmp_path / "crl.pem", ca_pem, kept_file=kept, unusable="last_good")
    assert keeper.current().number == 1
    assert keeper.problem is not None and "No such file" in keeper.problem
