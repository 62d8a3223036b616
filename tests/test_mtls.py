"""Agencies authenticate with client certificates: the agency comes from the certificate only."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from adapters.client import ClientCertificate, DutyLinkClient
from gateway import pki
from gateway.config import Agency, ConfigError, TlsSettings
from gateway.server import Gateway
from gateway.testing import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event


@pytest.fixture
def authority(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    pki.issue_server(directory)
    for agency in ("fire", "police", "stranger"):
        pki.issue_agency(directory, agency)
    return directory


@pytest.fixture
async def tls_gateway(nats_url: str, authority: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests()
    config = dataclasses.replace(
        config,
        tls=TlsSettings(
            ca_file=str(authority / "ca.pem"),
            cert_file=str(authority / "server.pem"),
            key_file=str(authority / "server.key"),
            crl_file=str(authority / "crl.pem"),
        ),
        agencies=(Agency("fire", "Fire and Rescue"), Agency("police", "Police")),
    )
    async with gateway_for_tests(nats_url, config) as gateway:
        yield gateway


def identity(authority: Path, agency: str) -> ClientCertificate:
    return ClientCertificate.from_files(
        authority / "ca.pem",
        authority / "agencies" / f"{agency}.pem",
        authority / "agencies" / f"{agency}.key",
    )


def target(gateway: Gateway) -> str:
    return f"localhost:{gateway.port}"


async def test_the_certificate_names_the_agency_that_publishes(
    tls_gateway: Gateway, authority: Path
) -> None:
    async with DutyLinkClient(
        target(tls_gateway), certificate=identity(authority, "police")
    ) as police:
        subscription = police.subscribe("mtls", families=["incident"])
        await subscription.open()
        async with DutyLinkClient(
            target(tls_gateway), certificate=identity(authority, "fire")
        ) as fire:
            receipt = await fire.publish(incident_event())
        delivery = await subscription.next(timeout=10)
        assert delivery is not None
        assert delivery.event.source == "fire"
        assert delivery.stream_sequence == receipt.stream_sequence
        await subscription.close()


async def test_a_certificate_claiming_another_source_is_permission_denied(
    tls_gateway: Gateway, authority: Path
) -> None:
    event = incident_event()
    event.source = "police"
    async with DutyLinkClient(target(tls_gateway), certificate=identity(authority, "fire")) as fire:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fire.publish(event)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_token_without_a_certificate_cannot_connect(tls_gateway: Gateway) -> None:
    async with DutyLinkClient(target(tls_gateway), token=TOKENS["fire"]) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await plaintext.publish(incident_event(), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_valid_certificate_of_an_unconfigured_agency_is_unauthenticated(
    tls_gateway: Gateway, authority: Path
) -> None:
    async with DutyLinkClient(
        target(tls_gateway), certificate=identity(authority, "stranger")
    ) as stranger:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stranger.publish(incident_event())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not configured" in (caught.value.details() or "")


async def test_a_revoked_certificate_is_refused_as_soon_as_the_crl_changes(
    tls_gateway: Gateway, authority: Path
) -> None:
    async with DutyLinkClient(target(tls_gateway), certificate=identity(authority, "fire")) as fire:
        await fire.publish(incident_event())
        pki.revoke(authority, "fire")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fire.publish(incident_event())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (caught.value.details() or "")
    async with DutyLinkClient(
        target(tls_gateway), certificate=identity(authority, "police")
    ) as police:
        assert (await police.publish(incident_event())).stream_sequence > 0


def test_tls_files_come_together_and_token_less_agencies_need_tls(tmp_path: Path) -> None:
    from gateway import config

    partial = tmp_path / "partial.toml"
    partial.write_text('[tls]\ncert_file = "server.pem"\n')
    with pytest.raises(ConfigError, match="ca_file, cert_file and key_file go together"):
        config.load(partial, environ={})
    tokenless = tmp_path / "tokenless.toml"
    tokenless.write_text('[[agencies]]\nid = "fire"\nname = "Fire"\n')
    with pytest.raises(ConfigError, match="every agency needs a token"):
        config.load(tokenless, environ={})
