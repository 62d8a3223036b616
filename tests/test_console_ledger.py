"""The ledger page (资源台账), real end to end: a real NATS and gateway, the console on loopback
and a headless Chromium. Health's duty officer opens its ledger and sees its declared
ambulances all available; when health reserves two for fire's request (the messages name an
incident, so the board's event stream announces the change), the page shows two available and
two reserved without a reload. The command centre chooses health's ledger from the agencies the
console knows; fire, asking for health's, is shown the gateway's refusal.

A screenshot for docs/console.md goes to docs/console/ only with DUTYLINK_SCREENSHOTS=1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.console import app as console_app
from gateway.console.ledger_pages import chooser
from gateway.console.queries import BadQuery, agency_of
from gateway.console.state import ConsoleSettings
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.loop_support import declare, now, request, respond
from tests.test_console import browser, log_in, screenshot_dir

# Under the page's 15 s re-read: the change must come through the board's event stream.
CHANGE_MS = 10_000
KNOWN = ("command", "fire", "health")


@pytest.fixture
async def gateway(nats_url: str) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url, config_for_tests()) as g:
        yield g


@contextlib.asynccontextmanager
async def serving(address: str) -> AsyncIterator[str]:
    """The console, told of a few agencies to offer the command centre."""
    settings = ConsoleSettings(
        connect=lambda token: DutyLinkClient(address, token=token), agencies=KNOWN
    )
    async with console_app.serving(settings, "127.0.0.1", 0) as base:
        yield base


async def open_ledger(page: Page, console: str, agency: str, query: str = "") -> None:
    await log_in(page, console, agency)
    await page.get_by_test_id("nav-ledger").click()
    if query:
        await page.goto(f"{console}/ledger?{query}")
    await expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")


async def test_an_officer_sees_its_ledger_change_live_and_the_command_centre_chooses_any(
    gateway: Gateway, tmp_path: Path
) -> None:
    async with DutyLinkClient(gateway.address, token=TOKENS["health"]) as health:
        await health.publish(declare("AMB-C", 4, threshold=3))
    async with serving(gateway.address) as console, browser(tmp_path / "health") as context:
        page = await context.new_page()
        await open_ledger(page, console, "health")
        await expect(page.get_by_test_id("ledger-owner")).to_have_text("health")
        row = page.locator('[data-testid="ledger-row"][data-item-id="AMB-C"]')
        await expect(row.get_by_test_id("ledger-available")).to_have_text("4")
        await expect(row.get_by_test_id("ledger-total")).to_have_text("4")
        await expect(row.get_by_test_id("ledger-mark")).to_have_text("")
        await expect(page.locator("#ledger-agency-field")).to_be_hidden()  # its own only

        request_event = request("RM-CONSOLE", 2)
        reservation = respond("RM-CONSOLE", "AMB-C", "health", 2,
                              reserved_until=now() + timedelta(hours=2))  # fmt: skip
        for event in (request_event, reservation):
            event.resource.incident_id = "INC-LEDGER-1"  # on the board: the page hears of it
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            await fire.publish(request_event)
        async with DutyLinkClient(gateway.address, token=TOKENS["health"]) as health:
            await health.publish(reservation)
        await expect(row.get_by_test_id("ledger-available")).to_have_text("2", timeout=CHANGE_MS)
        await expect(row.get_by_test_id("ledger-reserved")).to_have_text("2")
        await expect(row.get_by_test_id("ledger-mark")).to_have_text("低于阈值")
        await expect(row.get_by_test_id("ledger-holdings")).to_contain_text("RM-CONSOLE/1 预留 2")

        shots = screenshot_dir(tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(shots / "ledger.png"), full_page=True)
        await page.get_by_test_id("language-switch").click()  # the labels follow the switch
        await expect(row.get_by_test_id("ledger-mark")).to_have_text("Below threshold")

    async with serving(gateway.address) as console, browser(tmp_path / "command") as context:
        page = await context.new_page()
        await open_ledger(page, console, "command")
        await expect(page.get_by_test_id("ledger-owner")).to_have_text("command")
        await expect(page.get_by_test_id("ledger-empty")).to_be_visible()
        chooser = page.get_by_test_id("ledger-agency")
        await expect(chooser).to_be_visible()
        await chooser.select_option("health")
        await expect(page.get_by_test_id("ledger-owner")).to_have_text("health")
        row = page.locator('[data-testid="ledger-row"][data-item-id="AMB-C"]')
        await expect(row.get_by_test_id("ledger-available")).to_have_text("2")
        assert "agency=health" in page.url

    async with serving(gateway.address) as console, browser(tmp_path / "fire") as context:
        page = await context.new_page()
        await open_ledger(page, console, "fire", "agency=health")
        await expect(page.get_by_test_id("problem")).to_contain_text("PERMISSION_DENIED")
        await expect(page.get_by_test_id("problem")).to_contain_text(
            "fire may read only its own ledger"
        )
        await expect(page.get_by_test_id("ledger-row")).to_have_count(0)


def test_the_agency_asked_for_is_checked_before_it_reaches_the_gateway() -> None:
    assert agency_of({}) == "" and agency_of({"agency": "fire-2"}) == "fire-2"
    for bad in ("Fire", "f", "fire.x", "a" * 40, "<script>"):
        with pytest.raises(BadQuery, match="agency"):
            agency_of({"agency": bad})


def test_the_chooser_offers_the_known_agencies_escaped_or_a_checked_field() -> None:
    listed = chooser(("health", "fire", '"><b>'))
    assert listed.index('value="fire"') < listed.index('value="health"')
    assert "<b>" not in listed and "&quot;&gt;&lt;b&gt;" in listed
    assert 'pattern="[a-z][a-z0-9\\-]{1,31}"' in chooser(())
