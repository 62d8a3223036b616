"""The gateway's Prometheus metrics: the gRPC server's (`grpc_server_*`, named as
go-grpc-prometheus names them), the process's, and the exchange's own (`dutylink_*`: events
accepted and refused, deliveries, dead letters, subscriptions' lag, the audit log's size and
checkpoint age, loops, escalations). One registry per gateway (no global state), served by
prometheus_client's aiohttp handler on `[gateway] metrics_listen` (loopback by default).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway.telemetry.tracing import Tracing

_RPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]


@dataclass(frozen=True)
class Rpc:
    """One method as the gRPC metrics label it."""

    kind: str  # unary, client_stream, server_stream, bidi_stream
    service: str  # "dutylink.v1.PublisherService"
    method: str  # "Publish"

    @classmethod
    def of(cls, full_method: str, handler: Any) -> Rpc:
        service, _, method = full_method.lstrip("/").partition("/")
        kind = (
            "unary" if handler.unary_unary else "client_stream" if handler.stream_unary
            else "server_stream" if handler.unary_stream else "bidi_stream"
        )  # fmt: skip
        return cls(kind, service, method)

    def labels(self) -> tuple[str, str, str]:
        return (self.kind, self.service, self.method)


# Publish latency sits around a millisecond; streams (Subscribe) last minutes.
# A loop's steps take minutes to days: 1 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, 12 h, 1 d, 3 d, 7 d.
_LOOP_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The gRPC server metrics as go-grpc-prometheus names them (and dashboards expect):
        # grpc_type tells unary calls from streams, whose handling time is their lifetime.
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server",
            _RPC_LABELS, registry=self.registry,
        )  # fmt: skip
        self.handled = Counter(
            "grpc_server_handled", "RPCs completed on the server, whatever their status",
            [*_RPC_LABELS, "grpc_code"], registry=self.registry,
        )  # fmt: skip
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "How long the server handled each RPC (a stream: until it ended)",
            _RPC_LABELS, buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, ..._memory_bytes, ...
        PlatformCollector(registry=self.registry)  # python_info
        GCCollector(registry=self.registry)  # python_gc_*
        self.events_accepted = Counter(
            "dutylink_events_accepted", "Events stored (not counting retries of stored ones)",
            ["agency", "family"], registry=self.registry,
        )  # fmt: skip
        self.events_refused = Counter(
            "dutylink_events_refused",
            "Events refused or not stored, by the gRPC code their publisher got",
            ["agency", "family", "code"], registry=self.registry,
        )  # fmt: skip
        self.deliveries = Counter(
            "dutylink_deliveries", "Events sent to subscribers (first deliveries and redeliveries)",
            ["agency", "redelivery"], registry=self.registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "dutylink_dead_letters",
            "Events a subscription gave up on (max_deliveries, or unreadable) and dead-lettered",
            ["agency"], registry=self.registry,
        )  # fmt: skip
        self.subscription_pending = Gauge(
            "dutylink_subscription_pending",
            "Events waiting for an open subscription after its last fetch (consumer lag)",
            ["agency", "subscription"], registry=self.registry,
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
        self.serving = Gauge(
            "dutylink_serving",
            "1 while this replica's health says SERVING, 0 while NOT_SERVING (NATS away, the "
            "durability check not passed, shutting down)",
            registry=self.registry,
        )  # fmt: skip
        self.audit_append_failures = Counter(
            "dutylink_audit_append_failures",
            "Audit appends that failed (the calls waiting on them were refused: fail closed)",
            registry=self.registry,
        )  # fmt: skip
        self.certificate_expiry = Gauge(
            "dutylink_certificate_expiry_timestamp_seconds",
            "When each certificate the gateway serves with or trusts stops being valid (Unix "
            "time): the server certificate and the exchange CA with [tls]",
            ["certificate"], registry=self.registry,
        )  # fmt: skip
        self.checkpoint_age = Gauge(
            "dutylink_audit_checkpoint_age_seconds",
            "0 while a signed checkpoint covers every entry, else the seconds since this replica "
            "last signed one: how long an entry has waited for its signature at most",
            registry=self.registry,
        )  # fmt: skip

    def observe(self, rpc: Rpc, code: grpc.StatusCode, seconds: float) -> None:
        labels = rpc.labels()
        self.handled.labels(*labels, code.name).inc()
        self.handling.labels(*labels).observe(seconds)


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


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC, whatever its shape, by wrapping its handler, and records its
    span (gateway.telemetry.tracing): a unary handler runs with it as the current span."""

    def __init__(self, metrics: GatewayMetrics, tracing: Tracing) -> None:
        self._metrics = metrics
        self._tracing = tracing

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method = str(handler_call_details.method)  # "/package.Service/Method"
        rpc = Rpc.of(full_method, handler)
        metadata = handler_call_details.invocation_metadata
        metrics, tracing = self._metrics, self._tracing

        def timed_unary(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> Any:
                started, error = time.perf_counter(), None
                metrics.started.labels(*rpc.labels()).inc()
                with tracing.rpc_span(full_method, metadata, current=True) as span:
                    try:
                        return await behavior(request, context)
                    except BaseException as raised:
                        error = raised
                        raise
                    finally:
                        code = _code(context, error)
                        metrics.observe(rpc, code, time.perf_counter() - started)
                        tracing.ended(span, code)

            return wrapper

        def timed_stream(behavior: Any) -> Any:
            if not inspect.isasyncgenfunction(behavior):
                return timed_unary(behavior)  # a handler that writes with context.write()

            async def wrapper(request: Any, context: Any) -> AsyncIterator[Any]:
                started, error = time.perf_counter(), None
                metrics.started.labels(*rpc.labels()).inc()
                # Not the current span across the generator's yields (a context attached in
                # one step cannot be detached in another).
                with tracing.rpc_span(full_method, metadata, current=False) as span:
                    try:
                        async for item in behavior(request, context):
                            yield item
                    except BaseException as raised:
                        error = raised
                        raise
                    finally:
                        code = _code(context, error)
                        metrics.observe(rpc, code, time.perf_counter() - started)
                        tracing.ended(span, code)

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

    return web.get("/metrics", make_aiohttp_handler(registry))


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
