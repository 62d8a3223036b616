"""Receiving through the gateway: each family end to end, filters, acks, redelivery, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from nats.aio.msg import Msg

from dutylink.adapters.sdk.client import AckNotConfirmedError, DutyLinkClient, Subscription
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.core import subjects
from gateway.core.ports import StoreUnavailableError
from gateway.server import Gateway
from gateway.store.jetstream import EventStore
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS, ClientFactory, agency_clients
from tests.factories import incident_event, resource_request_event, warning_event


async def receive(
    subscription: Subscription, count: int, *, ack: bool = True, timeout: float = 10.0
) -> list[gateway_pb2.Delivery]:
    deliveries = []
    for _ in range(count):
        delivery = await subscription.next(timeout=timeout)
        assert delivery is not None, "the stream ended early"
        deliveries.append(delivery)
        if ack:
            await subscription.ack(delivery)
    return deliveries


async def assert_nothing_arrives(subscription: Subscription, within: float = 1.5) -> None:
    with pytest.raises(TimeoutError):
        await subscription.next(timeout=within)


async def assert_nothing_pending(client: DutyLinkClient, name: str) -> None:
    """Reopened, the confirming subscription `name` has nothing left to deliver."""
    reopened = client.subscribe(name, families=["incident"], confirm_acks=True)
    assert (await reopened.open()).pending == 0
    await reopened.close()


@pytest.mark.parametrize(
    ("publisher", "make_event", "family"),
    [("fire", incident_event, "incident"), ("health", resource_request_event, "resource"),
     ("ecology", warning_event, "warning")],
)  # fmt: skip
async def test_every_family_reaches_every_subscribed_agency_as_published(
    client_for: ClientFactory, publisher: str, make_event: object, family: str
) -> None:
    receivers = [await client_for(agency) for agency in ("police", "transport")]
    subscriptions = [r.subscribe("duty", families=[family]) for r in receivers]
    for subscription in subscriptions:
        await subscription.open()
    event = make_event()  # type: ignore[operator]
    receipt = await (await client_for(publisher)).publish(event)
    for subscription in subscriptions:
        (delivery,) = await receive(subscription, 1)
        assert delivery.stream_sequence == receipt.stream_sequence
        assert delivery.attempt == 1
        assert delivery.event.source == publisher
        stamped = event_pb2.Event()
        stamped.CopyFrom(event)
        stamped.source = publisher
        stamped.received_time.CopyFrom(receipt.received_time)
        assert delivery.event == stamped
        await subscription.close()


async def test_filters_select_by_family_jurisdiction_and_plane(client_for: ClientFactory) -> None:
    police = await client_for("police")
    subscription = police.subscribe("pudong", families=["incident"], jurisdiction_prefixes=["3101"])
    await subscription.open()
    fire = await client_for("fire")
    elsewhere = incident_event()
    elsewhere.jurisdiction.division_code = "440305"
    drill = incident_event()
    drill.plane = event_pb2.PLANE_EXERCISE
    await fire.publish(elsewhere)
    await fire.publish(drill)
    await (await client_for("ecology")).publish(warning_event())
    wanted = incident_event()
    await fire.publish(wanted)
    (delivery,) = await receive(subscription, 1)
    assert delivery.event.id == wanted.id
    await assert_nothing_arrives(subscription)
    await subscription.close()


async def test_a_subscriber_that_disconnects_resumes_with_every_event_and_none_twice(
    client_for: ClientFactory,
) -> None:
    police = await client_for("police")
    fire = await client_for("fire")
    first = police.subscribe("resume", families=["incident"])
    await first.open()
    events = [incident_event() for _ in range(10)]
    for event in events[:4]:
        await fire.publish(event)
    got = await receive(first, 4)
    await first.close()
    for event in events[4:]:
        await fire.publish(event)  # published while the agency is away
    second = police.subscribe("resume", families=["incident"])
    ready = await second.open()
    assert ready.pending == 6
    got += await receive(second, 6)
    assert [d.event.id for d in got] == [e.id for e in events]
    await assert_nothing_arrives(second)
    await second.close()


async def test_an_unacked_delivery_comes_again_after_the_stream_closes(
    client_for: ClientFactory,
) -> None:
    police = await client_for("police")
    first = police.subscribe("retry", families=["incident"])
    await first.open()
    event = incident_event()
    await (await client_for("fire")).publish(event)
    await receive(first, 1, ack=False)
    await first.close()
    second = police.subscribe("retry", families=["incident"])
    await second.open()
    (again,) = await receive(second, 1)
    assert again.event.id == event.id and again.attempt == 2
    await second.close()


async def test_a_nacked_delivery_is_redelivered_after_its_delay(client_for: ClientFactory) -> None:
    police = await client_for("police")
    subscription = police.subscribe("nack", families=["incident"])
    await subscription.open()
    await (await client_for("fire")).publish(incident_event())
    (first,) = await receive(subscription, 1, ack=False)
    await subscription.nack(first, delay=timedelta(milliseconds=300), reason="database busy")
    (second,) = await receive(subscription, 1)
    assert second.stream_sequence == first.stream_sequence and second.attempt == 2
    await subscription.close()


async def test_a_slow_subscriber_gets_no_more_than_its_in_flight_limit(
    client_for: ClientFactory,
) -> None:
    police = await client_for("police")
    subscription = police.subscribe("slow", families=["incident"], max_in_flight=3)
    ready = await subscription.open()
    assert ready.max_in_flight == 3
    fire = await client_for("fire")
    await fire.publish_batch([incident_event() for _ in range(8)])
    held = await receive(subscription, 3, ack=False)
    await assert_nothing_arrives(subscription, within=1.0)
    await subscription.ack(held[0])
    (fourth,) = await receive(subscription, 1, ack=False)
    assert fourth.stream_sequence > held[-1].stream_sequence
    await subscription.close()


async def test_a_confirmed_ack_is_final_and_an_ack_of_a_superseded_delivery_is_not_confirmed(
    nats_url: str,
) -> None:
    config = config_for_tests(subscriptions={"ack_wait_seconds": 2})
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        agency_clients(gateway.address) as client_for,
    ):
        police, fire = await client_for("police"), await client_for("fire")
        subscription = police.subscribe("confirm", families=["incident"], confirm_acks=True)
        await subscription.open()
        kept, late = incident_event(), incident_event()
        await fire.publish(kept)
        (delivery,) = await receive(subscription, 1)  # returns once confirmed
        assert delivery.event.id == kept.id
        # Not acked within the ack wait: redelivered, and the first delivery is stale.
        await fire.publish(late)
        (first,) = await receive(subscription, 1, ack=False)
        (again,) = await receive(subscription, 1, ack=False)
        assert again.stream_sequence == first.stream_sequence and again.attempt == 2
        with pytest.raises(AckNotConfirmedError, match="superseded"):
            await subscription.ack(first)  # answered at once, not waited out
        await subscription.ack(again)
        await subscription.close()
        # Both confirmed acks are final: nothing comes back to a new session.
        reopened = police.subscribe("confirm", families=["incident"], confirm_acks=True)
        assert (await reopened.open()).pending == 0
        await assert_nothing_arrives(reopened)
        await reopened.close()
        with pytest.raises(ConnectionError, match="not open"):
            await reopened.ack(again)


async def test_an_ack_sent_after_the_stream_ended_raises_connection_error(nats_url: str) -> None:
    """An ack from a handler task that outlived its stream (the gateway went away meanwhile)
    raises the documented ConnectionError, not grpc's InvalidStateError."""
    police = fire = None
    try:
        async with gateway_for_tests(nats_url, config_for_tests()) as gateway:
            police = DutyLinkClient(gateway.address, token=TOKENS["police"])
            fire = DutyLinkClient(gateway.address, token=TOKENS["fire"])
            subscription = police.subscribe("outlived", families=["incident"])
            await subscription.open()
            await fire.publish(incident_event())
            (delivery,) = await receive(subscription, 1, ack=False)
        with contextlib.suppress(grpc.aio.AioRpcError):  # the gateway ended the stream
            assert await subscription.next(timeout=10) is None
        with pytest.raises(ConnectionError, match="ended"):
            await subscription.ack(delivery)
        await subscription.close()
    finally:
        for client in (police, fire):
            if client is not None:
                await client.close()


