"""pytest fixtures for adapter authors (`pip install 'dutylink[testkit]'`): a real gateway on an
embedded NATS, and SDK clients of it as the sample agencies. pytest loads this plugin through
dutylink's `pytest11` entry point; nothing is imported into the test module.

    async def test_my_adapter_publishes(dutylink_gateway, dutylink_client_for):
        police = await dutylink_client_for("police")
        ...  # run the adapter against dutylink_gateway.address, read with `police`

Every fixture is function-scoped: each test gets a NATS and a gateway of its own.

- `dutylink_nats_url`: a nats-server with JetStream (where from: gateway.testkit.inprocess)
- `dutylink_config`: the gateway's configuration, `config_for_tests()` (an open policy, a free
  loopback port); override this fixture to change a section
- `dutylink_gateway`: the started gateway (`.address` is its host:port)
- `dutylink_client_for`: `await dutylink_client_for("fire")`, a client as that sample agency
  (gateway/sample_agencies.toml), closed after the test
- `dutylink_client`: a client as `dutylink_agency` ("fire" unless that fixture is overridden)

The plugin is loaded wherever dutylink is installed, with or without the testkit extra, so it
imports nothing heavy until a fixture is used, and without pytest-asyncio its fixtures fail with
what to install instead of breaking every pytest run.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from dutylink.adapters.sdk.client import DutyLinkClient
    from gateway.core.settings import Config
    from gateway.server import Gateway

ClientFactory = Callable[[str], Awaitable["DutyLinkClient"]]
MISSING_EXTRA = "the dutylink fixtures need pytest-asyncio: pip install 'dutylink[testkit]'"

_Fixture = TypeVar("_Fixture", bound=Callable[..., Any])


def _async_fixture(function: _Fixture) -> _Fixture:
    """An async fixture in pytest-asyncio's strict mode too (the default an adapter's project
    most likely has), or, without pytest-asyncio, one that fails saying what to install."""
    try:
        import pytest_asyncio
    except ModuleNotFoundError:

        @functools.wraps(function)
        def missing(*args: Any, **kwargs: Any) -> Any:
            pytest.fail(MISSING_EXTRA, pytrace=False)

        return cast(_Fixture, pytest.fixture(missing))
    return cast(_Fixture, pytest_asyncio.fixture(function))


@_async_fixture
async def dutylink_nats_url(tmp_path: Path) -> AsyncIterator[str]:
    from gateway.testkit.inprocess import nats_for_tests

    async with nats_for_tests(tmp_path / "dutylink-nats") as url:
        yield url


@pytest.fixture
def dutylink_config() -> Config:
    from gateway.testkit.inprocess import config_for_tests

    return config_for_tests()


@_async_fixture
async def dutylink_gateway(
    dutylink_nats_url: str, dutylink_config: Config
) -> AsyncIterator[Gateway]:
    from gateway.testkit.inprocess import gateway_for_tests

    async with gateway_for_tests(dutylink_nats_url, dutylink_config) as gateway:
        yield gateway


@_async_fixture
async def dutylink_client_for(dutylink_gateway: Gateway) -> AsyncIterator[ClientFactory]:
    from dutylink.adapters.sdk.client import DutyLinkClient
    from gateway.config import sample_tokens

    tokens = sample_tokens()
    clients: list[DutyLinkClient] = []

    async def connect(agency: str) -> DutyLinkClient:
        if agency not in tokens:
            raise KeyError(f"{agency!r} is not a sample agency; one of {', '.join(sorted(tokens))}")
        client = DutyLinkClient(dutylink_gateway.address, token=tokens[agency])
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
def dutylink_agency() -> str:
    """The sample agency `dutylink_client` acts as."""
    return "fire"


@_async_fixture
async def dutylink_client(
    dutylink_client_for: ClientFactory, dutylink_agency: str
) -> DutyLinkClient:
    return await dutylink_client_for(dutylink_agency)
