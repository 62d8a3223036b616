"""HTTP/2 connection management between the SDK and the gateway: keepalive pings within the
gateway's bounds, a client that pings too often told to go away, old connections aged out
without losing a subscription, and calls spread over every address a target resolves to."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from dutylink.adapters.sdk.client import CHANNEL_OPTIONS, DutyLinkClient
from dutylink.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.config import load
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event


def test_the_sdk_pings_no_more_often_than_the_gateway_allows_by_default() -> None:
    options = {name: value for name, value in CHANNEL_OPTIONS if isinstance(value, int)}
    allowed = load(None, environ={}).gateway.min_client_ping_seconds
    assert options["grpc.keepalive_time_ms"] >= allowed * 1000
    assert options["grpc.keepalive_permit_without_calls"] == 1, "idle subscriptions kept alive"


async def test_a_client_pinging_too_often_is_told_to_go_away(nats_url: str, tmp_path: Path) -> None:
    """A ping flood costs the gateway a GOAWAY, not a ping answer each: the client's call on
    that connection ends UNAVAILABLE ("Too many pings")."""
    config = config_for_tests(
        gateway={"min_client_ping_seconds": 30.0}, nats={"data_dir": str(tmp_path)}
    )
    eager = [
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        grpc.aio.insecure_channel(gateway.address, options=eager) as channel,
    ):
        stub = gateway_pb2_grpc.SubscriberServiceStub(channel)
        stream = stub.Subscribe(metadata=(("authorization", f"Bearer {TOKENS['police']}"),))
        opening = gateway_pb2.SubscriptionOpen(
            name="pings", filter=gateway_pb2.SubscriptionFilter(families=["incident"])
        )
        await stream.write(gateway_pb2.SubscribeRequest(open=opening))

        async def read_until_it_ends() -> None:
            async for _ in stream:  # no event comes: only pings keep the connection busy
                pass

        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(read_until_it_ends(), 20)
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert ended.value.details() == "Too many pings"


async def test_an_aged_connection_goes_away_and_the_subscription_continues(
    nats_url: str, tmp_path: Path
) -> None:
    """Connections older than max_connection_age are told to go away (so clients spread over
    the replicas as they are now); `consume` opens its subscription again and misses nothing."""
    config = config_for_tests(
        gateway={"max_connection_age_seconds": 0.5, "max_connection_age_grace_seconds": 0.5},
        nats={"data_dir": str(tmp_path)},
        # A pull cut short by the connection's end may still bring a message into no one's
        # hands; it comes again after the ack wait, which is short here so the wait below holds.
        subscriptions={"ack_wait_seconds": 2.0},
    )
    events = [incident_event() for _ in range(8)]
    received: set[str] = set()
    all_in = asyncio.Event()

    async def handler(delivery: gateway_pb2.Delivery) -> None:
        received.add(delivery.event.id)
        if received >= {e.id for e in events}:
            all_in.set()

    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        consuming = asyncio.create_task(police.consume("aged", handler, families=["incident"]))
        while not received:  # until the subscription exists (it takes what comes after)
            await fire.publish(incident_event())
            await asyncio.sleep(0.2)
        for event in events:  # over ~4 s: several connection lifetimes
            await fire.publish(event)
            await asyncio.sleep(0.5)
        await asyncio.wait_for(all_in.wait(), 20)
        # Subscribe streams that ended while `consume` ran: the connections that aged out.
        ended = sum(
            sample.value
            for metric in gateway.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "grpc_server_handled_total"
            and sample.labels["grpc_method"] == "Subscribe"
        )
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
    assert ended >= 2, "the subscription's connection was told to go away, again and again"
    assert received >= {e.id for e in events}, "every event, across the reconnections"


class _CountingPublisher(gateway_pb2_grpc.PublisherServiceServicer):
    """A replica that answers Publish only, counting the calls it got."""

    def __init__(self) -> None:
        self.calls = 0

    PublishBatch = None  # type: ignore[assignment]  # not called here

    async def Publish(
        self, request: gateway_pb2.PublishRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> gateway_pb2.PublishResponse:
        self.calls += 1
        return gateway_pb2.PublishResponse(receipt=gateway_pb2.Receipt(event_id=request.event.id))


@contextlib.asynccontextmanager
async def _publisher() -> AsyncIterator[tuple[int, _CountingPublisher]]:
    server = grpc.aio.server()
    servicer = _CountingPublisher()
    gateway_pb2_grpc.add_PublisherServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(None)


async def test_the_sdk_spreads_calls_over_every_address_of_its_target() -> None:
    """`round_robin`: a target resolving to two replicas gets calls on both, not all on the
    first (gRPC's default, pick_first)."""
    async with _publisher() as (first_port, first), _publisher() as (second_port, second):
        target = f"ipv4:127.0.0.1:{first_port},127.0.0.1:{second_port}"
        async with DutyLinkClient(target, token=TOKENS["fire"]) as client:
            for _ in range(20):
                await client.publish(incident_event())
    assert first.calls + second.calls == 20
    assert first.calls >= 5 and second.calls >= 5
