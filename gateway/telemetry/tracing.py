"""The gateway's traces (OpenTelemetry): a span per RPC, and the W3C trace context carried from a
publishing call into the stored event's headers and out on each delivery, so one warning can be
followed from the system that sent it to every agency's handler.

The trace context rides as the `traceparent` and `tracestate` headers of the stored message (the
CloudEvents distributed tracing extension) and as `Delivery.traceparent`/`tracestate`. With
`[telemetry] traces = "off"` (the default) the gateway records and exports nothing, but still
carries a caller's context through, so a department's traces continue across the exchange.

One TracerProvider per gateway, handed in (no global tracer provider is set or read).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.core.settings import TelemetrySettings

# The W3C Trace Context headers, as gRPC metadata keys and as stored NATS headers.
TRACE_HEADERS = ("traceparent", "tracestate")

_PROPAGATOR = TraceContextTextMapPropagator()


def provider_for(settings: TelemetrySettings, gateway_id: str) -> TracerProvider | None:
    """The provider `settings` ask for (None: tracing off), exporting in batches off the event
    loop's thread, sampling new traces at `trace_sample_ratio` and following a caller's choice."""
    if settings.traces == "off":
        return None
    # Imported only when asked for: the OTLP exporter brings its own gRPC stubs.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.service_name, "service.instance.id": gateway_id}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    exporter = OTLPSpanExporter(
        endpoint=settings.otlp_endpoint, insecure=settings.otlp_endpoint.startswith("http://")
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _context_of(carrier: Mapping[str, str]) -> Context:
    return _PROPAGATOR.extract({k: v for k, v in carrier.items() if k in TRACE_HEADERS})


def _headers_of(context: Context) -> dict[str, str]:
    """`context`'s span as W3C headers ({} when it holds no valid span)."""
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers, context=context)
    return headers


def metadata_headers(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The trace context headers among a call's metadata."""
    return {
        key: value if isinstance(value, str) else value.decode("ascii", "replace")
        for key, value in metadata or ()
        if key in TRACE_HEADERS
    }


class Tracing:
    """Spans and trace context for one gateway; `provider` None records nothing."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = (provider or trace.NoOpTracerProvider()).get_tracer("dutylink.gateway")

    @contextlib.contextmanager
    def rpc_span(
        self, method: str, metadata: Iterable[tuple[str, str | bytes]] | None, *, current: bool
    ) -> Iterator[trace.Span]:
        """A server span for one call of `method` ("package.Service/Method"), child of the
        caller's trace context if it sent one; the current span inside the block if `current`
        (a unary handler: the events it publishes carry it)."""
        if self.provider is None:  # traces off: nothing to record, no cost per call
            yield trace.INVALID_SPAN
            return
        service, _, name = method.lstrip("/").partition("/")
        span = self._tracer.start_span(
            method.lstrip("/"),
            context=_context_of(metadata_headers(metadata)),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        try:
            if current:
                with trace.use_span(span, end_on_exit=False, record_exception=False):
                    yield span
            else:
                yield span
        finally:
            span.end()

    @staticmethod
    def ended(span: trace.Span, code: grpc.StatusCode) -> None:
        """Record how the call ended (the span ends with its block)."""
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))

    def carried(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
        """The trace context the events of the current call are stored with: the call's own
        span when it is recorded, else the caller's context as it came (validated)."""
        current = trace.get_current_span()
        if current.get_span_context().is_valid and current.is_recording():
            return _headers_of(trace.set_span_in_context(current))
        sent = metadata_headers(metadata)
        # Most calls carry none: no propagator work on the publish path for them.
        return _headers_of(_context_of(sent)) if sent else {}

    def delivered(
        self, stored: Mapping[str, str], agency: str, subscription: str
    ) -> dict[str, str]:
        """The trace context of one delivery of a stored event: a span of its own (a child of
        the publishing call's) when traces are recorded, else the stored context."""
        if "traceparent" not in stored:
            return {}
        parent = _context_of(stored)
        if self.provider is None:
            return _headers_of(parent)
        span = self._tracer.start_span(
            "dutylink.deliver",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={"dutylink.agency": agency, "dutylink.subscription": subscription},
        )
        span.end()
        return _headers_of(trace.set_span_in_context(span))

    def shutdown(self) -> None:
        """Export what is still queued (a clean stop loses no span). Blocks: run it in a
        thread."""
        if self.provider is not None:
            self.provider.shutdown()
