"""The adapter benchmark runs end to end (its figures are read by people, not asserted)."""

from __future__ import annotations

import pytest

from dutylink.adapters.bench import WORKLOADS, run


async def test_the_adapter_benchmark_measures_every_adapter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run(WORKLOADS, runs=1, count=20)
    lines = capsys.readouterr().out.splitlines()  # (log lines of the servers among them)
    assert "adapters into the gateway, median of 1 runs, 20 records each" in lines
    names = tuple(workload.name for workload in WORKLOADS)
    rows = {line[:40].strip(): line[40:].split() for line in lines if line.startswith(names)}
    assert set(rows) == set(names)
    for adapter, gateway, ratio in rows.values():
        assert float(adapter.replace(",", "")) > 0 and float(gateway.replace(",", "")) > 0
        assert float(ratio) > 0
