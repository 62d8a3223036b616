"""What every adapter serves on its small HTTP endpoint: the adapter counters (one Prometheus
registry per adapter) and GET /metrics. Kept in adapters/ so that an adapter needs only the SDK,
prometheus_client and aiohttp, not the gateway.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)


class Metrics:
    """The counters every adapter exposes on /metrics (one registry per adapter)."""

    def __init__(self, adapter: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"adapter": adapter}
        self.records_in = Counter(
            "dutylink_adapter_records_in", "Department records read", registry=self.registry,
            labelnames=["adapter"],
        ).labels(**labels)  # fmt: skip
        self.events_published = Counter(
            "dutylink_adapter_events_published", "Events the gateway stored (new or duplicate)",
            registry=self.registry, labelnames=["adapter"],
        ).labels(**labels)  # fmt: skip
        self.records_out = Counter(
            "dutylink_adapter_records_out", "Records handed to the department system",
            registry=self.registry, labelnames=["adapter"],
        ).labels(**labels)  # fmt: skip
        self.rejected = Counter(
            "dutylink_adapter_records_rejected", "Records kept in rejected/, by direction",
            registry=self.registry, labelnames=["adapter", "direction"],
        )  # fmt: skip
        self.parts_rejected = Counter(
            "dutylink_adapter_parts_rejected",
            "Parts of partially published records kept in rejected/ (e.g. an envelope's bad "
            "content objects); a record rejected whole counts in records_rejected only",
            registry=self.registry, labelnames=["adapter"],
        ).labels(**labels)  # fmt: skip
        self.lag = Gauge(
            "dutylink_adapter_lag_seconds",
            "Age of the last record handled when it was handled (in: since the file or request "
            "arrived; out: since the gateway received the event)",
            registry=self.registry, labelnames=["adapter", "direction"],
        )  # fmt: skip
        self.adapter = adapter
        for direction in ("in", "out"):  # exported as 0 from the start, not missing
            self.rejected.labels(adapter=adapter, direction=direction)
            self.lag.labels(adapter=adapter, direction=direction)


def metrics_route(registry: CollectorRegistry) -> web.RouteDef:
    """GET /metrics in Prometheus's text format, from `registry`."""

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return web.get("/metrics", exposition)


async def serve_http(routes: list[web.RouteDef], listen: str) -> tuple[web.AppRunner, int]:
    """Serve `routes` on `listen` (HOST:PORT, port 0 for any); returns the runner (clean it up
    to stop) and the port bound."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    return runner, int(runner.addresses[0][1])
