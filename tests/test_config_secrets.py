"""No secret of the configuration shows: a configuration holding secrets everywhere (every
agency's token, the NATS password, the audit keys' files) is run through every command that
reads it, through its errors, and through a gateway serving calls with debug logs on; not one
output or log line carries a secret."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from dutylink.adapters.runner import load_adapter_config
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import gateway_pb2, gateway_pb2_grpc
from gateway import config
from gateway.cli.main import app
from gateway.core.settings import ConfigError
from gateway.testkit.inprocess import GatewayProcess
from tests.factories import incident_event

AGENCIES = ("police", "fire", "health", "emergency")
TOKENS = {agency: f"tok-{agency}-Zq8Vv1Hc3Lr0Wm5Ys2" for agency in AGENCIES}
NATS_PASSWORD = "nats-Pw-Kt4Jf9Xe2Nb7"
# A caller's wrong token is somebody's secret too: it must not be logged either.
WRONG_TOKEN = "tok-guessed-Qa6Tu3Ld8Ry1"
SECRETS = (*TOKENS.values(), NATS_PASSWORD, WRONG_TOKEN)


def with_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://gateway:{NATS_PASSWORD}@{rest}"


def secret_config(directory: Path, nats_url: str, extra: str = "") -> Path:
    agencies = "".join(
        f'[[agencies]]\nid = "{a}"\nname = "{a.title()}"\ntoken = "{t}"\n\n'
        for a, t in TOKENS.items()
    )
    path = directory / "dutylink.toml"
    path.write_text(
        f'[nats]\nurl = "{with_password(nats_url)}"\ndata_dir = "{directory / "data"}"\n\n'
        f'[audit]\nkey_file = "{directory / "audit.key"}"\n'
        f'commitment_key_file = "{directory / "commitment.key"}"\n\n'
        f"{extra}{agencies}",
        encoding="utf-8",
    )
    return path


def assert_no_secret(text: str, *more: str) -> None:
    for line in text.splitlines():
        for secret in (*SECRETS, *more):
            assert secret not in line, f"a secret shows in: {line}"


def test_no_command_reading_the_configuration_shows_a_secret(tmp_path: Path) -> None:
    path = secret_config(tmp_path, "nats://127.0.0.1:1")
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "--config", str(path)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["nats"]["url"] == "nats://gateway:***@127.0.0.1:1"
    outputs = [shown.output]
    for arguments, environ in [
        (["config", "show", "--config", str(path)], {"DUTYLINK_GATEWAY_LISTEN": "nowhere"}),
        (["config", "show", "--config", str(path), "--listen", "x"], {}),
        (["deadletter", "list", "--config", str(path)], {}),  # NATS not there: an error
    ]:
        result = runner.invoke(app, arguments, env=environ)
        assert result.exit_code != 0, result.output
        outputs.append(result.output)
    assert "cannot connect" in outputs[-1] or "nats://gateway:***@127.0.0.1:1" in outputs[-1]
    for output in outputs:
        assert_no_secret(output)


@pytest.mark.parametrize(
    "line",
    [
        f'[nats]\nurl = ["{with_password("nats://127.0.0.1:4222")}"]\n',
        f'[[agencies]]\nid = "fire"\nname = "Fire"\ntoken = ["{TOKENS["fire"]}"]\n',
        f'[[agencies]]\nid = "fire"\nname = "Fire"\ntoken = {{ value = "{TOKENS["fire"]}" }}\n',
    ],
)
def test_a_wrongly_typed_secret_is_refused_without_its_value(tmp_path: Path, line: str) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text(line, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        config.load(path, environ={})
    assert "dutylink.toml" in str(refused.value)
    assert_no_secret(str(refused.value))
    result = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == 2
    assert_no_secret(result.output)


def test_the_loaded_secrets_show_as_stars_in_every_representation(tmp_path: Path) -> None:
    loaded = config.load(secret_config(tmp_path, "nats://127.0.0.1:4222"), environ={})
    assert loaded.nats.url.get_secret_value() == with_password("nats://127.0.0.1:4222")
    assert [a.token.get_secret_value() for a in loaded.agencies] == list(TOKENS.values())
    assert_no_secret(repr(loaded))
    assert_no_secret(str(loaded))
    assert_no_secret(json.dumps(config.masked(loaded)))


async def test_a_gateway_serving_calls_with_debug_logs_logs_no_secret(
    tmp_path: Path, nats_url: str
) -> None:
    path = secret_config(tmp_path, nats_url, extra='[telemetry]\nservice_name = "secret-test"\n\n')
    process = GatewayProcess(
        with_password(nats_url), tmp_path / "data", config_file=path, log_level="debug"
    )
    async with process:
        async with DutyLinkClient(process.address, token=TOKENS["fire"]) as fire:
            assert (await fire.publish(incident_event())).stream_sequence > 0
        async with grpc.aio.insecure_channel(process.address) as channel:
            stub = gateway_pb2_grpc.PublisherServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Publish(
                    gateway_pb2.PublishRequest(event=incident_event()),
                    metadata=(("authorization", f"Bearer {WRONG_TOKEN}"),),
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        deadletters = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli.main", "deadletter", "list", "--config", str(path),
            env={k: v for k, v in os.environ.items() if not k.startswith("DUTYLINK_")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        listed, _ = await deadletters.communicate()
    assert deadletters.returncode == 0, listed.decode()
    log = process.log_file.read_text(encoding="utf-8")
    assert '"level": "debug"' in log or '"level":"debug"' in log, "debug lines were written"
    key_files = [(tmp_path / name).read_bytes().hex() for name in ("commitment.key",)]
    assert_no_secret(log, *key_files)
    assert_no_secret(listed.decode(), *key_files)


def test_an_adapters_token_shows_in_no_output_of_its_commands(tmp_path: Path) -> None:
    path = tmp_path / "adapter.toml"
    token = TOKENS["fire"]
    path.write_text(
        f'[adapter]\ngateway = "127.0.0.1:1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'token = "{token}"\n[options.inbound]\npoll_seconds = -1\n',
        encoding="utf-8",
    )
    loaded = load_adapter_config(path)
    assert loaded.token is not None and loaded.token.get_secret_value() == token
    assert_no_secret(repr(loaded))
    result = CliRunner().invoke(app, ["adapter", "run", "cap", "--config", str(path)])
    assert (
        result.exit_code == 2 and "poll_seconds: must be a number greater than 0" in result.output
    )
    assert_no_secret(result.output)
    path.write_text(f'[adapter]\ngateway = "127.0.0.1:1"\nstate_dir = "s"\ntoken = ["{token}"]\n')
    refused = CliRunner().invoke(app, ["adapter", "run", "cap", "--config", str(path)])
    assert refused.exit_code == 2 and "[adapter] token" in refused.output
    assert_no_secret(refused.output)
