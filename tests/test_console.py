"""The duty officers' web console, real end to end: a real NATS and gateway with the sample
policies, the console served on loopback in the test's event loop, and a real headless Chromium
(Playwright) as the officer. The transport officer's board fills live when fire reports an
incident, and its timeline never shows the reporter (transport's policy withholds
`incident.reporter`) while fire's does; a wrong token stays on the login page; the API needs a
session. The pure parts (session expiry, query checks, status mapping) are tested alone.

Screenshots for docs/console.md go to docs/console/ only with DUTYLINK_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect
from typer.testing import CliRunner

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import event_pb2
from gateway.cli.console import is_loopback, split_listen
from gateway.cli.demo_scenario import scenario
from gateway.cli.main import app
from gateway.console import app as console_app
from gateway.console.queries import BadQuery, board_query, http_status, incident_id_of
from gateway.console.sessions import SessionStore
from gateway.console.state import COOKIE, ConsoleSettings
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def gateway(nats_url: str, policy_dir: Path) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url, config_for_tests(policy={"dir": str(policy_dir)})) as g:
        yield g


@contextlib.asynccontextmanager
async def serving(address: str, audit_keys: tuple[tuple[str, str], ...] = ()) -> AsyncIterator[str]:
    """The console for the gateway at `address` on 127.0.0.1 (a free port); yields its base URL."""
    settings = ConsoleSettings(
        connect=lambda token: DutyLinkClient(address, token=token), audit_keys=audit_keys
    )
    async with console_app.serving(settings, "127.0.0.1", 0) as base:
        yield base


@pytest.fixture
async def console(gateway: Gateway) -> AsyncIterator[str]:
    async with serving(gateway.address) as base:
        yield base


def chromium() -> str:
    assert CHROMIUM.exists(), "install Chromium: apt-get install -y chromium (or bootstrap.py test)"
    return str(CHROMIUM)


@contextlib.asynccontextmanager
async def browser(profile: Path, **options: Any) -> AsyncIterator[BrowserContext]:
    """A headless Chromium with a fresh profile in the test's tmp dir (no browser download);
    `options` for Playwright's context (a client certificate, say)."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
            locale="zh-CN",
            **options,
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            await context.close()


async def log_in(page: Page, base: str, agency: str) -> None:
    await page.goto(f"{base}/")
    await expect(page.get_by_test_id("login-form")).to_be_visible()  # sent to the login page
    await page.get_by_test_id("login-token").fill(TOKENS[agency])
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("board-table")).to_be_visible()


def screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get("DUTYLINK_SCREENSHOTS") == "1":
        return REPO / "docs" / "console"
    return tmp_path / "screenshots"


# --- in a browser -----------------------------------------------------------------------------


async def test_transport_sees_fire_report_live_without_the_reporter_fire_sees_it_whole(
    gateway: Gateway, console: str, tmp_path: Path
) -> None:
    report = scenario(datetime.now(UTC))[0]
    assert report.agency == "fire" and report.event.type == "incident.reported"
    reporter = report.event.incident.reporter
    incident_id = report.event.incident.incident_id
    shots = screenshot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    async with browser(tmp_path / "transport-profile") as transport:
        page = await transport.new_page()
        await log_in(page, console, "transport")
        await page.goto(f"{console}/?plane=EXERCISE&jurisdiction=3101")
        await expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
        await expect(page.get_by_test_id("board-empty")).to_be_visible()
        await asyncio.sleep(0.5)  # the gateway has the watch open before the report is stored
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            await fire.publish(report.event)
        row = page.locator(f'[data-testid="incident-row"][data-incident-id="{incident_id}"]')
        await expect(row).to_be_visible()  # live: no reload
        await expect(row).to_contain_text("310115")
        await expect(page.get_by_test_id("board-empty")).to_be_hidden()
        await page.screenshot(path=str(shots / "board.png"), full_page=True)

        await row.get_by_test_id("incident-link").click()
        await expect(page.get_by_test_id("timeline-entry")).to_have_count(1)
        await expect(page.get_by_test_id("entry-source")).to_have_text("fire")
        await expect(page.get_by_test_id("entry-type")).to_have_text("incident.reported")
        await page.locator("details").first.evaluate("d => d.open = true")
        await expect(page.get_by_test_id("event-json")).to_contain_text(incident_id)
        await page.screenshot(path=str(shots / "incident.png"), full_page=True)
        content = await page.content()
        assert reporter.name not in content and reporter.phone not in content
        assert '"reporter"' not in content

    async with browser(tmp_path / "fire-profile") as fire_browser:
        page = await fire_browser.new_page()
        await log_in(page, console, "fire")
        await page.goto(f"{console}/incident/{incident_id}?plane=EXERCISE")
        await expect(page.get_by_test_id("event-json")).to_contain_text(reporter.phone)
        content = await page.content()
        assert reporter.name in content and reporter.phone in content


