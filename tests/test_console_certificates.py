"""Client-certificate login for the console beside a mutual-TLS gateway, real end to end: a
real PKI (`dutylink pki`), a real NATS and gateway with the sample policies serving TLS only,
the console over HTTPS with its own certificate, and officers' browsers (aiohttp, and a headless
Chromium through Playwright) presenting their agency's client certificate.

The console relays each read as the officer's agency: the gateway answers as it answers that
agency (transport never sees the reporter), lets only a console it lists in `tls.consoles`
relay, only read-only calls, and audits each relayed call as relayed. A revoked officer is shut
out at the next request; an agency's own certificate can never act for another agency."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import nats
import pytest
from playwright.async_api import expect

from dutylink.adapters.sdk.client import NO_RETRY, ClientCertificate, DutyLinkClient
from dutylink.v1 import audit_pb2, event_pb2
from gateway.access import pki
from gateway.cli.console import certificate_console
from gateway.cli.demo_scenario import scenario
from gateway.cli.startup import console_beside
from gateway.console import app as console_app
from gateway.core.settings import Config, TlsSettings, WebConsoleSettings
from gateway.server import Gateway
from gateway.store.audit_reader import read_log
from gateway.testkit.inprocess import config_for_tests, free_port, gateway_for_tests
from tests.test_console import browser

CONSOLE = "duty-room"
WAIT_S = 15


@pytest.fixture
def authority(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    pki.issue_server(directory)
    for agency in ("fire", "transport"):
        pki.issue_agency(directory, agency)
    for console in (CONSOLE, "rogue"):
        pki.issue_console(directory, console, hosts=["127.0.0.1"])
    return directory


def tls_config(authority: Path, policy_dir: Path, tmp_path: Path, **tls: Any) -> Config:
    config = config_for_tests(
        policy={"dir": str(policy_dir)}, nats={"data_dir": str(tmp_path / "data")}
    )
    files = TlsSettings(
        ca_file=str(authority / "ca.pem"),
        cert_file=str(authority / "server.pem"),
        key_file=str(authority / "server.key"),
        crl_file=str(authority / "crl.pem"),
        **tls,
    )
    return dataclasses.replace(config, tls=files)


@pytest.fixture
async def gateway(
    nats_url: str, authority: Path, policy_dir: Path, tmp_path: Path
) -> AsyncIterator[Gateway]:
    config = tls_config(authority, policy_dir, tmp_path, consoles=(CONSOLE,))
    async with gateway_for_tests(nats_url, config) as started:
        yield started


def agency(authority: Path, name: str) -> ClientCertificate:
    folder = authority / "agencies"
    return ClientCertificate.from_files(
        authority / "ca.pem", folder / f"{name}.pem", folder / f"{name}.key"
    )


def console(authority: Path, name: str = CONSOLE) -> ClientCertificate:
    folder = authority / "consoles"
    return ClientCertificate.from_files(
        authority / "ca.pem", folder / f"{name}.pem", folder / f"{name}.key"
    )


async def reported(gateway: Gateway, authority: Path) -> event_pb2.Event:
    """Fire's incident report (exercise plane), stored; its reporter is withheld from transport."""
    report = scenario(datetime.now(UTC))[0]
    assert report.agency == "fire" and report.event.incident.reporter.phone
    async with DutyLinkClient(gateway.address, certificate=agency(authority, "fire")) as fire:
        await fire.publish(report.event)
    return report.event


async def relayed_entries(nats_url: str, gateway: Gateway) -> list[audit_pb2.AuditEntry]:
    connection = await nats.connect(nats_url)
    try:
        stored = await read_log(connection.jetstream(), gateway.config.gateway.gateway_id)
    finally:
        await connection.close()
    entries = [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]
    return [e for e in entries if f"(relayed by console {CONSOLE})" in e.reason]


# --- the gateway's side -------------------------------------------------------------------------


