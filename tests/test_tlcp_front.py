"""A TLCP-terminating front before the gateway (docs/tlcp-front.md): the front calls over mutual
TLS with its own certificate and forwards its caller's SM2 certificate; the gateway checks that
certificate itself (issued by the agencies' national CA, valid now, naming one configured
agency) and audits the call as the agency's, through that front. What cannot be tested here is
TLCP itself: no TLCP stack installs on this machine (docs/tlcp-front.md says which fronts)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dutylink.v1 import audit_pb2, gateway_pb2, gateway_pb2_grpc
from gateway import config
from gateway.access import pki
from gateway.access.forwarded import (
    FORWARDED_CERT,
    forwarded_identity,
    load_authorities,
    sm2_public_key,
)
from gateway.access.pki import IdentityError
from gateway.core.settings import ConfigError, TlsSettings
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests import sm2_certificates as sm2
from tests.factories import incident_event
from tests.test_audit_facts import logged


def now() -> dt.datetime:
    """The time of the check (never of the import: a full run collects minutes earlier)."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def national_ca() -> sm2.Sm2Party:
    return sm2.party("Municipal SM2 CA")


def ca_pem(ca: sm2.Sm2Party) -> bytes:
    der = sm2.certificate(ca, ca, serial=1, ca=True, days=3650)
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def forwarded(ca: sm2.Sm2Party, agency: str, *, not_before: dt.datetime | None = None) -> str:
    """Base64 DER, as a front forwards it: `agency`'s SM2 certificate issued by `ca`."""
    der = sm2.certificate(
        sm2.party(agency),
        ca,
        serial=1000 + len(agency),
        uri=f"urn:dutylink:agency:{agency}",
        not_before=not_before,
    )
    return base64.b64encode(der).decode()


# --- the check of a forwarded certificate -------------------------------------------------------


def test_an_sm2_certificate_of_the_national_ca_names_its_agency(national_ca: sm2.Sm2Party) -> None:
    authorities = load_authorities(ca_pem(national_ca))
    assert sm2_public_key(authorities[0]) == national_ca.public
    identity = forwarded_identity(forwarded(national_ca, "fire"), authorities, now())
    assert identity.name == "fire" and identity.kind == "agency"


def test_a_forged_expired_or_foreign_certificate_is_refused(national_ca: sm2.Sm2Party) -> None:
    authorities = load_authorities(ca_pem(national_ca))
    impostor = sm2.party("Municipal SM2 CA")  # the same name, another key
    with pytest.raises(IdentityError, match="signature does not verify"):
        forwarded_identity(forwarded(impostor, "fire"), authorities, now())
    foreign = sm2.party("Another CA")
    with pytest.raises(IdentityError, match="issuer 'CN=Another CA' is not a CA of"):
        forwarded_identity(forwarded(foreign, "fire"), authorities, now())
    long_ago = now() - dt.timedelta(days=400)
    with pytest.raises(IdentityError, match="not valid now"):
        forwarded_identity(forwarded(national_ca, "fire", not_before=long_ago), authorities, now())
    der = bytearray(base64.b64decode(forwarded(national_ca, "fire")))
    der[-3] ^= 0x01  # inside the signature
    with pytest.raises(IdentityError, match="signature does not verify"):
        forwarded_identity(base64.b64encode(bytes(der)).decode(), authorities, now())
    with pytest.raises(IdentityError, match="holds no certificate"):
        forwarded_identity("not a certificate", authorities, now())
    with pytest.raises(IdentityError, match="longer than 8192 bytes"):
        forwarded_identity("A" * 20_000, authorities, now())


def test_nginx_s_url_encoded_pem_is_read_too(national_ca: sm2.Sm2Party) -> None:
    """What a Tengine/Tongsuo front sends with `$ssl_client_escaped_cert` (deploy/tlcp/)."""
    der = base64.b64decode(forwarded(national_ca, "health"))
    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
    escaped = urllib.parse.quote(pem, safe="")
    authorities = load_authorities(ca_pem(national_ca))
    assert forwarded_identity(escaped, authorities, now()).name == "health"


def test_a_forwarded_certificate_must_name_an_agency(national_ca: sm2.Sm2Party) -> None:
    authorities = load_authorities(ca_pem(national_ca))
    holder = sm2.party("tlcp-2")
    der = sm2.certificate(holder, national_ca, serial=9, uri="urn:dutylink:front:tlcp-2")
    with pytest.raises(IdentityError, match="must name an agency"):
        forwarded_identity(base64.b64encode(der).decode(), authorities, now())


