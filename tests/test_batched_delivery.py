"""Batched delivery on the Subscribe stream: a subscriber that asks for `batch_deliveries` gets
the deliveries of one fetch in one `deliveries` message and the confirmations of one `acks`
batch in one `acks_confirmed`; an `acks` batch settles every delivery it names (an unknown id
is answered as such, alone); a client that does not ask gets one message per delivery, as
before. Raw gRPC here, so the wire itself is what is checked; the SDK (batched by default) is
exercised by every other subscription test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.rpc.subscribe import delivery_batches
from gateway.server import Gateway
from gateway.testkit.inprocess import gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

UNKNOWN_DELIVERY = 999_999


def test_batches_keep_the_order_and_their_size_bound_and_a_large_delivery_travels_alone() -> None:
    def sized(payload: int) -> gateway_pb2.Delivery:
        event = event_pb2.Event(id="x" * payload)
        return gateway_pb2.Delivery(delivery_id=payload, event=event)

    small, large = [sized(100 + i) for i in range(5)], sized(5_000)
    batches = delivery_batches([*small[:3], large, *small[3:]], max_bytes=400)
    assert [[d.delivery_id for d in batch] for batch in batches] == [
        [100, 101, 102],
        [5_000],
        [103, 104],
    ]
    assert delivery_batches([], max_bytes=400) == []


@pytest.fixture
async def gateway(nats_url: str) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url) as started:
        yield started


@contextlib.asynccontextmanager
async def raw_subscription(
    address: str, opening: gateway_pb2.SubscriptionOpen
) -> AsyncIterator[Any]:
    """Police's Subscribe stream, opened, as a client without the SDK would hold it."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.SubscriberServiceStub(channel)
        call = stub.Subscribe(metadata=(("authorization", f"Bearer {TOKENS['police']}"),))
        await call.write(gateway_pb2.SubscribeRequest(open=opening))
        ready = cast(gateway_pb2.SubscribeResponse, await call.read())
        assert ready.WhichOneof("kind") == "ready"
        try:
            yield call
        finally:
            call.cancel()


async def published(gateway: Gateway, count: int, subscription: str) -> list[str]:
    """`count` incident reports waiting for police's `subscription` (made first: a new
    subscription starts from the events published after it)."""
    async with raw_subscription(gateway.address, opening(subscription, batched=False)):
        pass
    events = [incident_event() for _ in range(count)]
    async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
        await fire.publish_batch(events)
    return [event.id for event in events]


async def read(call: Any) -> gateway_pb2.SubscribeResponse:
    response = await call.read()
    assert response is not grpc.aio.EOF
    return cast(gateway_pb2.SubscribeResponse, response)


def opening(name: str, *, batched: bool) -> gateway_pb2.SubscriptionOpen:
    return gateway_pb2.SubscriptionOpen(
        name=name,
        filter=gateway_pb2.SubscriptionFilter(families=["incident"]),
        max_in_flight=10,
        confirm_acks=True,
        batch_deliveries=batched,
    )


async def test_a_batching_subscriber_gets_a_fetch_in_one_message_and_settles_a_batch_of_acks(
    gateway: Gateway,
) -> None:
    ids = await published(gateway, 5, "batched")
    async with raw_subscription(gateway.address, opening("batched", batched=True)) as call:
        messages, deliveries = 0, []
        while len(deliveries) < 5:
            response = await read(call)
            assert response.WhichOneof("kind") == "deliveries"
            messages += 1
            deliveries.extend(response.deliveries.deliveries)
        assert [d.event.id for d in deliveries] == ids  # in stream order
        assert messages < 5  # all five were waiting: they came in one fetch
        acked = [d.delivery_id for d in deliveries]
        batch = gateway_pb2.AckBatch(delivery_ids=[*acked, UNKNOWN_DELIVERY])
        await call.write(gateway_pb2.SubscribeRequest(acks=batch))
        confirmed: list[int] = []
        refused = None
        while len(confirmed) < 5 or refused is None:
            response = await read(call)
            kind = response.WhichOneof("kind")
            if kind == "acks_confirmed":
                confirmed.extend(response.acks_confirmed.delivery_ids)
            else:
                assert kind == "ack_not_confirmed"
                refused = response.ack_not_confirmed
        assert sorted(confirmed) == sorted(acked)
        assert refused.delivery_id == UNKNOWN_DELIVERY
    async with DutyLinkClient(gateway.address, token=TOKENS["police"]) as police:
        reopened = police.subscribe("batched", families=["incident"])
        assert (await reopened.open()).pending == 0  # every ack of the batch stood
        await reopened.close()


async def test_a_client_that_does_not_ask_gets_one_delivery_and_one_confirmation_a_message(
    gateway: Gateway,
) -> None:
    ids = await published(gateway, 3, "single")
    async with raw_subscription(gateway.address, opening("single", batched=False)) as call:
        deliveries = []
        for _ in ids:
            response = await read(call)
            assert response.WhichOneof("kind") == "delivery"
            deliveries.append(response.delivery)
        assert [d.event.id for d in deliveries] == ids
        for one in deliveries:
            ack = gateway_pb2.Ack(delivery_id=one.delivery_id)
            await call.write(gateway_pb2.SubscribeRequest(ack=ack))
            response = await read(call)
            assert response.WhichOneof("kind") == "ack_confirmed"
            assert response.ack_confirmed.delivery_id == one.delivery_id


async def test_an_empty_batch_of_acks_is_invalid_argument(gateway: Gateway) -> None:
    async with raw_subscription(gateway.address, opening("empty", batched=True)) as call:
        await call.write(gateway_pb2.SubscribeRequest(acks=gateway_pb2.AckBatch()))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "acks.delivery_ids" in (caught.value.details() or "")