async def test_a_listed_console_reads_as_the_officers_agency_and_is_audited_as_relaying(
    gateway: Gateway, authority: Path, nats_url: str
) -> None:
    report = await reported(gateway, authority)
    incident_id = report.incident.incident_id
    async with DutyLinkClient(
        gateway.address, certificate=console(authority), acting_for="transport"
    ) as relay:
        incident = await relay.incident(incident_id, plane=event_pb2.PLANE_EXERCISE)
    (entry,) = incident.timeline
    assert entry.event.id == report.id
    assert not entry.event.incident.HasField("reporter")  # transport's policy, as for transport
    (audited,) = await relayed_entries(nats_url, gateway)
    assert audited.action == audit_pb2.AUDIT_ACTION_BOARD_QUERY
    assert audited.actor_agency == "transport"
    assert incident_id in audited.incident_ids


async def test_a_console_relays_reads_only(gateway: Gateway, authority: Path) -> None:
    report = await reported(gateway, authority)
    async with DutyLinkClient(
        gateway.address, certificate=console(authority), acting_for="fire", retry=NO_RETRY
    ) as relay:
        with pytest.raises(grpc.aio.AioRpcError) as publishing:
            await relay.publish(report)
        subscription = relay.subscribe("relayed", families=["incident"])
        with pytest.raises(grpc.aio.AioRpcError) as subscribing:
            await subscription.open()
    for caught in (publishing, subscribing):
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"console {CONSOLE} may relay read-only calls only" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("name", "acting_for", "message"),
    [
        ("rogue", "fire", "console 'rogue' may not relay calls to this gateway"),
        (CONSOLE, None, "must name the one agency it acts for"),
        (CONSOLE, "nobody", "acts for agency 'nobody', which is not configured"),
    ],
)
async def test_an_unlisted_console_or_one_acting_for_no_known_agency_is_unauthenticated(
    gateway: Gateway, authority: Path, name: str, acting_for: str | None, message: str
) -> None:
    async with DutyLinkClient(
        gateway.address, certificate=console(authority, name), acting_for=acting_for
    ) as relay:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await relay.board(plane=event_pb2.PLANE_EXERCISE)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in (caught.value.details() or "")


async def test_an_agency_certificate_cannot_act_for_another_agency(
    gateway: Gateway, authority: Path
) -> None:
    report = await reported(gateway, authority)
    async with DutyLinkClient(
        gateway.address, certificate=agency(authority, "transport"), acting_for="fire"
    ) as transport:
        incident = await transport.incident(
            report.incident.incident_id, plane=event_pb2.PLANE_EXERCISE
        )
    # Still transport (the metadata is not read for an agency's own certificate).
    assert not incident.timeline[0].event.incident.HasField("reporter")


# --- the console's side -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def https_console(gateway: Gateway, authority: Path) -> AsyncIterator[str]:
    folder = authority / "consoles"
    settings, https = certificate_console(
        gateway.address,
        ca_file=authority / "ca.pem",
        cert_file=folder / f"{CONSOLE}.pem",
        key_file=folder / f"{CONSOLE}.key",
        crl_file=authority / "crl.pem",
        zone="Asia/Shanghai",
    )
    async with console_app.serving(settings, "127.0.0.1", 0, https) as base:
        yield base


def officer_tls(authority: Path, pem: Path | None, key: Path | None) -> ssl.SSLContext:
    """A browser's TLS: trusts the exchange CA (the console's certificate), presents `pem`."""
    context = ssl.create_default_context(cafile=str(authority / "ca.pem"))
    if pem is not None and key is not None:
        context.load_cert_chain(str(pem), str(key))
    return context


