"""The benchmark runs end to end (its figures are for people to read, not asserted here)."""

from __future__ import annotations

from gateway import bench


async def test_the_benchmark_produces_every_figure_from_real_runs() -> None:
    figures = await bench.run(runs=1, count=20)
    assert [f.unit for f in figures] == ["ms/publish"] * 2 + ["events/s"] * 6
    assert all(len(f.samples) == 1 and f.median > 0 for f in figures)
