"""The incident page's acknowledgements (签收情况), real end to end: the sample policies, a real
NATS and gateway, the console on loopback and a headless Chromium as the command centre. Fire
reports and verifies a fire, the command centre assigns it to several agencies; the page lists
the assignment with every recipient still pending (or delivered); when one of them acknowledges
it through the SDK, the page shows that recipient acknowledged, and by whom, without a reload
(the board's event stream announces the change of the incident: the acknowledgement names it).

A screenshot for docs/console.md goes to docs/console/ only with DUTYLINK_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import expect

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import event_pb2
from gateway.cli.demo_scenario import scenario
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.test_console import browser, log_in, screenshot_dir, serving

WAIT_MS = 15_000
ACKNOWLEDGER = "duty officer Li"


@pytest.fixture
async def gateway(nats_url: str, policy_dir: Path) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url, config_for_tests(policy={"dir": str(policy_dir)})) as g:
        yield g


async def tracked(client: DutyLinkClient, incident_id: str, event_id: str) -> None:
    """Once the gateway's tracker has taken in the message (moments after the board has)."""
    async with asyncio.timeout(WAIT_MS / 1000):
        while True:
            incident = await client.incident(incident_id, plane=event_pb2.PLANE_EXERCISE)
            if any(m.event_id == event_id for m in incident.acknowledgements):
                return
            await asyncio.sleep(0.1)


async def test_the_command_centre_sees_an_assignment_acknowledged_live(
    gateway: Gateway, tmp_path: Path
) -> None:
    report, verification, assignment = scenario(datetime.now(UTC))[:3]
    assert (report.agency, assignment.agency) == ("fire", "command")
    assert assignment.event.type == "incident.assigned"
    incident_id = report.event.incident.incident_id
    for step in (report, verification, assignment):
        async with DutyLinkClient(gateway.address, token=TOKENS[step.agency]) as client:
            await client.publish(step.event)
    assignment_id = assignment.event.id
    async with DutyLinkClient(gateway.address, token=TOKENS["command"]) as command:
        await tracked(command, incident_id, assignment_id)  # the page's first read shows it

    async with serving(gateway.address) as console, browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await log_in(page, console, "command")
        await page.goto(f"{console}/incident/{incident_id}?plane=EXERCISE")
        await expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
        message = page.locator(f'[data-testid="ack-message"][data-event-id="{assignment_id}"]')
        await expect(message.get_by_test_id("ack-type")).to_have_text(
            "incident.assigned", timeout=WAIT_MS
        )
        await expect(message.get_by_test_id("ack-sender")).to_contain_text("command")
        await expect(message.get_by_test_id("ack-summary")).to_contain_text("acknowledged 0")
        recipients = message.get_by_test_id("ack-recipient")
        agencies = await recipients.evaluate_all("rows => rows.map(r => r.dataset.agency)")
        assert len(agencies) >= 2 and "command" not in agencies
        for status in await message.get_by_test_id("recipient-status").all_inner_texts():
            assert status in ("待签收", "已送达"), status
        await expect(message.get_by_test_id("ack-deadline").first).to_be_visible()

        taker = next(agency for agency in agencies if agency in TOKENS)
        async with DutyLinkClient(gateway.address, token=TOKENS[taker]) as client:
            await client.publish(acknowledgement_of(assignment.event, by=ACKNOWLEDGER))
        row = message.locator(f'[data-testid="ack-recipient"][data-agency="{taker}"]')
        await expect(row.get_by_test_id("recipient-status")).to_have_text("已签收", timeout=WAIT_MS)
        await expect(row.get_by_test_id("recipient-by")).to_have_text(ACKNOWLEDGER)
        await expect(row.get_by_test_id("recipient-time")).not_to_have_text("")
        await expect(message.get_by_test_id("ack-summary")).to_contain_text("acknowledged 1")

        shots = screenshot_dir(tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(shots / "acknowledgements.png"), full_page=True)
        await page.get_by_test_id("language-switch").click()  # the labels follow the switch
        await expect(row.get_by_test_id("recipient-status")).to_have_text("Acknowledged")
        await expect(page.get_by_test_id("acks-heading")).to_have_text("Acknowledgements")