async def test_a_redelivery_while_the_ack_is_on_its_way_is_not_sent(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer leader cut off from its peers holds up the gateway's ack past the ack wait,
    and JetStream redelivers the event meanwhile: the subscriber, whose ack is then confirmed,
    must not be handed it again (the partition drill once caught exactly that)."""
    config = config_for_tests(subscriptions={"ack_wait_seconds": 1})
    consumer = subjects.consumer_name("police", "held-up")

    async def until_redelivered() -> None:
        async with await nats.connect(nats_url) as watcher:
            jetstream = watcher.jetstream()
            for _ in range(100):
                info = await jetstream.consumer_info(subjects.EVENTS_STREAM, consumer)
                if info.num_redelivered:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("JetStream never redelivered the event")
        await asyncio.sleep(0.5)  # and the gateway has fetched the redelivery

    def held_up(write: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def held(*args: object, **options: object) -> None:
            await until_redelivered()
            await write(*args, **options)

        return held

    # Both of the ack's writes: the consumer's and the ack record's leaders were cut off.
    monkeypatch.setattr(EventStore, "ack", held_up(EventStore.ack))
    monkeypatch.setattr(
        EventStore, "record_confirmed_ack", held_up(EventStore.record_confirmed_ack)
    )
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        agency_clients(gateway.address) as client_for,
    ):
        police, fire = await client_for("police"), await client_for("fire")
        subscription = police.subscribe("held-up", families=["incident"], confirm_acks=True)
        await subscription.open()
        event = incident_event()
        await fire.publish(event)
        (delivery,) = await receive(subscription, 1)  # returns once confirmed
        assert delivery.event.id == event.id
        await assert_nothing_arrives(subscription, within=2.0)
        await subscription.close()
        await assert_nothing_pending(police, "held-up")


async def test_an_ack_jetstream_left_unanswered_is_answered_at_once_and_still_counts(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscriber hears at once that its ack was not confirmed, instead of waiting it out.
    Its ack record was written all the same, so the redelivery is acked for it, not sent."""
    config = config_for_tests(subscriptions={"ack_wait_seconds": 1})
    passed_on = EventStore.ack
    failures = [StoreUnavailableError("JetStream did not acknowledge in time; outcome unknown")]

    async def unanswered_once(store: EventStore, message: Msg, **options: float) -> None:
        if failures:
            raise failures.pop()
        await passed_on(store, message, **options)

    monkeypatch.setattr(EventStore, "ack", unanswered_once)
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        agency_clients(gateway.address) as client_for,
    ):
        police, fire = await client_for("police"), await client_for("fire")
        subscription = police.subscribe("unanswered", families=["incident"], confirm_acks=True)
        await subscription.open()
        event = incident_event()
        await fire.publish(event)
        (first,) = await receive(subscription, 1, ack=False)
        with pytest.raises(AckNotConfirmedError, match="did not acknowledge in time"):
            await subscription.ack(first)
        await assert_nothing_arrives(subscription, within=3.0)  # three ack waits
        await subscription.close()
        await assert_nothing_pending(police, "unanswered")


