"""The incident page's recipients (接收方), real end to end: the sample policies, a real NATS and
gateway, the console on loopback and a headless Chromium. Fire reports a chemical fire and the
command centre assigns it; the command centre's page shows, under fire's report, whom it went
to: transport with the caller's details withheld, housing withheld by rule (no rule lets it have
a RESTRICTED chemical fire). A police officer's page, whose agency sent none of the events, has
no recipients at all.

A screenshot for docs/console.md goes to docs/console/ only with DUTYLINK_SCREENSHOTS=1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import expect

from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.cli.demo_scenario import scenario
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.test_console import browser, log_in, screenshot_dir, serving

WAIT_MS = 15_000


@pytest.fixture
async def gateway(nats_url: str, policy_dir: Path) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url, config_for_tests(policy={"dir": str(policy_dir)})) as g:
        yield g


async def test_the_command_centre_sees_what_was_withheld_by_rule_and_police_sees_no_recipients(
    gateway: Gateway, tmp_path: Path
) -> None:
    report, verification, assignment = scenario(datetime.now(UTC))[:3]
    assert (report.agency, assignment.agency) == ("fire", "command")
    incident_id = report.event.incident.incident_id
    last = 0
    for step in (report, verification, assignment):
        async with DutyLinkClient(gateway.address, token=TOKENS[step.agency]) as client:
            last = (await client.publish(step.event)).stream_sequence
    assert await gateway.board.folded_up_to(last, timeout=30)

    async with serving(gateway.address) as console, browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await log_in(page, console, "command")
        await page.goto(f"{console}/incident/{incident_id}?plane=EXERCISE")
        entry = page.locator(f'[data-testid="timeline-entry"][data-event-id="{report.event.id}"]')
        housing = entry.locator('[data-testid="entry-recipient"][data-agency="housing"]')
        await expect(housing.get_by_test_id("recipient-outcome")).to_have_text(
            "按规则不予推送", timeout=WAIT_MS
        )
        await expect(housing).to_have_attribute("data-outcome", "WITHHELD")
        await expect(housing.get_by_test_id("recipient-rule")).to_have_text("no rule allows")
        transport = entry.locator('[data-testid="entry-recipient"][data-agency="transport"]')
        await expect(transport.get_by_test_id("recipient-outcome")).to_have_text(
            "已接收(部分字段隐去)"
        )
        await expect(transport.get_by_test_id("recipient-rule")).to_have_text(
            "规则 responders-receive-incidents"
        )
        await expect(transport.get_by_test_id("recipient-redacted")).to_contain_text(
            "incident.reporter"
        )
        police = entry.locator('[data-testid="entry-recipient"][data-agency="police"]')
        await expect(police.get_by_test_id("recipient-outcome")).to_have_text("已接收")
        assert await entry.locator('[data-agency="fire"]').count() == 0, "not its own recipient"
        await page.get_by_test_id("language-switch").click()  # the labels follow the switch
        await expect(housing.get_by_test_id("recipient-outcome")).to_have_text("Withheld by rule")
        await expect(entry.get_by_test_id("entry-recipients")).to_contain_text("Recipients")
        shots = screenshot_dir(tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        await entry.screenshot(path=str(shots / "recipients.png"))
        await page.get_by_test_id("logout").click()

        await log_in(page, console, "police")
        await page.goto(f"{console}/incident/{incident_id}?plane=EXERCISE")
        await expect(page.get_by_test_id("timeline-entry")).to_have_count(3, timeout=WAIT_MS)
        assert await page.get_by_test_id("entry-recipients").count() == 0
        assert await page.get_by_test_id("entry-recipient").count() == 0
