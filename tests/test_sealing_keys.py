"""Where the sealing key ring comes from (gateway.store.sealing_keys) and `dutylink keys`:
a 0600 file created on first use (refused when others may read it), a key service's command
(bounded in time and size), and the commands that create, show, rotate and retire keys without
ever printing one."""

from __future__ import annotations

import base64
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.core.crypto import INTERNATIONAL, NATIONAL
from gateway.core.sealing import SealingError, render_keyring
from gateway.core.settings import PersonalDataSettings
from gateway.store import sealing_keys
from gateway.store.sealing_keys import KeyringSource, fresh_keyring, read_key_file

runner = CliRunner()


async def test_the_default_file_is_created_once_0600_in_a_0700_directory(tmp_path: Path) -> None:
    source = KeyringSource(PersonalDataSettings(), str(tmp_path / "data"), INTERNATIONAL)
    assert source.path == tmp_path / "data" / "keys" / "sealing.keys"
    first = await source.load(create=True)
    assert stat.S_IMODE(source.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(source.path.parent.stat().st_mode) == 0o700
    assert await source.load(create=True) == first  # never made twice


async def test_a_ring_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sealing.keys"
    sealing_keys.write_key_file(path, fresh_keyring(INTERNATIONAL))
    for loose in (0o644, 0o604, 0o660):
        path.chmod(loose)
        with pytest.raises(SealingError, match=f"mode {loose:04o} lets other users read it"):
            read_key_file(path, INTERNATIONAL)
    path.chmod(0o440)  # a Kubernetes secret read through the pod's group
    assert read_key_file(path, INTERNATIONAL)


async def test_a_missing_file_is_not_created_unless_asked(tmp_path: Path) -> None:
    source = KeyringSource(
        PersonalDataSettings(key_file=str(tmp_path / "absent.keys")), str(tmp_path), INTERNATIONAL
    )
    with pytest.raises(SealingError, match=r"absent\.keys: cannot read"):
        await source.load()


def _command(tmp_path: Path, script: str) -> PersonalDataSettings:
    program = tmp_path / "kms.py"
    program.write_text(script, encoding="utf-8")
    return PersonalDataSettings(key_command=(sys.executable, str(program)))


async def test_a_key_service_command_gives_the_ring(tmp_path: Path) -> None:
    keyring = fresh_keyring(NATIONAL)
    ring_file = tmp_path / "ring.json"
    ring_file.write_text(render_keyring(keyring), encoding="utf-8")
    settings = _command(tmp_path, f"print(open({str(ring_file)!r}).read())")
    source = KeyringSource(settings, str(tmp_path), NATIONAL)
    assert await source.load(create=True) == keyring
    assert not source.path.exists()  # a key service: no file is made
    assert source.where == f"key service {sys.executable}"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "import sys; print('vault sealed', file=sys.stderr); sys.exit(3)",
            "exit status 3: vault sealed",
        ),
        ("print('x' * 300_000)", "answered more than 262144 bytes"),
        ("print('{}')", "not a sealing key ring|expected a JSON object"),
        ("import time; time.sleep(5)", r"no answer within 0.5 s"),
    ],
)
async def test_a_key_service_that_fails_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, message: str
) -> None:
    monkeypatch.setattr(sealing_keys, "COMMAND_TIMEOUT_SECONDS", 0.5)
    source = KeyringSource(_command(tmp_path, script), str(tmp_path), INTERNATIONAL)
    with pytest.raises(SealingError, match=message):
        await source.load()


async def test_a_key_service_that_cannot_run_is_named(tmp_path: Path) -> None:
    settings = PersonalDataSettings(key_command=(str(tmp_path / "no-such-program"),))
    with pytest.raises(SealingError, match="cannot run"):
        await KeyringSource(settings, str(tmp_path), INTERNATIONAL).load()


def test_the_keys_commands_create_rotate_show_and_retire(tmp_path: Path) -> None:
    path = tmp_path / "ring" / "sealing.keys"
    made = runner.invoke(app, ["keys", "init", "--file", str(path)])
    assert made.exit_code == 0, made.output
    first = read_key_file(path, INTERNATIONAL)
    assert f"{first.current}  created" in made.output and "seals new events" in made.output
    again = runner.invoke(app, ["keys", "init", "--file", str(path)])
    assert again.exit_code == 1 and "exists already: use rotate" in again.output
    rotated = runner.invoke(app, ["keys", "rotate", "--file", str(path)])
    assert rotated.exit_code == 0, rotated.output
    ring = read_key_file(path, INTERNATIONAL)
    assert ring.current != first.current and set(ring.keys) == {first.current, ring.current}
    shown = runner.invoke(app, ["keys", "show", "--file", str(path)])
    assert f"{first.current}  created" in shown.output and "opens only" in shown.output
    refused = runner.invoke(app, ["keys", "retire", ring.current, "--file", str(path)])
    assert refused.exit_code == 1 and "rotate before retiring it" in refused.output
    retired = runner.invoke(app, ["keys", "retire", first.current, "--file", str(path)])
    assert retired.exit_code == 0, retired.output
    assert set(read_key_file(path, INTERNATIONAL).keys) == {ring.current}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    everything = made.output + rotated.output + shown.output + retired.output
    for key in (*ring.keys.values(), ring.digest_key):
        assert base64.b64encode(key).decode() not in everything


def test_the_keys_commands_follow_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "dutylink.toml"
    config.write_text(
        f'[nats]\ndata_dir = "{tmp_path / "data"}"\n[audit]\ncrypto_profile = "national"\n',
        encoding="utf-8",
    )
    made = runner.invoke(app, ["keys", "init", "--config", str(config)])
    assert made.exit_code == 0, made.output
    assert "SM4-GCM (national profile)" in made.output
    assert read_key_file(tmp_path / "data" / "keys" / "sealing.keys", NATIONAL)
    config.write_text('[personal_data]\nkey_command = ["kms-fetch"]\n', encoding="utf-8")
    refused = runner.invoke(app, ["keys", "rotate", "--config", str(config)])
    assert refused.exit_code == 1 and "comes from a key service" in refused.output
