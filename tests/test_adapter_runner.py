"""The adapter runner: one config shape with errors naming file and key, health and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from dutylink.adapters.cap.adapter import KIND
from dutylink.adapters.runner import AdapterConfigError, AdapterRunner, load_adapter_config
from gateway.cli.main import app
from gateway.server import Gateway
from tests.conftest import TOKENS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    return path


def test_config_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    cases = {
        '[adapter]\ngateway = "x"\n': "[adapter] state_dir: required",
        '[adapter]\ngateway = "x"\nstate_dir = "s"\n': "give exactly one of token or [adapter.tls]",
        '[adapter]\ngateway = "x"\nstate_dir = "s"\ntoken = "t"\nbatch = 5\n': "unknown key 'batch'",
        '[adapter]\ngateway = "x"\nstate_dir = "s"\ntoken = "t"\n[source]\n': "unknown section [source]",
        "[adapter\n": "line 1",
    }
    for text, expected in cases.items():
        path = write(tmp_path, text)
        with pytest.raises(AdapterConfigError) as error:
            load_adapter_config(path)
        assert str(error.value).startswith(f"{path}: ") and expected in str(error.value), text
    loaded = load_adapter_config(write(tmp_path, '[adapter]\ngateway = "127.0.0.1:1"\nstate_dir = "s"\ntoken = "t"\n[options]\nsystem = "x"\n'))  # fmt: skip
    assert loaded.options == {"system": "x"} and loaded.batch_size == 500


def test_the_cli_lists_adapters_and_names_a_bad_config() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["adapter", "list"])
    assert listed.exit_code == 0 and "cap" in listed.stdout
    unknown = runner.invoke(app, ["adapter", "run", "nope", "--config", "x.toml"])
    assert unknown.exit_code == 2 and "no adapter named 'nope'" in unknown.stderr


async def test_health_and_metrics_are_served(gateway: Gateway, tmp_path: Path) -> None:
    config = load_adapter_config(write(tmp_path, f'[adapter]\ngateway = "{gateway.address}"\nstate_dir = "{tmp_path / "state"}"\ntoken = "{TOKENS["weather"]}"\n[options.inbound]\ndirectory = "{tmp_path / "drop"}"\n'))  # fmt: skip
    runner = AdapterRunner(KIND, config)
    task = asyncio.create_task(runner.run())
    await runner.wait_started()
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{runner.http_port}"
            async with session.get(f"{base}/healthz") as health:
                assert health.status == 200 and (await health.json())["adapter"] == "cap"
            async with session.get(f"{base}/metrics") as metrics:
                text = await metrics.text()
        assert 'dutylink_adapter_records_in_total{adapter="cap"} 0.0' in text
        assert 'dutylink_adapter_records_rejected_total{adapter="cap",direction="in"} 0.0' in text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
