"""The figures of `dutylink bench`: samples, baselines, ratios, targets and the table. Pure."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.store.nats_auth import split_servers

SECTIONS = (
    "sync",
    "publish",
    "policy",
    "audit",
    "guard",
    "latency",
    "lanes",
    "board",
    "abuse",
    "fanout",
    "checkpoint",
    "profile",
    "soak",
    "workers",
)


@dataclass(frozen=True)
class Target:
    """A goal for a figure's median (`of_ratio`: for its ratio to the baseline): at least
    `limit`, or at most it."""

    limit: float
    at_most: bool = False
    of_ratio: bool = False

    def met(self, median: float, ratio: float | None) -> bool | None:
        """Whether the value meets the target; None when there is no ratio to judge."""
        value = ratio if self.of_ratio else median
        if value is None:
            return None
        return value <= self.limit if self.at_most else value >= self.limit

    def text(self, unit: str) -> str:
        sign = "≤" if self.at_most else "≥"
        return f"{sign} {self.limit:g}x" if self.of_ratio else f"{sign} {self.limit:g} {unit}"


@dataclass(frozen=True)
class Figure:
    """One row of the table: per-run samples and, when compared, the baseline's samples of the
    same runs, pairwise."""

    section: str
    name: str
    unit: str
    samples: tuple[float, ...]
    baseline: str = ""
    baseline_samples: tuple[float, ...] = ()
    target: Target | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline_samples) if self.baseline_samples else None

    @property
    def ratios(self) -> tuple[float, ...]:
        """This figure / the baseline, run by run."""
        return tuple(
            s / b if b else float("inf")
            for s, b in zip(self.samples, self.baseline_samples, strict=True)
        )

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.baseline_samples else None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.median, self.ratio)


def make_figure(
    section: str,
    name: str,
    unit: str,
    samples: Sequence[float],
    baseline: tuple[str, Sequence[float]] | None = None,
    target: Target | None = None,
) -> Figure:
    label, compared = baseline or ("", ())
    return Figure(section, name, unit, tuple(samples), label, tuple(compared), target)


COLUMNS = ("figure", "median", "unit", "baseline", "ratio", "target", "met", "runs")


def number(value: float) -> str:
    """Readable at every scale: 6,712 / 12.40 / 0.294."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def table_rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    """The cells of `dutylink bench`'s table, in COLUMNS order."""
    rows: list[tuple[str, ...]] = []
    for f in figures:
        baseline = f"{f.baseline} {number(f.baseline_median)}" if f.baseline_median else "—"
        met = {True: "yes", False: "no", None: "—"}[f.met]
        rows.append(
            (
                f.name,
                number(f.median),
                f.unit,
                baseline,
                "—" if f.ratio is None else f"{f.ratio:.2f}x",
                "—" if f.target is None else f.target.text(f.unit),
                met,
                ", ".join(number(s) for s in f.samples),
            )
        )
    return rows


@dataclass(frozen=True)
class Settings:
    """What to run; the defaults are `dutylink bench`'s."""

    runs: int = 3
    count: int = 2000  # events per throughput run
    seconds: float = 10.0  # length of each rate-driven run (latency, fan-out, checkpoint)
    sections: frozenset[str] = frozenset(SECTIONS)
    nats_url: str = ""  # "": fresh embedded servers
    in_process: bool = False  # the gateway (and the echo) in this process, as before
    rss_seconds: float = 600.0
    latency_rate: float = 1000.0
    abuse_rate: float = 50.0  # the modest agency's publishes per second
    fanout_rate: float = 500.0
    fanout_agencies: int = 20
    checkpoint_rate: float = 200.0
    lanes_backlog: int = 12_000  # routine events queued ahead of the urgent ones
    rss_rate: float = 500.0
    board_rate: float = 100.0  # events per second on the live board
    board_events: int = 100_000  # events in the stream the board is rebuilt from


def mode(settings: Settings) -> str:
    """Where the gateways measured ran (the checkpoint section reads the audit log's size, so
    its gateway always runs in this process)."""
    if settings.in_process:
        return "gateway in the bench's process"
    return "gateway as its own process" + (
        " (checkpoint: in the bench's process)" if "checkpoint" in settings.sections else ""
    )


def where(settings: Settings) -> str:
    """What the figures ran against, without credentials."""
    if not settings.nats_url:
        return "fresh embedded nats-servers (sync_interval: always)"
    return ", ".join(split_servers(settings.nats_url)[0])
