"""The console's map of incidents and warning areas, real end to end: the sample policies, a real
NATS and gateway, the console on loopback and a headless Chromium as the transport officer. Fire
reports a fire at the chemical park and ecology warns of toxic smoke over an area south-west of
it, naming the incident: the board's map shows the incident's point and the warning's area as
they arrive, without a reload; the point leads to the incident's page, whose map shows it again
with its warning's area.

A screenshot for docs/console.md goes to docs/console/ only with DUTYLINK_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
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


@pytest.fixture
async def gateway(nats_url: str, policy_dir: Path) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url, config_for_tests(policy={"dir": str(policy_dir)})) as g:
        yield g


async def test_the_board_map_shows_the_incident_and_its_warning_area_live(
    gateway: Gateway, tmp_path: Path
) -> None:
    steps = scenario(datetime.now(UTC))
    report = steps[0]
    smoke = next(s for s in steps if s.agency == "ecology" and s.event.type == "warning.alert")
    assert report.event.incident.location.HasField("point")
    assert smoke.event.warning.infos[0].areas[0].polygons
    incident_id = report.event.incident.incident_id
    assert list(smoke.event.warning.incidents) == [incident_id]
    shots = screenshot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    async with serving(gateway.address) as console, browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await log_in(page, console, "transport")
        await page.goto(f"{console}/?plane=EXERCISE")
        await expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
        await expect(page.get_by_test_id("map-incident")).to_have_count(0)
        await asyncio.sleep(0.5)  # the gateway has the watch open before the events are stored
        for step in (report, smoke):
            async with DutyLinkClient(gateway.address, token=TOKENS[step.agency]) as client:
                await client.publish(step.event)

        point = page.locator(f'[data-testid="map-incident"][data-incident-id="{incident_id}"]')
        await expect(point).to_be_visible()  # live: no reload
        area = page.get_by_test_id("map-area")
        await expect(area).to_have_count(1)
        sender = smoke.event.warning.sender
        await expect(area).to_have_attribute(
            "data-warning", f"{sender},{smoke.event.warning.identifier}"
        )
        await expect(page.get_by_test_id("map-scale")).to_contain_text("km")
        # The smoke drifts south-west: the area lies below and left of the scene on the map.
        scene = await point.locator("circle").bounding_box()
        smoke_box = await area.bounding_box()
        assert scene is not None and smoke_box is not None
        assert smoke_box["x"] < scene["x"] and smoke_box["y"] + smoke_box["height"] > scene["y"]
        heading = page.get_by_test_id("map-panel").locator("h2 [data-i18n]")
        await expect(heading).to_have_text("地图")
        await page.get_by_test_id("language-switch").click()
        await expect(heading).to_have_text("Map")
        await expect(point).to_be_visible()  # drawn anew in English
        await page.screenshot(path=str(shots / "map.png"))

        await point.locator("circle").click()
        await expect(page).to_have_url(f"{console}/incident/{incident_id}?plane=EXERCISE")
        await expect(page.get_by_test_id("map-incident")).to_have_attribute(
            "data-incident-id", incident_id
        )
        await expect(page.get_by_test_id("map-area")).to_have_count(1)
