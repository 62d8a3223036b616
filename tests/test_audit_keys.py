"""Audit signing keys: a log keeps the key of its first checkpoint unless a rotation is declared
and recorded in the log; tests keep their keys in temporary directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.testing import config_for_tests, gateway_for_tests


async def test_a_test_gateway_writes_nothing_into_the_working_directory(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    working = tmp_path / "cwd"
    working.mkdir()
    monkeypatch.chdir(working)
    async with gateway_for_tests(nats_url, config_for_tests()) as gateway:
        assert gateway.audit is not None and gateway.audit.size > 0
    assert sorted(p.name for p in working.rglob("*")) == []
