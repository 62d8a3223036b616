"""The adapter benchmark runs end to end (its figures are read by people, not asserted)."""

from __future__ import annotations

import pytest

from adapters.bench import CAP_WORKLOAD, FILEDROP_WORKLOAD, run


async def test_the_adapter_benchmark_measures_both_adapters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run([CAP_WORKLOAD, FILEDROP_WORKLOAD], runs=1, count=20)
    lines = capsys.readouterr().out.splitlines()  # (log lines of the servers among them)
    assert "adapters into the gateway, median of 1 runs, 20 records each" in lines
    names = (CAP_WORKLOAD.name, FILEDROP_WORKLOAD.name)
    rows = {line[:40].strip(): line[40:].split() for line in lines if line.startswith(names)}
    assert set(rows) == {CAP_WORKLOAD.name, FILEDROP_WORKLOAD.name}
    for adapter, gateway, ratio in rows.values():
        assert float(adapter.replace(",", "")) > 0 and float(gateway.replace(",", "")) > 0
        assert float(ratio) > 0
