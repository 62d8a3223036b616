"""The arithmetic of `dutylink serve --workers N`: how many workers, what each is called, and
how long a dead one waits before it is started again. Pure: the supervisor that runs them is
gateway.cli.workers."""

from __future__ import annotations

from dataclasses import dataclass

# A restarted worker waits this long after its first death, doubled after each death that came
# soon after a start, up to the last; one that served `STABLE_SECONDS` starts from the first.
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0


def worker_count(configured: int, cores: int | None, cap: int) -> int:
    """Workers to run: `configured` (`[gateway] workers` or `--workers`) when above 0, else one
    per core (1 when the cores are unknown), at most `cap` (`max_workers`)."""
    if configured > 0:
        return configured
    return max(1, min(cores or 1, cap))


def worker_id(replica_id: str, index: int) -> str:
    """The gateway id of worker `index` of the replica `replica_id`: the name of its own audit
    log (one writer each), e.g. gw-1-w0."""
    return f"{replica_id}-w{index}"


@dataclass(frozen=True)
class Restarts:
    """When a worker that keeps dying may start again: never in a tight loop."""

    deaths: int = 0  # in a row, each soon after its start

    def after_death(self, served_seconds: float) -> Restarts:
        """The state after a death that came `served_seconds` after the worker started."""
        return Restarts(1 if served_seconds >= STABLE_SECONDS else self.deaths + 1)

    @property
    def delay(self) -> float:
        """Seconds to wait before the next start."""
        if self.deaths == 0:
            return 0.0
        return min(RESTART_FIRST_SECONDS * 2.0 ** (self.deaths - 1), RESTART_MAX_SECONDS)