def test_an_ecdsa_certificate_of_a_listed_ca_is_checked_alike(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    pki.issue_agency(tmp_path, "police")
    authorities = load_authorities((tmp_path / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "agencies" / "police.pem").read_bytes())
    der = cert.public_bytes(Encoding.DER)
    assert forwarded_identity(base64.b64encode(der).decode(), authorities, now()).name == "police"


# --- through a front, end to end over mutual TLS ---------------------------------------------------


@pytest.fixture
def exchange(tmp_path: Path, national_ca: sm2.Sm2Party) -> Path:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    pki.issue_server(directory)
    pki.issue_agency(directory, "police")
    pki.issue_front(directory, "tlcp-1")
    pki.issue_front(directory, "unlisted")
    (directory / "national-ca.pem").write_bytes(ca_pem(national_ca))
    return directory


def tls(exchange: Path, **settings: object) -> TlsSettings:
    return TlsSettings(
        ca_file=str(exchange / "ca.pem"),
        cert_file=str(exchange / "server.pem"),
        key_file=str(exchange / "server.key"),
        crl_file=str(exchange / "crl.pem"),
        **settings,
    )


@pytest.fixture
async def gateway(nats_url: str, exchange: Path, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests(nats={"data_dir": str(tmp_path / "data")})
    config = dataclasses.replace(
        config,
        tls=tls(exchange, fronts=("tlcp-1",), front_ca_file=str(exchange / "national-ca.pem")),
    )
    async with gateway_for_tests(nats_url, config) as started:
        yield started


def channel(gateway: Gateway, exchange: Path, holder: str) -> grpc.aio.Channel:
    kind, name = holder.split("/")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(exchange / "ca.pem").read_bytes(),
        private_key=(exchange / kind / f"{name}.key").read_bytes(),
        certificate_chain=(exchange / kind / f"{name}.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(gateway.address, credentials)


async def publish_as(
    gateway: Gateway, exchange: Path, holder: str, metadata: list[tuple[str, str]]
) -> gateway_pb2.PublishResponse:
    async with channel(gateway, exchange, holder) as open_channel:
        stub = gateway_pb2_grpc.PublisherServiceStub(open_channel)
        event = incident_event()
        event.source = ""
        return await stub.Publish(gateway_pb2.PublishRequest(event=event), metadata=metadata)


async def test_a_listed_front_publishes_as_the_agency_it_forwards_and_is_audited(
    gateway: Gateway, exchange: Path, national_ca: sm2.Sm2Party, nats_url: str
) -> None:
    fire = [(FORWARDED_CERT, forwarded(national_ca, "fire"))]
    response = await publish_as(gateway, exchange, "fronts/tlcp-1", fire)
    entries = await logged(nats_url)
    (accepted,) = [
        e
        for e in entries
        if e.event_id == response.receipt.event_id and e.outcome == audit_pb2.AUDIT_OUTCOME_ACCEPTED
    ]
    assert accepted.actor_agency == "fire"
    assert accepted.reason == "through front tlcp-1"


@pytest.mark.parametrize(
    ("holder", "forwarding", "refusal"),
    [
        ("fronts/unlisted", "fire", "front 'unlisted' may not forward calls"),
        ("fronts/tlcp-1", None, "must forward its caller's certificate"),
        ("fronts/tlcp-1", "nobody", "forwards agency 'nobody', which is not configured"),
        ("fronts/tlcp-1", "forged", "signature does not verify"),
    ],
)
async def test_what_a_front_cannot_do(
    gateway: Gateway,
    exchange: Path,
    national_ca: sm2.Sm2Party,
    holder: str,
    forwarding: str | None,
    refusal: str,
) -> None:
    if forwarding is None:
        metadata = []
    elif forwarding == "forged":
        metadata = [(FORWARDED_CERT, forwarded(sm2.party("Municipal SM2 CA"), "fire"))]
    else:
        metadata = [(FORWARDED_CERT, forwarded(national_ca, forwarding))]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await publish_as(gateway, exchange, holder, metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refusal in (refused.value.details() or "")


async def test_an_agency_cannot_pass_itself_off_as_another_by_forwarding(
    gateway: Gateway, exchange: Path, national_ca: sm2.Sm2Party
) -> None:
    """The forwarded certificate counts only from a front: an agency sending one is itself."""
    fire = [(FORWARDED_CERT, forwarded(national_ca, "fire"))]
    response = await publish_as(gateway, exchange, "agencies/police", fire)
    assert response.receipt.event_id  # published, as police: the metadata was not read


def test_fronts_need_their_ca_and_tls(tmp_path: Path) -> None:
    tls_files = {
        f"DUTYLINK_TLS_{k}": str(tmp_path / k) for k in ("CA_FILE", "CERT_FILE", "KEY_FILE")
    }
    fronts = {"DUTYLINK_TLS_FRONTS": "tlcp-1, tlcp-2"}
    ca = {"DUTYLINK_TLS_FRONT_CA_FILE": str(tmp_path / "national-ca.pem")}
    assert config.load(None, environ={**tls_files, **fronts, **ca}).tls.fronts == (
        "tlcp-1",
        "tlcp-2",
    )
    for missing in ({**tls_files, **fronts}, {**fronts, **ca}, {**tls_files, **ca}):
        with pytest.raises(ConfigError, match=r"fronts need \[tls\] and tls.front_ca_file"):
            config.load(None, environ=missing)


async def test_a_revoked_front_is_shut_out(
    gateway: Gateway, exchange: Path, national_ca: sm2.Sm2Party
) -> None:
    fire = [(FORWARDED_CERT, forwarded(national_ca, "fire"))]
    assert (await publish_as(gateway, exchange, "fronts/tlcp-1", fire)).receipt.event_id
    pki.revoke(exchange, "front:tlcp-1")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await publish_as(gateway, exchange, "fronts/tlcp-1", fire)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "the certificate of front 'tlcp-1' is revoked" in (refused.value.details() or "")
