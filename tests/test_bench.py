"""The benchmark: every section runs end to end with tiny parameters and gives its figures in
shape (the figures themselves are for people to read: no timing is asserted here), and the
arithmetic of ratios and targets is exact."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dutylink.catalogue import load_catalogue
from dutylink.v1 import gateway_pb2
from gateway import bench
from gateway.bench import Figure, Target
from gateway.bench.board import FOLLOW_UP_LAG, REBUILD_STEPS, live_mix, rebuild_mix
from gateway.bench.harness import Series, interleave, make_events, refusals
from gateway.cli.main import app
from gateway.core.validation import Validator

# --- pure: ratios, targets, the table ------------------------------------------------------------


def test_the_ratio_is_the_median_of_same_run_ratios_not_a_ratio_of_medians() -> None:
    figure = Figure("publish", "x", "events/s", (1.0, 2.0, 9.0), "base", (1.0, 4.0, 3.0))
    assert figure.ratios == (1.0, 0.5, 3.0)
    assert figure.ratio == 1.0
    assert figure.median / statistics.median(figure.baseline_samples) == pytest.approx(2 / 3)


def test_a_figure_without_a_baseline_has_no_ratio() -> None:
    figure = Figure("checkpoint", "p99", "s", (0.9,))
    assert figure.ratio is None
    assert figure.baseline_median is None
    assert figure.met is None


@pytest.mark.parametrize(
    ("target", "samples", "baseline", "met"),
    [
        # At least 0.8x the baseline, judged on the median of per-run ratios.
        (Target(0.8, of_ratio=True), (80.0, 90.0, 70.0), (100.0, 100.0, 100.0), True),
        (Target(0.8, of_ratio=True), (79.0, 90.0, 70.0), (100.0, 100.0, 100.0), False),
        # At most 10 (ms), judged on the median of the samples, whatever the baseline.
        (Target(10, at_most=True), (9.0, 30.0, 10.0), (1.0, 1.0, 1.0), True),
        (Target(10, at_most=True), (11.0, 30.0, 10.0), (), False),
        # A ratio target without a baseline cannot be judged.
        (Target(0.7, of_ratio=True), (1.0,), (), None),
    ],
)
def test_targets_are_judged_on_the_medians(
    target: Target, samples: tuple[float, ...], baseline: tuple[float, ...], met: bool | None
) -> None:
    figure = Figure("s", "name", "ms", samples, "base" if baseline else "", baseline, target)
    assert figure.met is met


def test_the_table_has_every_column() -> None:
    judged = Figure(
        "publish", "unary", "events/s", (800.0,), "echo", (1000.0,), Target(0.8, of_ratio=True)
    )
    plain = Figure("fanout", "lag", "events", (3.0,))
    rows = bench.table_rows([judged, plain])
    assert rows[0] == ("unary", "800", "events/s", "echo 1,000", "0.80x", "≥ 0.8x", "yes", "800")
    assert rows[1] == ("lag", "3.00", "events", "—", "—", "—", "—", "3.00")
    assert all(len(row) == len(bench.COLUMNS) for row in rows)
    assert Target(10, at_most=True).text("ms") == "≤ 10 ms"


def test_the_title_names_the_servers_without_credentials() -> None:
    shared = bench.Settings(nats_url="nats://bench:secret@127.0.0.1:4222,nats://127.0.0.1:4223")
    assert bench.where(shared) == "nats://127.0.0.1:4222, nats://127.0.0.1:4223"
    assert "embedded" in bench.where(bench.Settings())


def test_the_title_says_where_the_gateway_ran() -> None:
    assert bench.mode(bench.Settings()) == (
        "gateway as its own process (checkpoint: in the bench's process)"
    )
    assert bench.mode(bench.Settings(sections=frozenset({"publish"}))) == (
        "gateway as its own process"
    )
    assert bench.mode(bench.Settings(in_process=True)) == "gateway in the bench's process"


async def test_measurements_alternate_so_none_always_runs_first() -> None:
    order: list[str] = []

    def measure(name: str) -> Series[str]:
        async def one(directory: Path) -> str:
            assert directory.name.startswith("dutylink-bench-")
            order.append(name)
            return f"{name}{len(order)}"

        return Series(one)

    first, second = measure("a"), measure("b")
    await interleave(3, [first, second])
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert first.samples == ["a1", "a4", "a5"], "one sample per run, in run order"


def test_an_unknown_section_is_refused_with_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["bench", "--only", "speed"])
    assert result.exit_code == 2
    assert "latency" in result.output


def test_the_help_names_every_section() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert [name for name in bench.SECTIONS if name not in result.output] == []


def test_each_bench_event_is_valid_and_opens_an_incident_of_its_own() -> None:
    """Under enforced lifecycles a second report of one incident is refused: the bench's
    events must never repeat one, nor lack what the validator and the catalogue require."""
    events = make_events(3)
    assert len({e.id for e in events}) == len({e.incident.incident_id for e in events}) == 3
    assert all(e.subject == e.correlation_id == e.incident.incident_id for e in events)
    reported = load_catalogue().get("incident.reported")
    assert reported is not None
    assert all(e.type == "incident.reported" and not reported.missing_fields(e) for e in events)
    assert Validator().problems(events[0]) == []


def test_the_live_board_mix_follows_each_report_with_an_update_then_a_verification() -> None:
    """Each incident's events go out in lifecycle order, its follow-ups some reports later
    (so the guard accepts them), every one valid and of a type the catalogue requires."""
    events = live_mix(30)
    assert len(events) == 90 and len({e.id for e in events}) == 90
    order: dict[str, list[str]] = {}
    first_seen: dict[str, int] = {}
    for position, event in enumerate(events):
        order.setdefault(event.incident.incident_id, []).append(event.type)
        first_seen.setdefault(event.incident.incident_id, position)
    assert len(order) == 30
    assert all(
        types == ["incident.reported", "incident.updated", "incident.verified"]
        for types in order.values()
    )
    update = next(i for i, e in enumerate(events) if e.type == "incident.updated")
    assert update > first_seen[events[update].incident.incident_id] + FOLLOW_UP_LAG
    catalogue = load_catalogue()
    for event in events:
        declared = catalogue.get(event.type)
        assert declared is not None and not declared.missing_fields(event), event.type
        assert Validator().problems(event) == [], event.type


def test_the_rebuild_stream_holds_whole_incidents_as_the_gateway_stores_them() -> None:
    events = rebuild_mix(1000)
    assert len(events) == 1000 and len({e.id for e in events}) == 1000
    per_incident: dict[str, list[str]] = {}
    for event in events:
        per_incident.setdefault(event.incident.incident_id, []).append(event.type)
    assert len(per_incident) == 200
    assert all(types == [t for t, _ in REBUILD_STEPS] for types in per_incident.values())
    assert events[0].incident.incident_id != events[1].incident.incident_id, "interleaved"


def test_refused_events_are_reported_so_no_figure_measures_them() -> None:
    stored = gateway_pb2.PublishResult(receipt=gateway_pb2.Receipt(event_id="a"))
    illegal = gateway_pb2.PublishResult(error=gateway_pb2.PublishError(code=9, message="state"))
    busy = gateway_pb2.PublishResult(error=gateway_pb2.PublishError(code=14, message="later"))
    assert refusals([stored, stored]) == ""
    assert refusals([stored, illegal, busy]) == "2 of 3 events refused (code 9: state)"
    assert refusals([stored, busy], but_retryable=True) == ""
    assert "code 9" in refusals([busy, illegal], but_retryable=True)


# --- end to end ----------------------------------------------------------------------------------


async def test_every_section_produces_its_figures_from_real_runs() -> None:
    settings = bench.Settings(
        runs=1,
        count=20,
        seconds=1.0,
        latency_rate=100,
        fanout_rate=50,
        fanout_agencies=3,
        checkpoint_rate=50,
        rss_seconds=2.0,
        rss_rate=50,
        lanes_backlog=200,
        board_events=300,
    )
    figures = await bench.run(settings)
    by_section: dict[str, list[Figure]] = {}
    for figure in figures:
        by_section.setdefault(figure.section, []).append(figure)
    assert list(by_section) == list(bench.SECTIONS), "every section, in order"
    assert [len(by_section[s]) for s in bench.SECTIONS] == [
        1,
        7,
        2,
        1,
        2,
        5,
        3,
        3,
        4,
        3,
        2,
        4,
        4,
        1,
    ]
    # CPU per event over 20 events may be below the kernel's tick (10 ms): zero.
    cpu = [f for f in figures if f.name.startswith("CPU per unary Publish event")]
    for figure in figures:
        assert len(figure.samples) == 1, figure.name
        assert len(figure.baseline_samples) in (0, len(figure.samples)), figure.name
        if figure.baseline_samples and figure not in cpu:
            assert figure.ratio == statistics.median(
                s / b for s, b in zip(figure.samples, figure.baseline_samples, strict=True)
            )
            assert figure.baseline_median is not None and figure.baseline_median > 0
    # Rates, latencies and memory are positive; lags and their growth may be zero (or, for
    # the growth, slightly negative when the subscribers catch up).
    signed = {
        "other agency's Publish calls failed under abuse",
        "abusive agency's events stored meanwhile",  # none may finish within a second
        "fan-out lag at the end, worst agency",
        "fan-out lag growth, worst agency",
        "gateway RSS growth",
        "routine backlog still queued at the last urgent event",  # a small one may be gone
    }
    assert [f.baseline for f in cpu] == [
        "the raw relay process, per call",
        "with the raw relay",
        "with the raw relay",
    ], "the gateway's, nats-server's and the clients' CPU, each beside the relay's"
    assert all(f.unit == "ms" and f.median >= 0 for f in cpu)
    assert all(f.median > 0 for f in figures if f.name not in signed and f not in cpu)
    p50, p99, top, light_p50, light_p99 = by_section["latency"]
    assert 0 < p50.median <= p99.median <= top.median
    assert 0 < light_p50.median <= light_p99.median, "the same path at a quarter of the rate"
    checkpoint_p50, checkpoint_p99 = by_section["checkpoint"]
    assert checkpoint_p50.median <= checkpoint_p99.median
    targets = {f.name: f.target for f in figures if f.target is not None}
    assert len(targets) == 15, (
        "unary (echo, relay), batch, audit, guard, p99, urgent p50 and p99, lag growth, "
        "checkpoint p99, the national profile's batch, subscribe and unary, RSS, workers"
    )
    *national, signature = by_section["profile"]
    assert {f.baseline for f in national} == {"international profile"}
    assert all(f.target == Target(0.85, of_ratio=True) for f in national)
    assert signature.baseline == "Ed25519" and signature.unit == "ms"
    urgent_p50, urgent_p99, _ = by_section["lanes"]
    assert urgent_p50.baseline == urgent_p99.baseline == "no backlog"
    assert 0 < urgent_p50.median <= urgent_p99.median
    batch_guarded, unary_guarded = by_section["guard"]
    assert batch_guarded.baseline == unary_guarded.baseline == "guard off"


async def test_the_board_section_measures_the_live_board_beside_subscribe_and_its_rebuild() -> None:
    """Real runs: an officer logged in to the console reads the live board (SSE) while a
    Subscribe of the same agency receives the same events; a fresh BoardFeed folds a stream
    of 300 stored events. The figures are in shape; their values are for people to read."""
    settings = bench.Settings(runs=2, seconds=1.0, board_events=300, sections=frozenset({"board"}))
    figures = await bench.run(settings)
    assert [f.section for f in figures] == ["board"] * 3
    p50, p99, rebuild = figures
    assert (p50.unit, p99.unit, rebuild.unit) == ("ms", "ms", "s per 100k events")
    assert "at 100 events/s" in p50.name and "300 events" in rebuild.name
    assert p50.baseline == p99.baseline == "Subscribe delivery"
    assert rebuild.baseline == "Board.add alone"
    assert all(len(f.samples) == len(f.baseline_samples) == 2 for f in figures)
    assert all(0 < s <= t for s, t in zip(p50.samples, p99.samples, strict=True))
    assert all(0 < s <= t for s, t in zip(p50.baseline_samples, p99.baseline_samples, strict=True))
    assert all(s > 0 for s in rebuild.samples + rebuild.baseline_samples)
    assert all(f.target is None for f in figures)


async def test_only_the_chosen_sections_run_and_each_is_announced_as_it_starts_and_ends() -> None:
    chosen = bench.Settings(runs=2, count=20, sections=frozenset({"policy"}), in_process=True)
    heard: list[str] = []
    figures = await bench.run(chosen, progress=heard.append)
    assert {f.section for f in figures} == {"policy"}
    assert all(len(f.samples) == len(f.baseline_samples) == 2 for f in figures)
    assert heard[0] == "[1/1] policy: measuring (2 runs)"
    assert heard[1].startswith("[1/1] policy: done in ") and heard[1].endswith(" s")
    assert len(heard) == 2


async def test_in_process_mode_gives_the_same_figures() -> None:
    """`--in-process`: the gateway and the echo in the bench's process, as before (the default,
    subprocesses, runs in the test above)."""
    sections = frozenset({"publish", "latency", "board", "fanout"})
    settings = bench.Settings(
        runs=1,
        count=20,
        seconds=1.0,
        latency_rate=100,
        fanout_rate=50,
        fanout_agencies=2,
        board_events=300,
        sections=sections,
        in_process=True,
    )
    figures = await bench.run(settings)
    # No CPU per process: the gateway's and the clients' are one process's.
    assert [f.section for f in figures] == (
        ["publish"] * 4 + ["latency"] * 5 + ["board"] * 3 + ["fanout"] * 3
    )
    assert all(len(f.samples) == 1 for f in figures)
    assert all(f.median > 0 for f in figures if f.section != "fanout" or f.baseline)
