"""No agency can starve the others: per-agency limits on calls, open subscriptions and publish
bytes in progress, the gateway-wide limits kept by the gateway itself (never refusing health),
and fair turns among agencies for the expensive part of publishing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient
from dutylink.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.core.quotas import UNAUTHENTICATED, Claim, FairTurns, Limits, Quotas, Refusal
from gateway.rpc.fairness import FairScheduler
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

LIMITS = Limits(
    calls=4, agency_calls=2, agency_subscriptions=1, publish_bytes=1000, agency_publish_bytes=600
)


def test_an_agency_at_its_call_limit_is_refused_while_another_agency_is_admitted() -> None:
    quotas = Quotas(LIMITS)
    assert isinstance(quotas.acquire("police"), Claim)
    assert isinstance(quotas.acquire("police"), Claim)
    refused = quotas.acquire("police")
    assert isinstance(refused, Refusal) and refused.limit == "agency_max_concurrent_rpcs"
    assert "agency 'police'" in refused.message and "= 2" in refused.message
    assert isinstance(quotas.acquire("fire"), Claim)


def test_the_gateway_limit_refuses_once_all_agencies_together_reach_it() -> None:
    quotas = Quotas(LIMITS)
    for agency in ("police", "police", "fire", "fire"):
        assert isinstance(quotas.acquire(agency), Claim)
    refused = quotas.acquire("transport")
    assert isinstance(refused, Refusal) and refused.limit == "max_concurrent_rpcs"


def test_an_agency_share_above_the_gateway_limit_is_capped_by_it() -> None:
    quotas = Quotas(Limits(2, 500, 250, 10**6, 10**6))
    assert isinstance(quotas.acquire("police"), Claim)
    assert isinstance(quotas.acquire("police"), Claim)
    refused = quotas.acquire("police")
    assert isinstance(refused, Refusal) and refused.limit == "max_concurrent_rpcs"


def test_subscriptions_have_their_own_limit_below_the_call_limit() -> None:
    quotas = Quotas(LIMITS)
    assert isinstance(quotas.acquire("police", subscription=True), Claim)
    refused = quotas.acquire("police", subscription=True)
    assert isinstance(refused, Refusal) and refused.limit == "agency_max_subscriptions"
    assert isinstance(quotas.acquire("police"), Claim), "a unary call still fits"


def test_publish_bytes_in_progress_are_bounded_but_a_lone_large_request_passes() -> None:
    quotas = Quotas(LIMITS)
    lone = quotas.acquire("fire", publish_bytes=5000)
    assert isinstance(lone, Claim), "nothing else in flight: never blocked for good"
    refused = quotas.acquire("fire", publish_bytes=1)
    assert isinstance(refused, Refusal) and refused.limit == "agency_max_publish_bytes_in_flight"
    quotas.release(lone)
    first = quotas.acquire("fire", publish_bytes=400)
    assert isinstance(first, Claim)
    refused = quotas.acquire("fire", publish_bytes=400)
    assert isinstance(refused, Refusal) and "400 bytes" in refused.message
    assert isinstance(quotas.acquire("police", publish_bytes=400), Claim)
    refused = quotas.acquire("transport", publish_bytes=400)
    assert isinstance(refused, Refusal) and refused.limit == "max_publish_bytes_in_flight"


def test_released_claims_free_every_counter_and_forget_idle_agencies() -> None:
    quotas = Quotas(LIMITS)
    claims = [
        quotas.acquire("police", subscription=True),
        quotas.acquire("police", publish_bytes=300),
        quotas.acquire(UNAUTHENTICATED),
    ]
    for claim in claims:
        assert isinstance(claim, Claim)
        quotas.release(claim)
    assert (quotas.total.calls, quotas.total.subscriptions, quotas.total.publish_bytes) == (0, 0, 0)
    assert quotas.usage("police").calls == 0 and not quotas._agencies


def test_unauthenticated_callers_share_one_agency_allowance() -> None:
    quotas = Quotas(LIMITS)
    quotas.acquire(UNAUTHENTICATED)
    quotas.acquire(UNAUTHENTICATED)
    refused = quotas.acquire(UNAUTHENTICATED)
    assert isinstance(refused, Refusal) and "unauthenticated callers" in refused.message


def test_fair_turns_go_round_robin_over_agencies_not_in_order_of_arrival() -> None:
    turns = FairTurns(slots=1)
    assert turns.request("abuser")[1]
    queued = [("abuser", turns.request("abuser")[0]) for _ in range(3)]
    queued.append(("modest", turns.request("modest")[0]))
    queued.append(("other", turns.request("other")[0]))
    order = []
    while started_now := turns.finish():
        order += started_now
    by_ticket = dict((ticket, agency) for agency, ticket in queued)
    assert [by_ticket[t] for t in order] == ["abuser", "modest", "other", "abuser", "abuser"]
    assert turns.held == 0


def test_a_cancelled_waiter_loses_its_turn_and_nobody_else_does() -> None:
    turns = FairTurns(slots=1)
    turns.request("abuser")
    gone, _ = turns.request("modest")
    waiting, _ = turns.request("abuser")
    turns.cancel("modest", gone)
    assert turns.finish() == [waiting]
    assert turns.finish() == []


def test_free_slots_start_at_once_while_nobody_waits() -> None:
    turns = FairTurns(slots=2)
    assert turns.request("a")[1] and turns.request("a")[1]
    assert not turns.request("b")[1]


async def test_a_modest_agency_is_served_between_the_pieces_of_an_abusive_agencys_batches() -> None:
    scheduler = FairScheduler()
    order: list[str] = []

    def work(agency: str) -> Callable[[Sequence[int]], list[int]]:
        def admit(items: Sequence[int]) -> list[int]:
            order.append(agency)
            return [item * 2 for item in items]

        return admit

    abusive = [
        asyncio.create_task(scheduler.in_turns("abuser", range(4), work("abuser"), slice_seconds=0))
        for _ in range(6)
    ]
    for _ in range(3):
        await asyncio.sleep(0)  # the abuser's batches are under way, queued for their turns

    async def modest() -> None:
        async with scheduler.turn("modest"):
            order.append("modest")

    order.append("modest arrives")
    await asyncio.gather(*abusive, modest())
    assert [await task for task in abusive] == [[0, 2, 4, 6]] * 6
    arrived, served = order.index("modest arrives"), order.index("modest")
    # Behind the abuser's piece in progress and its turn already due, not its six batches.
    assert arrived > 0 and served - arrived <= 3, order
    assert order.count("abuser") == 24


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    scheduler = FairScheduler()
    entered: list[str] = []
    release = asyncio.Event()

    async def hold(agency: str) -> None:
        async with scheduler.turn(agency):
            entered.append(agency)
            await release.wait()

    first = asyncio.create_task(hold("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(hold("b"))
    last = asyncio.create_task(hold("c"))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await asyncio.gather(first, last)
    assert entered == ["a", "c"] and gone.cancelled()


# With a real gateway.


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return answer.status


@pytest.fixture
async def limited(nats_url: str) -> AsyncIterator[Gateway]:
    config = config_for_tests(
        gateway={
            "max_concurrent_rpcs": 6,
            "agency_max_concurrent_rpcs": 3,
            "agency_max_subscriptions": 2,
        }
    )
    async with gateway_for_tests(nats_url, config) as running:
        yield running


def _name() -> str:
    return f"quota-{uuid.uuid4().hex[:8]}"


async def test_subscriptions_past_an_agency_limit_are_refused_while_others_publish_and_health_answers(
    limited: Gateway,
) -> None:
    police = DutyLinkClient(limited.address, token=TOKENS["police"], retry=NO_RETRY)
    fire = DutyLinkClient(limited.address, token=TOKENS["fire"], retry=NO_RETRY)
    async with police, fire:
        held = [police.subscribe(_name(), families=["incident"]) for _ in range(2)]
        for subscription in held:
            await subscription.open()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await police.subscribe(_name(), families=["incident"]).open()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "agency 'police'" in str(caught.value.details())
        assert "agency_max_subscriptions = 2" in str(caught.value.details())
        receipt = await fire.publish(incident_event())
        assert receipt.stream_sequence > 0
        assert await _health(limited.address) == health_pb2.HealthCheckResponse.SERVING
        for subscription in held:
            await subscription.close()


async def test_health_answers_when_every_call_slot_of_the_gateway_is_held(nats_url: str) -> None:
    config = config_for_tests(gateway={"max_concurrent_rpcs": 2, "agency_max_concurrent_rpcs": 1})
    async with gateway_for_tests(nats_url, config) as small:
        police = DutyLinkClient(small.address, token=TOKENS["police"], retry=NO_RETRY)
        transport = DutyLinkClient(small.address, token=TOKENS["transport"], retry=NO_RETRY)
        fire = DutyLinkClient(small.address, token=TOKENS["fire"], retry=NO_RETRY)
        async with police, transport, fire:
            held = [
                police.subscribe(_name(), families=["incident"]),
                transport.subscribe(_name(), families=["incident"]),
            ]
            for subscription in held:
                await subscription.open()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await fire.publish(incident_event())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "gateway.max_concurrent_rpcs = 2" in str(caught.value.details())
            for _ in range(3):
                assert await _health(small.address) == health_pb2.HealthCheckResponse.SERVING
            for subscription in held:
                await subscription.close()
        refusals = small.metrics.registry.get_sample_value(
            "dutylink_quota_refusals_total", {"agency": "fire", "limit": "max_concurrent_rpcs"}
        )
        assert refusals == 1


async def test_a_cancelled_subscription_frees_its_slot(limited: Gateway) -> None:
    """Cancelled, not closed: the client goes away without a word."""
    async with grpc.aio.insecure_channel(limited.address) as channel:
        stub = gateway_pb2_grpc.SubscriberServiceStub(channel)
        metadata = (("authorization", f"Bearer {TOKENS['police']}"),)

        async def open_raw() -> grpc.aio.StreamStreamCall[Any, Any]:
            call = stub.Subscribe(metadata=metadata)
            opening = gateway_pb2.SubscribeRequest()
            opening.open.name = _name()
            opening.open.filter.families.append("incident")
            await call.write(opening)
            first = await call.read()
            assert isinstance(first, gateway_pb2.SubscribeResponse) and first.HasField("ready")
            return call

        calls = [await open_raw(), await open_raw()]
        with pytest.raises(grpc.aio.AioRpcError):
            await open_raw()
        calls[0].cancel()
        codes: list[grpc.StatusCode] = []
        # The server learns of the cancellation asynchronously: try until the slot is free.
        async with asyncio.timeout(30):
            while True:
                try:
                    calls.append(await open_raw())
                    break
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                    await asyncio.sleep(0.05)
        assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
        for call in calls[1:]:
            call.cancel()


async def test_publish_bytes_in_progress_are_bounded_per_agency_and_others_still_publish(
    nats_url: str,
) -> None:
    """Twenty batches of fire at once, each more than half fire's byte allowance: no two can be
    in progress together, so some are refused, naming the limit; police publishes meanwhile."""
    event_bytes = incident_event().ByteSize()
    batch = 20
    config = config_for_tests(
        gateway={"agency_max_publish_bytes_in_flight": int(event_bytes * batch * 1.5)}
    )
    async with gateway_for_tests(nats_url, config) as running:
        fire = DutyLinkClient(running.address, token=TOKENS["fire"], retry=NO_RETRY)
        police = DutyLinkClient(running.address, token=TOKENS["police"], retry=NO_RETRY)
        async with fire, police:
            outcomes = await asyncio.gather(
                *(fire.publish_batch([incident_event() for _ in range(batch)]) for _ in range(20)),
                police.publish(incident_event()),
                return_exceptions=True,
            )
    *batches, police_receipt = outcomes
    assert isinstance(police_receipt, gateway_pb2.Receipt)
    refused = [o for o in batches if isinstance(o, grpc.aio.AioRpcError)]
    assert refused and len(refused) < len(batches)
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all("agency_max_publish_bytes_in_flight" in str(e.details()) for e in refused)
