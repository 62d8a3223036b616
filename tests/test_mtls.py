"""Agencies authenticate with client certificates: the agency comes from the certificate only."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from dutylink.adapters.sdk.client import NO_RETRY, ClientCertificate, DutyLinkClient
from dutylink.v1 import audit_pb2
from gateway.access import pki
from gateway.core.settings import Agency, Config, ConfigError, TlsSettings
from gateway.server import Gateway
from gateway.store.audit_reader import read_log
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
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
async def tls_gateway(nats_url: str, authority: Path, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests(nats={"data_dir": str(tmp_path / "data")})
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
    # Asked once: the SDK would retry UNAVAILABLE for a minute.
    async with DutyLinkClient(
        target(tls_gateway), token=TOKENS["fire"], retry=NO_RETRY
    ) as plaintext:
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
    typo = tmp_path / "typo.toml"
    typo.write_text('[tls]\ncrl_unusable = "ignore"\n')
    with pytest.raises(ConfigError, match=r"typo\.toml: tls\.crl_unusable: expected one of refuse"):
        config.load(typo, environ={})


# --- the CRL in force: never rolled back, lost or outlived silently -----------------------------


def crl_config(authority: Path, tmp_path: Path, **tls: Any) -> Config:
    config = config_for_tests(nats={"data_dir": str(tmp_path / "data")})
    return dataclasses.replace(
        config,
        tls=TlsSettings(
            ca_file=str(authority / "ca.pem"),
            cert_file=str(authority / "server.pem"),
            key_file=str(authority / "server.key"),
            crl_file=str(authority / "crl.pem"),
            crl_check_seconds=0.05,
            **tls,
        ),
        agencies=(Agency("fire", "Fire and Rescue"), Agency("police", "Police")),
    )


async def publish_as(gateway: Gateway, authority: Path, agency: str) -> grpc.StatusCode:
    """The status of one Publish by `agency` (OK or the code it was refused with), asked once:
    the SDK would retry UNAVAILABLE for a minute."""
    async with DutyLinkClient(
        target(gateway), certificate=identity(authority, agency), retry=NO_RETRY
    ) as client:
        try:
            await client.publish(incident_event(), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def refusal(gateway: Gateway, authority: Path, agency: str) -> grpc.aio.AioRpcError:
    async with DutyLinkClient(
        target(gateway), certificate=identity(authority, agency), retry=NO_RETRY
    ) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.publish(incident_event(), timeout=10)
    return caught.value


async def revocation_entries(
    gateway: Gateway, nats_url: str, count: int
) -> list[audit_pb2.AuditEntry]:
    """The gateway's REVOCATION_LIST entries, once there are `count` of them."""
    connection = await nats.connect(nats_url)
    try:
        for _ in range(100):
            stored = await read_log(connection.jetstream(), gateway.config.gateway.gateway_id)
            entries = [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]
            found = [e for e in entries if e.action == audit_pb2.AUDIT_ACTION_REVOCATION_LIST]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    pytest.fail(f"fewer than {count} revocation-list entries in the audit log")


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` as an operator's copy would (a new file renamed over the old)."""
    path.with_name(f".{path.name}.new").write_bytes(data)
    path.with_name(f".{path.name}.new").replace(path)


async def test_an_older_crl_put_back_does_not_unrevoke_and_is_audited(
    nats_url: str, authority: Path, tmp_path: Path
) -> None:
    crl = authority / "crl.pem"
    before_revocation = crl.read_bytes()
    async with gateway_for_tests(nats_url, crl_config(authority, tmp_path)) as gateway:
        pki.revoke(authority, "fire")
        assert await publish_as(gateway, authority, "fire") == grpc.StatusCode.UNAUTHENTICATED
        replace_file(crl, before_revocation)
        refused = await refusal(gateway, authority, "fire")
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (refused.details() or "")
        assert await publish_as(gateway, authority, "police") == grpc.StatusCode.OK
        loaded, revoked, put_back = await revocation_entries(gateway, nats_url, 3)
    assert loaded.outcome == revoked.outcome == audit_pb2.AUDIT_OUTCOME_OK
    assert "number 1" in loaded.reason and "number 2" in revoked.reason
    assert put_back.outcome == audit_pb2.AUDIT_OUTCOME_INVALID
    assert "CRL number 1" in put_back.reason and "not newer than CRL number 2" in put_back.reason
    assert put_back.event_digest == hashlib.sha256(before_revocation).digest()


async def test_a_deleted_crl_refuses_calls_as_unavailable_until_it_is_back(
    nats_url: str, authority: Path, tmp_path: Path
) -> None:
    crl = authority / "crl.pem"
    kept = crl.read_bytes()
    async with gateway_for_tests(nats_url, crl_config(authority, tmp_path)) as gateway:
        crl.unlink()
        refused = await refusal(gateway, authority, "police")
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert f"{crl}: No such file or directory" in (refused.details() or "")
        assert "calls are refused until a current CRL is in place" in (refused.details() or "")
        replace_file(crl, kept)
        assert await publish_as(gateway, authority, "police") == grpc.StatusCode.OK
        _, missing, back = await revocation_entries(gateway, nats_url, 3)
    assert missing.outcome == audit_pb2.AUDIT_OUTCOME_FAILED
    assert "No such file" in missing.reason and "keeping CRL number 1 of " in missing.reason
    assert back.outcome == audit_pb2.AUDIT_OUTCOME_OK and "back in place" in back.reason


async def test_with_last_good_a_deleted_crl_keeps_its_revocations_in_force(
    nats_url: str, authority: Path, tmp_path: Path
) -> None:
    pki.revoke(authority, "fire")
    config = crl_config(authority, tmp_path, crl_unusable="last_good")
    async with gateway_for_tests(nats_url, config) as gateway:
        (authority / "crl.pem").unlink()
        assert await publish_as(gateway, authority, "police") == grpc.StatusCode.OK
        assert await publish_as(gateway, authority, "fire") == grpc.StatusCode.UNAUTHENTICATED
        _, missing = await revocation_entries(gateway, nats_url, 2)
    assert missing.outcome == audit_pb2.AUDIT_OUTCOME_FAILED
    assert "calls checked against it" in missing.reason


async def test_a_crl_past_its_next_update_refuses_calls_until_a_current_one_is_signed(
    nats_url: str, authority: Path, tmp_path: Path
) -> None:
    async with gateway_for_tests(nats_url, crl_config(authority, tmp_path)) as gateway:
        long_ago = dt.datetime.now(dt.UTC) - pki.CRL_VALIDITY - dt.timedelta(days=1)
        pki.sign_crl(authority, now=long_ago)  # newer by number, but outlived
        refused = await refusal(gateway, authority, "police")
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "CRL number 2" in (refused.details() or "")
        assert "past its nextUpdate" in (refused.details() or "")
        pki.sign_crl(authority)
        assert await publish_as(gateway, authority, "police") == grpc.StatusCode.OK
        _, stale_loaded, stale, current = await revocation_entries(gateway, nats_url, 4)
    assert stale_loaded.outcome == audit_pb2.AUDIT_OUTCOME_OK
    assert stale.outcome == audit_pb2.AUDIT_OUTCOME_FAILED and "past its nextUpdate" in stale.reason
    assert current.outcome == audit_pb2.AUDIT_OUTCOME_OK and "number 3" in current.reason


async def test_an_older_crl_put_back_while_the_gateway_was_stopped_is_refused_at_start(
    nats_url: str, authority: Path, tmp_path: Path
) -> None:
    crl = authority / "crl.pem"
    before_revocation = crl.read_bytes()
    pki.revoke(authority, "fire")
    config = crl_config(authority, tmp_path)
    async with gateway_for_tests(nats_url, config):
        pass
    replace_file(crl, before_revocation)
    async with gateway_for_tests(nats_url, config) as gateway:
        assert await publish_as(gateway, authority, "fire") == grpc.StatusCode.UNAUTHENTICATED
        assert await publish_as(gateway, authority, "police") == grpc.StatusCode.OK
        first_start, kept, put_back = await revocation_entries(gateway, nats_url, 3)
    assert "CRL number 2" in first_start.reason and "CRL number 2" in kept.reason
    assert "(kept)" in kept.reason
    assert put_back.outcome == audit_pb2.AUDIT_OUTCOME_INVALID
    assert "CRL number 1" in put_back.reason and "not newer than CRL number 2" in put_back.reason
