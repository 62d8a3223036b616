"""Fixtures: a real nats-server per test (see gateway.testkit.inprocess) and a real gateway on loopback."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import settings

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from gateway.config import sample_tokens
from gateway.server import Gateway
from gateway.telemetry import logs
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests, nats_for_tests

TOKENS = sample_tokens()

# Hypothesis's per-example deadline is a timing assertion: on a shared 2-core machine under load
# it fails correct code (test_note's arbitrary-input test did). Speed lives in the benchmark.
settings.register_profile("dutylink", deadline=None)
settings.load_profile("dutylink")


@pytest.fixture(autouse=True, scope="session")
def _logging_before_any_cli() -> Iterator[dict[str, Any]]:
    """`dutylink serve`, `demo` and the CLI run in-process (CliRunner) configure structlog: a
    level filter (the audit CLI's "error" hides info lines from `capture_logs`) and loggers
    cached on first use (frozen for the rest of the session). For the whole session, including
    module fixtures that run a CLI, loggers stay uncached; yields the configuration to go back to."""
    configure = logs.configure

    def uncached(*args: Any, **kwargs: Any) -> None:
        configure(*args, **kwargs)
        structlog.configure(cache_logger_on_first_use=False)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs, "configure", uncached)
        yield dict(structlog.get_config(), processors=list(structlog.get_config()["processors"]))


@pytest.fixture(autouse=True)
def _logging_as_it_was(_logging_before_any_cli: dict[str, Any]) -> Iterator[None]:
    """Each test starts with the logging of a session no CLI has run in, and leaves it so
    (structlog's, and the root logger's handlers and level, which `logs.configure` sets)."""
    initial = _logging_before_any_cli
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog.configure(**dict(initial, processors=list(initial["processors"])))
    yield
    structlog.configure(**dict(initial, processors=list(initial["processors"])))
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    async with nats_for_tests(tmp_path / "nats") as url:
        yield url


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of the sample policies that a test may change (hot reload)."""
    directory = tmp_path / "policies"
    directory.mkdir()
    for source in SAMPLE_DIR.glob("*.yaml"):
        shutil.copy(source, directory / source.name)
    return directory


@pytest.fixture
async def gateway(nats_url: str) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(
        nats_url, config_for_tests(subscriptions={"ack_wait_seconds": 2.0})
    ) as running:
        yield running


@pytest.fixture
async def pipe_gateway(nats_url: str) -> AsyncIterator[Gateway]:
    """A gateway that enforces no lifecycle (`enforce_lifecycles = false`): for the adapters'
    fidelity tests with standards samples that are not one loop (historical CAP alerts long
    expired, an EDXL envelope updating an alert never sent, two systems reporting one alarm).
    The loops themselves are tested in test_loop_scenarios.py."""
    config = config_for_tests(
        subscriptions={"ack_wait_seconds": 2.0}, gateway={"enforce_lifecycles": False}
    )
    async with gateway_for_tests(nats_url, config) as running:
        yield running


ClientFactory = Callable[[str], Awaitable[DutyLinkClient]]


@contextlib.asynccontextmanager
async def agency_clients(address: str) -> AsyncIterator[ClientFactory]:
    """`await client_for("fire")` inside the block: a client of the gateway at `address`,
    authenticated as that sample agency; all closed when the block ends."""
    clients: list[DutyLinkClient] = []

    async def make(agency: str) -> DutyLinkClient:
        client = DutyLinkClient(address, token=TOKENS[agency])
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def client_for(gateway: Gateway) -> AsyncIterator[ClientFactory]:
    """`await client_for("fire")`: a client of the shared gateway, as that sample agency."""
    async with agency_clients(gateway.address) as make:
        yield make
