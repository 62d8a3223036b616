"""The gateway's Prometheus metrics: RPCs by method and status code with their latency, and the
audit log's size and checkpoint age. One registry per gateway (no global state), served by a
small aiohttp endpoint on `[gateway] metrics_listen` (loopback by default).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Publish latency sits around a millisecond; streams (Subscribe) last minutes.
# A loop's steps take minutes to days: 1 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, 12 h, 1 d, 3 d, 7 d.
_LOOP_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "dutylink_rpcs", "Finished RPCs by method and status code",
            ["method", "code"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "dutylink_rpc_duration_seconds", "RPC duration (streams: until they end)",
            ["method"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.quota_refusals = Counter(
            "dutylink_quota_refusals", "Calls refused RESOURCE_EXHAUSTED by a limit of [gateway]",
            ["agency", "limit"], registry=self.registry,
        )  # fmt: skip
        self.advisories = Counter(
            "dutylink_publish_advisories",
            "Advisories in publish receipts (advice a stored event does not follow), by rule",
            ["agency", "rule_id"], registry=self.registry,
        )  # fmt: skip
        self.conflicts = Counter(
            "dutylink_publish_conflicts",
            "Publishes under an event id already stored with other content (not stored)",
            ["agency"], registry=self.registry,
        )  # fmt: skip
        self.escalations = Counter(
            "dutylink_escalations",
            "Escalation notices this replica published for missed deadlines, by deadline and "
            "state (raised, resolved)",
            ["deadline", "state"], registry=self.registry,
        )  # fmt: skip
        self.loop_seconds = Histogram(
            "dutylink_loop_seconds",
            "Time from an incident's report to each step of its loop (verify, assign, first_ack, "
            "handle, close), by the agency that took the step and the incident's category and "
            "severity; every replica folds the same stream, so aggregate over one replica",
            ["step", "agency", "category", "severity"], buckets=_LOOP_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.audit_size = Gauge(
            "dutylink_audit_log_entries", "Entries in this replica's audit log",
            registry=self.registry,
        )  # fmt: skip
        self.checkpoint_size = Gauge(
            "dutylink_audit_checkpoint_entries", "Entries covered by the latest signed checkpoint",
            registry=self.registry,
        )  # fmt: skip

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.rpcs.labels(method=method, code=code.name).inc()
        self.latency.labels(method=method).observe(seconds)


def _code(context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status the call ended with: what the servicer set (abort sets it), else OK when it
    returned, CANCELLED when the client went away, UNKNOWN for an unexpected exception."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, Exception):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.CANCELLED


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every RPC, whatever its shape, by wrapping its handler."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method).rsplit(".", 1)[-1]  # "Service/Method"
        metrics = self._metrics

        def timed_unary(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> Any:
                started, error = time.perf_counter(), None
                try:
                    return await behavior(request, context)
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    metrics.observe(method, _code(context, error), time.perf_counter() - started)

            return wrapper

        def timed_stream(behavior: Any) -> Any:
            if not inspect.isasyncgenfunction(behavior):
                return timed_unary(behavior)  # a handler that writes with context.write()

            async def wrapper(request: Any, context: Any) -> AsyncIterator[Any]:
                started, error = time.perf_counter(), None
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    metrics.observe(method, _code(context, error), time.perf_counter() - started)

            return wrapper

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                timed_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                timed_unary(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                timed_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            timed_stream(handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def metrics_route(registry: CollectorRegistry) -> web.RouteDef:
    """GET /metrics in Prometheus's text format, from `registry`."""

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return web.get("/metrics", exposition)


async def serve_http(routes: list[web.RouteDef], listen: str) -> tuple[web.AppRunner, int]:
    """Serve `routes` on `listen` (HOST:PORT, port 0 for any); returns the runner (clean it up
    to stop) and the port bound. For the gateway's and the adapters' small endpoints."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    return runner, int(runner.addresses[0][1])
