"""The benchmark runs end to end (its figures are for people to read, not asserted here)."""

from __future__ import annotations

from gateway import bench


async def test_the_benchmark_produces_every_figure_from_real_runs() -> None:
    figures = await bench.run(runs=1, count=20, load_seconds=2.5)
    by_unit = [f.unit for f in figures]
    assert by_unit == ["ms/publish"] * 2 + ["events/s"] * 7 + ["%", "s", "s"]
    assert all(len(f.samples) == 1 for f in figures)
    # Rates and latencies are positive; the audit overhead (1 - on/off) may come out negative on
    # a noisy machine, so it is only required to be there.
    overhead = figures[9]
    assert all(f.median > 0 for f in figures if f is not overhead)
    p50, p99 = figures[10], figures[11]
    assert 0 < p50.median <= p99.median < 5
