"""The `[ledger]` settings: documented with their defaults, set by file or environment, and
checked at load with errors that name the file (or variable) and the key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from gateway import config
from gateway.core.settings import ConfigError, LedgerSettings

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "dutylink.example.toml"


def test_the_example_configuration_shows_every_ledger_key_with_its_default() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    assert set(raw["ledger"]) == {f.name for f in dataclasses.fields(LedgerSettings)}
    assert config.load(EXAMPLE, environ={}).ledger == LedgerSettings()


def test_the_expiry_check_runs_every_five_seconds_by_default() -> None:
    assert config.load(None, environ={}).ledger.expiry_check_seconds == 5.0


def test_file_and_environment_set_the_ledger_settings(tmp_path: Path) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text('[ledger]\nexpiry_check_seconds = 1\ndivision_code = "310000"\n')
    loaded = config.load(path, environ={"DUTYLINK_LEDGER_MAX_ITEMS": "50"})
    assert loaded.ledger == LedgerSettings(1.0, 50, "310000")
    assert "DUTYLINK_LEDGER_EXPIRY_CHECK_SECONDS" in config.setting_variables()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("expiry_check_seconds = 0", r"ledger\.expiry_check_seconds: must be above 0"),
        ("max_items = 0", r"ledger\.max_items: must be at least 1"),
        ('division_code = "31000"', r"ledger\.division_code: expected a six-digit"),
        ('division_code = "010000"', r"ledger\.division_code: expected a six-digit"),
    ],
)
def test_a_bad_ledger_setting_names_the_file_and_key(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "dutylink.toml"
    path.write_text(f"[ledger]\n{line}\n")
    with pytest.raises(ConfigError, match=rf"dutylink\.toml: {message}"):
        config.load(path, environ={})


def test_a_bad_ledger_variable_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^DUTYLINK_LEDGER_EXPIRY_CHECK_SECONDS: must be above"):
        config.load(None, environ={"DUTYLINK_LEDGER_EXPIRY_CHECK_SECONDS": "-1"})
