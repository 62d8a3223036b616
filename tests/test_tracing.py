"""One warning followed by its trace: from the span of the system that sent it, through the
gateway's Publish and its delivery to each agency, to each agency's handler (OpenTelemetry, W3C
Trace Context in the call's metadata, the stored event's headers and each Delivery)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dutylink.adapters.sdk import tracing as sdk_tracing
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import gateway_pb2
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

RECEIVERS = ("police", "health")


def recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@contextlib.asynccontextmanager
async def consuming(
    address: str, seen: dict[str, trace.SpanContext], everyone: asyncio.Event
) -> AsyncIterator[None]:
    """Each receiver's `consume`, noting the span its handler runs in."""

    def handler_of(agency: str) -> Callable[[gateway_pb2.Delivery], object]:
        async def handle(delivery: gateway_pb2.Delivery) -> None:
            seen[agency] = trace.get_current_span().get_span_context()
            if len(seen) == len(RECEIVERS):
                everyone.set()

        return handle

    async with contextlib.AsyncExitStack() as stack:
        tasks = []
        for agency in RECEIVERS:
            client = await stack.enter_async_context(DutyLinkClient(address, token=TOKENS[agency]))
            tasks.append(
                asyncio.create_task(
                    client.consume(f"traced-{agency}", handler_of(agency), families=["incident"])  # type: ignore[arg-type]
                )
            )
        await asyncio.sleep(0.3)  # the subscriptions are open
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_one_trace_follows_a_warning_from_its_sender_to_every_handler(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_provider, gateway_spans = recording()
    # The department systems' own tracing (their SDK's handler spans, their sender's span).
    department_provider, department_spans = recording()
    monkeypatch.setattr(sdk_tracing, "_tracer", department_provider.get_tracer("dutylink.sdk"))
    seen: dict[str, trace.SpanContext] = {}
    everyone = asyncio.Event()
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with (
        Gateway(config, nats_url=nats_url, tracer_provider=gateway_provider) as gateway,
        consuming(gateway.address, seen, everyone),
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        sender = department_provider.get_tracer("meteorological-bureau")
        with sender.start_as_current_span("issue warning") as sending:
            await fire.publish(incident_event())
        await asyncio.wait_for(everyone.wait(), 15)
    trace_id = sending.get_span_context().trace_id

    def in_trace(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
        return [s for s in spans if s.name == name and s.context.trace_id == trace_id]

    spans = gateway_spans.get_finished_spans()
    (publish,) = in_trace(spans, "dutylink.v1.PublisherService/Publish")
    assert (
        publish.parent is not None and publish.parent.span_id == sending.get_span_context().span_id
    )
    assert publish.kind is trace.SpanKind.SERVER
    assert publish.attributes is not None and publish.attributes["rpc.grpc.status_code"] == 0
    deliveries = in_trace(spans, "dutylink.deliver")
    assert sorted(
        str(d.attributes["dutylink.agency"]) for d in deliveries if d.attributes
    ) == sorted(RECEIVERS)
    assert all(
        d.parent is not None and d.parent.span_id == publish.context.span_id for d in deliveries
    )
    handlers = in_trace(department_spans.get_finished_spans(), "traced-police process")
    handlers += in_trace(department_spans.get_finished_spans(), "traced-health process")
    assert {h.context.span_id for h in handlers} == {c.span_id for c in seen.values()}
    assert {h.parent.span_id for h in handlers if h.parent} == {
        d.context.span_id for d in deliveries
    }
    assert all(context.trace_id == trace_id for context in seen.values())


async def test_with_traces_off_the_senders_context_is_still_carried_to_each_delivery(
    nats_url: str, tmp_path: Path
) -> None:
    """The default: the gateway records no span, yet a department's trace goes on across the
    exchange: each delivery carries the context the publisher sent."""
    provider, _ = recording()
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with (
        Gateway(config, nats_url=nats_url) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        police.subscribe("untraced", families=["incident"]) as subscription,
    ):
        with provider.get_tracer("sender").start_as_current_span("send") as sending:
            await fire.publish(incident_event())
        await fire.publish(incident_event())  # outside any span: nothing to carry
        first, second = [await subscription.next(timeout=10) for _ in range(2)]
    assert first is not None and second is not None
    context = sending.get_span_context()
    flags = int(context.trace_flags)
    assert first.traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    assert second.traceparent == "" and second.tracestate == ""