async def test_a_redelivery_of_an_ack_any_replica_confirmed_is_acked_again_not_sent(
    nats_url: str,
) -> None:
    """JetStream answers an ack before replicating it, so after a consumer leader change it may
    redeliver an event whose ack a replica confirmed. Every confirmed ack leaves a replicated
    record; here that record is written directly, as another replica would have written it,
    and the delivery is then nacked so that JetStream redelivers it."""
    config = config_for_tests()
    consumer = subjects.consumer_name("police", "elsewhere")
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        agency_clients(gateway.address) as client_for,
    ):
        police, fire = await client_for("police"), await client_for("fire")
        other_replica = EventStore(config)
        await other_replica.connect(nats_url)
        try:
            subscription = police.subscribe("elsewhere", families=["incident"], confirm_acks=True)
            await subscription.open()
            await fire.publish(incident_event())
            (acked,) = await receive(subscription, 1)  # confirmed
            assert await other_replica.ack_confirmed(consumer, acked.stream_sequence)

            await fire.publish(incident_event())
            (held,) = await receive(subscription, 1, ack=False)
            assert not await other_replica.ack_confirmed(consumer, held.stream_sequence)
            await other_replica.record_confirmed_ack(consumer, held.stream_sequence)
            await subscription.nack(held, delay=timedelta(0))
            later = incident_event()
            await fire.publish(later)
            (delivery,) = await receive(subscription, 1)
            assert delivery.event.id == later.id, "the redelivery was acked, not sent"
            await assert_nothing_arrives(subscription)
            await subscription.close()
            await assert_nothing_pending(police, "elsewhere")
        finally:
            await other_replica.close()


