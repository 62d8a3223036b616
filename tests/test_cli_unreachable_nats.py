"""An operator's command against a NATS nobody serves says so and ends, instead of waiting
for ever (the gateway itself keeps waiting for NATS)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gateway.cli import main
from gateway.testkit.inprocess import free_port


@pytest.mark.parametrize("command", [["deadletter", "list"], ["deadletter", "replay", "1"]])
def test_a_dead_letter_command_gives_up_on_an_unreachable_nats(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main, "CLI_CONNECT_SECONDS", 1.0)
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(main.app, [*command, "--nats-url", url])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"error: {url}: no NATS server answered within 1 s")