async def test_a_wrong_token_stays_on_the_login_page_and_the_api_needs_a_session(
    console: str, tmp_path: Path
) -> None:
    async with browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await page.goto(f"{console}/login")
        await page.get_by_test_id("login-token").fill("dev-nobody-token")
        await page.get_by_test_id("login-submit").click()
        await expect(page.get_by_test_id("login-error")).to_be_visible()
        assert page.url.endswith("/login")
        await expect(page.get_by_test_id("login-form")).to_be_visible()
        assert await context.cookies() == []
        await page.get_by_test_id("language-switch").click()  # the labels follow the switch
        await expect(page.get_by_test_id("login-submit")).to_have_text("Log in")
        await expect(page.get_by_test_id("login-error")).to_have_text(
            "Token refused by the gateway"
        )
    async with aiohttp.ClientSession() as http:
        for path in ("/api/board", "/api/incident/X", "/api/events"):
            async with http.get(f"{console}{path}") as response:
                assert response.status == 401, path
                assert await response.json() == {"error": "not logged in"}
        async with http.get(f"{console}/", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/login"


async def test_the_api_answers_as_the_agency_checks_its_queries_and_logs_out(
    console: str,
) -> None:
    # unsafe: the jar keeps cookies of an IP address (the console's 127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            f"{console}/login", data={"token": TOKENS["police"]}, allow_redirects=False
        ) as response:
            assert response.status == 303
            cookie = response.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert TOKENS["police"] not in str(response.headers)
        async with http.get(f"{console}/api/board?plane=EXERCISE&all=1") as response:
            assert response.status == 200 and await response.json() == {}  # nothing yet
        for query, word in (("jurisdiction=310", "jurisdiction"), ("plane=MARS", "plane")):
            async with http.get(f"{console}/api/board?{query}") as response:
                assert response.status == 400 and word in (await response.json())["error"]
        async with http.get(f"{console}/api/incident/INC-NONE?plane=EXERCISE") as response:
            assert response.status == 404 and "NOT_FOUND" in (await response.json())["error"]
        async with http.post(f"{console}/login", data={"token": "x" * 20_000}) as response:
            assert response.status == 413  # bounded: the form is never read whole
        async with http.post(f"{console}/logout", allow_redirects=False) as response:
            assert response.status == 303
        async with http.get(f"{console}/api/board") as response:
            assert response.status == 401


# --- the pure parts --------------------------------------------------------------------------


def test_sessions_expire_after_eight_idle_hours_and_each_use_renews_them() -> None:
    now = [1000.0]
    store = SessionStore(clock=lambda: now[0])
    first = store.open("dev-fire-token")
    assert store.token_of(first) == "dev-fire-token"
    now[0] += 7 * 3600
    assert store.token_of(first) == "dev-fire-token"  # renewed here
    now[0] += 7 * 3600
    assert store.alive(first) and store.token_of(first) == "dev-fire-token"
    now[0] += 8 * 3600 + 1
    assert not store.alive(first) and store.token_of(first) is None and len(store) == 0
    second = store.open("dev-police-token")
    assert second != first and store.token_of(None) is None and store.token_of("forged") is None
    store.close(second)
    assert store.token_of(second) is None


def test_a_full_store_drops_its_oldest_idle_session() -> None:
    now = [0.0]
    store = SessionStore(clock=lambda: now[0], max_sessions=2)
    oldest = store.open("a")
    now[0] += 1
    kept = store.open("b")
    now[0] += 1
    newest = store.open("c")
    assert store.token_of(oldest) is None
    assert (store.token_of(kept), store.token_of(newest)) == ("b", "c")


def test_queries_are_checked_before_they_reach_the_gateway() -> None:
    query = board_query({"jurisdiction": "3101", "plane": "exercise", "all": "1"})
    assert (query.jurisdiction, query.plane, query.include_finished) == (
        "3101",
        event_pb2.PLANE_EXERCISE,
        True,
    )
    assert board_query({}).plane == event_pb2.PLANE_ACTUAL and board_query({}).jurisdiction == ""
    for bad in ({"jurisdiction": "310"}, {"jurisdiction": "31a1"}, {"plane": "PLANE_ACTUAL"}):
        with pytest.raises(BadQuery):
            board_query(bad)
    with pytest.raises(BadQuery, match="longer than"):
        board_query({"jurisdiction": "1" * 100})
    with pytest.raises(BadQuery):
        board_query({"all": "maybe"})
    assert incident_id_of("INC-119-0815-01") == "INC-119-0815-01"
    for bad_id in ("", "a b", "x" * 65, "<script>"[:0]):
        with pytest.raises(BadQuery):
            incident_id_of(bad_id)


def test_grpc_statuses_map_to_http_statuses() -> None:
    assert http_status(grpc.StatusCode.NOT_FOUND) == 404
    assert http_status(grpc.StatusCode.INVALID_ARGUMENT) == 400
    assert http_status(grpc.StatusCode.UNAVAILABLE) == 503
    assert http_status(grpc.StatusCode.UNAUTHENTICATED) == 401
    assert http_status(grpc.StatusCode.PERMISSION_DENIED) == 403
    assert http_status(grpc.StatusCode.INTERNAL) == 502


def test_the_command_refuses_a_remote_listen_address_unless_told_and_a_bad_zone() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["console", "--listen", "0.0.0.0:8780"])
    assert result.exit_code == 2 and "not a loopback address" in result.output
    assert "--allow-remote" in result.output
    result = runner.invoke(app, ["console", "--zone", "Mars/Olympus"])
    assert result.exit_code == 2 and "not a known time zone" in result.output
    result = runner.invoke(app, ["console", "--listen", "localhost"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.8") and not is_loopback("console.example")
    assert split_listen("[::1]:8780") == ("::1", 8780)
