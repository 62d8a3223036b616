"""Configuration: file, environment, defaults, and errors that name file and key."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import config
from gateway.cli.main import app
from gateway.core.settings import ConfigError


def test_no_file_gives_loopback_defaults_and_the_sample_agencies() -> None:
    loaded = config.load(None, environ={})
    assert loaded.gateway.listen == "127.0.0.1:50051"
    assert loaded.nats.url.get_secret_value() == ""
    assert {a.id for a in loaded.agencies} >= {"police", "fire", "health", "emergency", "transport"}


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text('[nats]\nurl = "nats://127.0.0.1:4222"\n[subscriptions]\nmax_deliveries = 3\n')
    loaded = config.load(path, environ={"DUTYLINK_SUBSCRIPTIONS_MAX_DELIVERIES": "7"})
    assert loaded.nats.url.get_secret_value() == "nats://127.0.0.1:4222"
    assert loaded.subscriptions.max_deliveries == 7


def test_an_unknown_key_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text("[gateway]\nlisten_address = '127.0.0.1:1'\n")
    with pytest.raises(ConfigError, match=r"dutylink\.toml: gateway: unknown key 'listen_address'"):
        config.load(path, environ={})


def test_a_wrongly_typed_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="DUTYLINK_GATEWAY_MAX_BATCH_EVENTS: expected int"):
        config.load(None, environ={"DUTYLINK_GATEWAY_MAX_BATCH_EVENTS": "many"})


def test_agencies_in_the_file_replace_the_samples_and_need_unique_tokens(tmp_path: Path) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text(
        '[[agencies]]\nid = "fire"\nname = "Fire"\ntoken = "t"\n[[agencies]]\nid = "police"\nname = "P"\ntoken = "t"\n'
    )
    with pytest.raises(ConfigError, match="tokens must be unique"):
        config.load(path, environ={})


def test_config_show_masks_tokens_and_a_bad_file_exits_2_with_its_name(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "--listen", "127.0.0.1:6000"])
    assert shown.exit_code == 0, shown.output
    assert '"listen": "127.0.0.1:6000"' in shown.output
    assert "dev-fire-token" not in shown.output and '"token": "***"' in shown.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[gatway]\n")
    failed = runner.invoke(app, ["config", "show", "--config", str(bad)])
    assert failed.exit_code == 2
    assert "bad.toml: unknown section 'gatway'" in failed.output


def test_the_example_configuration_in_deploy_shows_every_key_with_its_default() -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "dutylink.example.toml"
    raw = tomllib.loads(example.read_text())
    loaded, defaults = config.load(example, environ={}), config.load(None, environ={})
    for name in ("gateway", "nats", "subscriptions", "tls", "policy", "audit"):
        assert set(raw[name]) == {f.name for f in dataclasses.fields(getattr(defaults, name))}, name
        assert getattr(loaded, name) == getattr(defaults, name), name
    assert [a.id for a in loaded.agencies] == ["fire", "command"]


def test_the_health_port_is_off_by_default_and_set_by_file_or_environment(tmp_path: Path) -> None:
    assert config.load(None, environ={}).gateway.health_listen == ""
    path = tmp_path / "dutylink.toml"
    path.write_text('[gateway]\nhealth_listen = "0.0.0.0:50052"\n')
    assert config.load(path, environ={}).gateway.health_listen == "0.0.0.0:50052"
    overridden = config.load(path, environ={"DUTYLINK_GATEWAY_HEALTH_LISTEN": "[::]:50053"})
    assert overridden.gateway.health_listen == "[::]:50053"


@pytest.mark.parametrize(
    "address", ["50052", "0.0.0.0", ":50052", "0.0.0.0:port", "::1:50052", "h:70000"]
)
def test_a_listen_address_that_is_not_host_port_names_the_file_and_key(
    tmp_path: Path, address: str
) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text(f'[gateway]\nhealth_listen = "{address}"\n')
    with pytest.raises(
        ConfigError, match=r"dutylink\.toml: gateway\.health_listen: expected HOST:PORT"
    ):
        config.load(path, environ={})
    with pytest.raises(ConfigError, match=r"^DUTYLINK_GATEWAY_LISTEN: expected HOST:PORT"):
        config.load(None, environ={"DUTYLINK_GATEWAY_LISTEN": address})


def test_the_health_port_cannot_be_the_grpc_port(tmp_path: Path) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text('[gateway]\nlisten = "0.0.0.0:50051"\nhealth_listen = "127.0.0.1:50051"\n')
    with pytest.raises(ConfigError, match=r"gateway\.health_listen: .* port of gateway\.listen"):
        config.load(path, environ={})
    # Port 0 (any free port, as in tests) is no conflict.
    assert (
        config.load(
            None,
            environ={
                "DUTYLINK_GATEWAY_LISTEN": "127.0.0.1:0",
                "DUTYLINK_GATEWAY_HEALTH_LISTEN": "127.0.0.1:0",
            },
        ).gateway.health_listen
        == "127.0.0.1:0"
    )


def test_the_concurrent_call_limit_must_let_one_call_through(tmp_path: Path) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text("[gateway]\nmax_concurrent_rpcs = 0\n")
    with pytest.raises(ConfigError, match=r"gateway\.max_concurrent_rpcs: must be at least 1"):
        config.load(path, environ={})
    loaded = config.load(None, environ={"DUTYLINK_GATEWAY_MAX_CONCURRENT_RPCS": "7"})
    assert loaded.gateway.max_concurrent_rpcs == 7


def test_a_listen_flag_that_is_not_an_address_is_one_line_naming_the_flag() -> None:
    result = CliRunner().invoke(app, ["config", "show", "--listen", "foo"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --listen: expected HOST:PORT (e.g. 127.0.0.1:50052), got 'foo'"
    ]


def test_a_misspelt_dutylink_variable_is_refused_naming_the_setting_it_resembles() -> None:
    environ = {
        "DUTYLINK_GATEWAY_LISTN": "127.0.0.1:1",
        "DUTYLINK_GATEWAY_LISTEN": "127.0.0.1:2",  # a setting: not named
        "DUTYLINK_FAILPOINT": "publish.stored",  # the crash drills' own: not named
        "PATH": "/usr/bin",
    }
    assert config.unknown_variables(environ) == [
        "DUTYLINK_GATEWAY_LISTN: not a DutyLink setting (did you mean DUTYLINK_GATEWAY_LISTEN?)"
    ]
    with pytest.raises(ConfigError, match=r"^DUTYLINK_GATEWAY_LISTN: not a DutyLink setting"):
        config.load(None, environ=environ)
    del environ["DUTYLINK_GATEWAY_LISTN"]
    assert config.load(None, environ=environ).gateway.listen == "127.0.0.1:2"


def test_every_command_reading_the_configuration_refuses_unknown_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUTYLINK_NATS_UTL", "nats://127.0.0.1:4222")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: DUTYLINK_NATS_UTL: not a DutyLink setting (did you mean DUTYLINK_NATS_URL?)"
    ]


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ('listen = "0.0.0.0:8780"', r"console\.listen: '0\.0\.0\.0:8780' is not a loopback"),
        ('listen = "8780"', r"console\.listen: expected HOST:PORT"),
        ('listen = "127.0.0.1:8780"\nzone = "Mars/Olympus"', r"console\.zone: not a known"),
    ],
)
def test_a_console_off_loopback_or_in_an_unknown_zone_is_refused_naming_the_key(
    tmp_path: Path, settings: str, error: str
) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text(f"[console]\n{settings}\n")
    with pytest.raises(ConfigError, match=rf"dutylink\.toml: {error}"):
        config.load(path, environ={})


def test_a_console_is_served_on_loopback_or_where_allowed_and_beside_tls_with_its_certificate(
    tmp_path: Path,
) -> None:
    assert config.load(None, environ={}).console.listen == "", "off by default"
    allowed = {"DUTYLINK_CONSOLE_LISTEN": "[::]:8780", "DUTYLINK_CONSOLE_ALLOW_REMOTE": "true"}
    assert config.load(None, environ=allowed).console.listen == "[::]:8780"
    on_loopback = {"DUTYLINK_CONSOLE_LISTEN": "[::1]:8780"}
    assert config.load(None, environ=on_loopback).console.zone == "Asia/Shanghai"
    tls = {f"DUTYLINK_TLS_{k}": str(tmp_path / k) for k in ("CA_FILE", "CERT_FILE", "KEY_FILE")}
    with pytest.raises(ConfigError, match=r"console\.cert_file: with \[tls\] the console"):
        config.load(None, environ={**on_loopback, **tls})
    own = {"DUTYLINK_CONSOLE_CERT_FILE": "c.pem", "DUTYLINK_CONSOLE_KEY_FILE": "c.key"}
    remote = {"DUTYLINK_CONSOLE_LISTEN": "0.0.0.0:8443"}  # HTTPS with certificates: anywhere
    assert config.load(None, environ={**remote, **tls, **own}).console.cert_file == "c.pem"
    with pytest.raises(ConfigError, match="DUTYLINK_CONSOLE_CERT_FILE: a console certificate is"):
        config.load(None, environ={**on_loopback, **own})
    consoles = {"DUTYLINK_TLS_CONSOLES": "duty-room, annex"}
    assert config.load(None, environ={**tls, **consoles}).tls.consoles == ("duty-room", "annex")
    with pytest.raises(ConfigError, match="DUTYLINK_TLS_CONSOLES: 'Duty Room' is not a console"):
        config.load(None, environ={**tls, "DUTYLINK_TLS_CONSOLES": "Duty Room"})


def test_dutylink_version_prints_the_installed_release() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"dutylink {importlib.metadata.version('dutylink')}\n"