async def test_an_event_never_acked_is_dead_lettered_and_replays_to_its_subscription_only(
    nats_url: str,
) -> None:
    config = config_for_tests(subscriptions={"ack_wait_seconds": 0.5, "max_deliveries": 2})
    async with gateway_for_tests(nats_url, config) as gateway:
        police = DutyLinkClient(gateway.address, token=TOKENS["police"])
        transport = DutyLinkClient(gateway.address, token=TOKENS["transport"])
        poisoned = police.subscribe("poison", families=["incident"])
        healthy = transport.subscribe("healthy", families=["incident"])
        await poisoned.open()
        await healthy.open()
        fire = DutyLinkClient(gateway.address, token=TOKENS["fire"])
        event = incident_event()
        await fire.publish(event)
        await receive(healthy, 1)
        attempts = [d.attempt for d in await receive(poisoned, 2, ack=False)]
        assert attempts == [1, 2]
        await assert_nothing_arrives(poisoned, within=2.0)

        store = EventStore(config)
        await store.connect(nats_url)
        (letter,) = await store.dead_letters("police", "poison")
        assert (letter.event_id, letter.source, letter.deliveries) == (event.id, "fire", 2)
        _, first = await store.replay_dead_letter(letter.sequence)
        _, again = await store.replay_dead_letter(letter.sequence)
        assert again.duplicate and again.sequence == first.sequence
        (replayed,) = await receive(poisoned, 1)
        assert replayed.event.id == event.id
        await assert_nothing_arrives(healthy, within=1.0)
        assert [d.event_id for d in await store.dead_letters()] == [event.id], (
            "replay keeps the record"
        )
        await store.close()
        for subscription in (poisoned, healthy):
            await subscription.close()
        for client in (police, transport, fire):
            await client.close()

    listing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "deadletter", "list", "--nats-url", nats_url,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    output, _ = await listing.communicate()
    assert listing.returncode == 0
    assert event.id in output.decode()


async def test_nothing_acknowledged_is_lost_when_the_gateway_restarts(nats_url: str) -> None:
    config = config_for_tests()
    async with gateway_for_tests(nats_url, config) as gateway:
        police = DutyLinkClient(gateway.address, token=TOKENS["police"])
        await police.subscribe("restart", families=["incident"]).open()
        await police.close()
        fire = DutyLinkClient(gateway.address, token=TOKENS["fire"])
        acknowledged = [incident_event() for _ in range(20)]
        for event in acknowledged:
            await fire.publish(event)
        await fire.close()
    async with gateway_for_tests(nats_url, config) as restarted:
        police = DutyLinkClient(restarted.address, token=TOKENS["police"])
        subscription = police.subscribe("restart", families=["incident"])
        await subscription.open()
        got = await receive(subscription, 20)
        assert {d.event.id for d in got} == {e.id for e in acknowledged}
        await subscription.close()
        await police.close()


async def test_health_serves_and_reflection_lists_the_services(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="dutylink.v1.PublisherService")
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflector = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflector.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name async for r in responses for s in r.list_services_response.service}
    assert {
        "dutylink.v1.PublisherService",
        "dutylink.v1.SubscriberService",
        "grpc.health.v1.Health",
    } <= names
