"""One `/metrics` for the workers of `dutylink serve --workers N`: the supervisor serves
`[gateway] metrics_listen` and, at each scrape, reads every live worker's own endpoint (on a
loopback port of its choosing) and returns all their series, each labelled `worker="w<i>"`.
Each series keeps its worker's exact value (a counter of a restarted worker starts again from 0,
as Prometheus expects of a restarted process); totals are PromQL's `sum without (worker)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = structlog.get_logger("dutylink.metrics")
SCRAPE_TIMEOUT_SECONDS = 5.0
WORKER_LABEL = "worker"


class _Families:
    """A collector that yields families already made."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge_expositions(texts: Mapping[str, str]) -> bytes:
    """The Prometheus text expositions of several workers (worker label -> text) as one, every
    sample labelled with its worker; families in the order they first appear."""
    merged: dict[str, Metric] = {}
    for worker, text in texts.items():
        for family in text_string_to_metric_families(text):
            into = merged.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            into.samples += [
                sample._replace(labels={**sample.labels, WORKER_LABEL: worker})
                for sample in family.samples
            ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merged.values()))
    return bytes(generate_latest(registry))


def workers_metrics_route(ports: Mapping[str, int]) -> web.RouteDef:
    """GET /metrics: the merged metrics of the workers whose metrics ports `ports` holds now
    (worker label -> port on 127.0.0.1; a worker that does not answer is left out and logged)."""

    async def one(session: aiohttp.ClientSession, worker: str, port: int) -> str | None:
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                answer.raise_for_status()
                return await answer.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("metrics.worker_unread", worker=worker, error=str(error) or repr(error))
            return None

    async def exposition(_: web.Request) -> web.Response:
        current = dict(ports)
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            texts = await asyncio.gather(*(one(session, w, p) for w, p in current.items()))
        answered = {w: t for w, t in zip(current, texts, strict=True) if t is not None}
        return web.Response(
            body=merge_expositions(answered), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return web.get("/metrics", exposition)