async def test_officers_log_in_by_certificate_and_a_revoked_one_is_shut_out(
    gateway: Gateway, authority: Path
) -> None:
    report = await reported(gateway, authority)
    folder = authority / "agencies"
    transport = officer_tls(authority, folder / "transport.pem", folder / "transport.key")
    as_console = officer_tls(
        authority, authority / "consoles" / "rogue.pem", authority / "consoles" / "rogue.key"
    )
    async with https_console(gateway, authority) as base, aiohttp.ClientSession() as http:
        assert base.startswith("https://127.0.0.1:")
        with pytest.raises(aiohttp.ClientError):  # no certificate: the handshake fails
            await http.get(f"{base}/api/board", ssl=officer_tls(authority, None, None))
        async with http.get(f"{base}/login", ssl=transport) as login:
            assert login.status == 200 and login.url.path == "/"  # the certificate is the login
            assert 'data-testid="officer">transport<' in await login.text()
        async with http.get(f"{base}/api/board?plane=EXERCISE", ssl=transport) as answer:
            assert answer.status == 200
            board = await answer.json()
        assert [i["incident_id"] for i in board["incidents"]] == [report.incident.incident_id]
        async with http.get(f"{base}/api/board", ssl=as_console) as refused:
            assert refused.status == 401
            assert "names no officer" in (await refused.json())["error"]

        pki.revoke(authority, "transport")
        async with http.get(f"{base}/api/board", ssl=transport) as revoked:
            assert revoked.status == 401
            assert "revoked" in (await revoked.json())["error"]
        async with http.get(f"{base}/", ssl=transport) as page:
            assert page.status == 403 and "revoked" in await page.text()


async def test_a_gateway_serves_its_own_console_over_https_and_lets_it_relay(
    nats_url: str, authority: Path, policy_dir: Path, tmp_path: Path
) -> None:
    """`[console]` beside `[tls]`: no tls.consoles entry needed for the console configured
    here (and none other is trusted)."""
    folder = authority / "consoles"
    beside = WebConsoleSettings(
        listen=f"127.0.0.1:{free_port()}",
        cert_file=str(folder / f"{CONSOLE}.pem"),
        key_file=str(folder / f"{CONSOLE}.key"),
    )
    config = dataclasses.replace(tls_config(authority, policy_dir, tmp_path), console=beside)
    officer = officer_tls(
        authority, authority / "agencies" / "fire.pem", authority / "agencies" / "fire.key"
    )
    async with (
        gateway_for_tests(nats_url, config) as started,
        console_beside(started.address, config) as base,
        aiohttp.ClientSession() as http,
    ):
        assert base.startswith("https://")
        async with http.get(f"{base}/api/board?plane=EXERCISE", ssl=officer) as answer:
            assert answer.status == 200 and await answer.json() == {}
        async with DutyLinkClient(
            started.address, certificate=console(authority, "rogue"), acting_for="fire"
        ) as rogue:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await rogue.board()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_browser_with_its_agency_certificate_sees_the_board_live_as_that_agency(
    gateway: Gateway, authority: Path, tmp_path: Path
) -> None:
    async with https_console(gateway, authority) as base:
        certificate = {
            "origin": base,
            "certPath": str(authority / "agencies" / "transport.pem"),
            "keyPath": str(authority / "agencies" / "transport.key"),
        }
        # The console's certificate chains to the exchange CA, which this fresh browser
        # profile does not hold; the officer's own certificate is what is under test.
        async with browser(
            tmp_path / "profile", client_certificates=[certificate], ignore_https_errors=True
        ) as context:
            page = await context.new_page()
            await page.goto(f"{base}/?plane=EXERCISE")
            await expect(page.get_by_test_id("officer")).to_have_text("transport")
            await expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
            await asyncio.sleep(0.5)  # the gateway has the watch open before the report
            report = await reported(gateway, authority)
            incident_id, reporter = report.incident.incident_id, report.incident.reporter
            row = page.locator(f'[data-testid="incident-row"][data-incident-id="{incident_id}"]')
            await expect(row).to_be_visible(timeout=WAIT_S * 1000)  # live: no reload
            await row.get_by_test_id("incident-link").click()
            await expect(page.get_by_test_id("entry-source")).to_have_text("fire")
            content = await page.content()
            assert reporter.phone not in content and reporter.name not in content
