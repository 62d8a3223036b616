"""The department SDK: retries that never duplicate, handlers acked only after they succeed,
bounded concurrency, and a subscription that survives a gateway restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient, Retry
from dutylink.v1 import audit_pb2, gateway_pb2
from gateway.server import Gateway
from gateway.store.audit_reader import read_log
from gateway.testkit.inprocess import config_for_tests, free_port, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

FAST = Retry(attempts=30, timeout=20, wait_initial=0.05, wait_max=0.2, wait_jitter=0.05)


async def audited(nats_url: str, event_id: str) -> list[tuple[int, int]]:
    connection = await nats.connect(nats_url)
    try:
        stored = await read_log(connection.jetstream(), "gw-1")
    finally:
        await connection.close()
    return [
        (e.action, e.outcome)
        for e in map(audit_pb2.AuditEntry.FromString, stored.entries)
        if e.event_id == event_id
    ]


async def test_a_publish_retries_until_the_gateway_is_up_and_stores_once(
    nats_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = config_for_tests(
        gateway={"listen": f"127.0.0.1:{port}"}, nats={"data_dir": str(tmp_path)}
    )
    event = incident_event()
    async with DutyLinkClient(f"127.0.0.1:{port}", token=TOKENS["fire"], retry=FAST) as fire:
        publishing = asyncio.create_task(fire.publish(event, timeout=2))
        await asyncio.sleep(0.5)  # nothing listens yet: each try fails UNAVAILABLE
        assert not publishing.done()
        async with gateway_for_tests(nats_url, config):
            receipt = await publishing
            again = await fire.publish(event)
    assert not receipt.duplicate and again.duplicate, "the event id is the idempotency key"
    publish = audit_pb2.AUDIT_ACTION_PUBLISH
    assert await audited(nats_url, event.id) == [
        (publish, audit_pb2.AUDIT_OUTCOME_ACCEPTED),
        (publish, audit_pb2.AUDIT_OUTCOME_STORED),
        (publish, audit_pb2.AUDIT_OUTCOME_ACCEPTED),
        (publish, audit_pb2.AUDIT_OUTCOME_DUPLICATE),  # the retry, not stored again
    ]


async def test_a_refused_publish_is_never_retried(nats_url: str, gateway: Gateway) -> None:
    invalid = incident_event()
    invalid.type = "incident.no-such-type!"
    async with DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=FAST) as fire:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await fire.publish(invalid)
        results = await fire.publish_batch([invalid, incident_event()])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[1].HasField("receipt") and results[1].index == 1
    assert (
        await audited(nats_url, invalid.id)
        == [(audit_pb2.AUDIT_ACTION_PUBLISH, audit_pb2.AUDIT_OUTCOME_INVALID)] * 2
    ), "tried once per call, not again"


async def test_a_handler_is_acked_after_success_retried_after_failure_and_bounded(
    gateway: Gateway,
) -> None:
    events = [incident_event() for _ in range(12)]
    seen: list[tuple[str, int]] = []
    running = peak = 0
    done = asyncio.Event()

    async def handler(delivery: gateway_pb2.Delivery) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            seen.append((delivery.event.id, delivery.attempt))
            await asyncio.sleep(0.05)
            if delivery.event.id == events[0].id and delivery.attempt == 1:
                raise RuntimeError("the department system is down for a moment")
            if len({e for e, _ in seen}) == len(events) and (events[0].id, 2) in seen:
                done.set()
        finally:
            running -= 1

    async with (
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        consuming = asyncio.create_task(
            police.consume(
                "desk", handler, families=["incident"], max_in_flight=3,
                nack_delay=timedelta(milliseconds=100),
            )
        )  # fmt: skip
        await asyncio.sleep(0.3)
        await fire.publish_batch(events)
        await asyncio.wait_for(done.wait(), 15)
        consuming.cancel()
    assert peak <= 3, "never more than max_in_flight handlers at once"
    assert (events[0].id, 1) in seen and (events[0].id, 2) in seen, "failed, then redelivered"
    assert all(attempt == 1 for event_id, attempt in seen if event_id != events[0].id)


async def test_consume_reopens_the_subscription_after_the_gateway_restarts(
    nats_url: str, tmp_path: Path
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = config_for_tests(gateway={"listen": address}, nats={"data_dir": str(tmp_path)})
    received: list[str] = []

    async def handler(delivery: gateway_pb2.Delivery) -> None:
        received.append(delivery.event.id)

    before, after = incident_event(), incident_event()
    police = DutyLinkClient(address, token=TOKENS["police"])
    fire = DutyLinkClient(address, token=TOKENS["fire"], retry=FAST)
    async with gateway_for_tests(nats_url, config):
        consuming = asyncio.create_task(police.consume("desk", handler, families=["incident"]))
        await asyncio.sleep(0.5)
        await fire.publish(before)
        for _ in range(100):
            if before.id in received:
                break
            await asyncio.sleep(0.05)
    # The gateway is gone; publish while it restarts (the publisher retries).
    async with gateway_for_tests(nats_url, config):
        await fire.publish(after)
        for _ in range(200):
            if after.id in received:
                break
            await asyncio.sleep(0.05)
    consuming.cancel()
    await police.close()
    await fire.close()
    assert before.id in received and after.id in received
