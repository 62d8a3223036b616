"""The SDK's part in tracing (OpenTelemetry): the caller's trace context sent with each publish,
and each handler of `DutyLinkClient.consume` run in a span that continues the delivery's trace.
Both use the application's OpenTelemetry configuration (the global propagator and tracer
provider, as a library should): with none configured they send nothing and record nothing.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace

from dutylink.v1 import gateway_pb2

_tracer = trace.get_tracer("dutylink.sdk")


def with_trace_context(
    metadata: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str], ...]:
    """`metadata` and the W3C trace context of the caller's current span, if the application
    traces (OpenTelemetry's configured propagator): the gateway stores it with the events and
    hands it on with every delivery, so the trace follows each event to every handler."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return metadata + tuple(carrier.items())


def handling_span(delivery: gateway_pb2.Delivery, subscription: str) -> Any:
    """A consumer span around one handler call, a child of the delivery's trace context (a
    no-op unless the application configured an OpenTelemetry tracer provider)."""
    carrier = {"traceparent": delivery.traceparent, "tracestate": delivery.tracestate}
    return _tracer.start_as_current_span(
        f"{subscription} process",
        context=propagate.extract(carrier) if delivery.traceparent else None,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "dutylink",
            "messaging.operation.type": "process",
            "messaging.destination.subscription.name": subscription,
            "messaging.message.id": delivery.event.id,
        },
    )
