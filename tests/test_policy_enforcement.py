"""The gateway enforces the access policy: publish decisions, server-side receive filtering,
field redaction before delivery, hot reload, and break-glass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient, Subscription
from dutylink.v1 import event_pb2, gateway_pb2, gateway_pb2_grpc, resource_pb2
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event, resource_request_event, warning_event


@pytest.fixture
async def gateway(nats_url: str, policy_dir: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests(policy={"dir": str(policy_dir), "reload_seconds": 0.1})
    async with gateway_for_tests(nats_url, config) as running:
        yield running


def client(gateway: Gateway, agency: str) -> DutyLinkClient:
    return DutyLinkClient(gateway.address, token=TOKENS[agency])


async def opened(agency_client: DutyLinkClient, name: str, **filters: object) -> Subscription:
    subscription = agency_client.subscribe(name, **filters)  # type: ignore[arg-type]
    await subscription.open()
    return subscription


def commit_event() -> event_pb2.Event:
    """A resource.commit of the factory's request, carrying what the catalogue requires of it
    (the request it answers, the committed lines), so that only the policy can refuse it."""
    event = resource_request_event()
    event.type = "resource.commit"
    message = event.resource
    lines = list(message.request_resource.resource_infos)
    message.preceding_message_id = message.message_id
    for line in lines:
        committed = message.commit_resource.resource_infos.add()
        committed.CopyFrom(line)
        committed.response.type = resource_pb2.RESPONSE_TYPE_ACCEPT
        committed.response.preceding_resource_info_element_id = line.resource_info_element_id
    return event


async def test_a_publish_no_rule_allows_is_denied_and_nothing_is_stored(gateway: Gateway) -> None:
    commit = commit_event()  # only emergency management and command may commit
    async with client(gateway, "emergency") as emergency, client(gateway, "transport") as transport:
        watcher = await opened(emergency, "all-resources", families=["resource"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transport.publish(commit)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no rule allows" in (caught.value.details() or "")
        allowed = await emergency.publish(resource_request_event())
        delivery = await watcher.next(timeout=10)
        assert delivery is not None and delivery.stream_sequence == allowed.stream_sequence
        await watcher.close()


async def test_a_deny_rule_names_itself(gateway: Gateway) -> None:
    secret = incident_event()
    secret.classification = event_pb2.CLASSIFICATION_CONFIDENTIAL
    async with client(gateway, "fire") as fire:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fire.publish(secret)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "confidential-only-from-police-and-command" in (caught.value.details() or "")


async def test_a_broad_subscription_is_narrowed_to_what_the_policy_allows(gateway: Gateway) -> None:
    async with client(gateway, "weather") as weather, client(gateway, "ecology") as ecology:
        everything = await opened(weather, "everything")
        restricted = incident_event()
        restricted.classification = event_pb2.CLASSIFICATION_RESTRICTED
        public_warning = warning_event()
        async with client(gateway, "fire") as fire:
            await fire.publish(restricted)  # above weather's INTERNAL clearance
        await ecology.publish(public_warning)
        delivery = await everything.next(timeout=10)
        assert delivery is not None and delivery.event.id == public_warning.id
        assert delivery.rule_ids and delivery.policy_version
        with pytest.raises(TimeoutError):
            await everything.next(timeout=1.0)
        await everything.close()


async def test_withheld_fields_never_reach_the_receiver_and_are_named(gateway: Gateway) -> None:
    event = incident_event()
    event.incident.reporter.phone = "13812345678"
    event.incident.reporter.name = "Wang Fang"
    async with client(gateway, "transport") as transport, client(gateway, "police") as police:
        roads = await opened(transport, "roads", families=["incident"])
        desk = await opened(police, "desk", families=["incident"])
        async with client(gateway, "fire") as fire:
            await fire.publish(event)
        to_transport = await roads.next(timeout=10)
        to_police = await desk.next(timeout=10)
        assert to_transport is not None and to_police is not None
        assert "incident.reporter" in to_transport.withheld_fields
        assert not to_transport.event.incident.HasField("reporter")
        raw = to_transport.SerializeToString()
        assert b"13812345678" not in raw and b"Wang Fang" not in raw
        assert to_transport.event.incident.location.address == event.incident.location.address
        assert to_police.event.incident.reporter.phone == "13812345678"
        assert not to_police.withheld_fields
        for subscription in (roads, desk):
            await subscription.close()


async def test_a_changed_policy_applies_to_every_delivery_after_the_swap_and_a_bad_one_is_refused(
    gateway: Gateway, policy_dir: Path
) -> None:
    async with client(gateway, "ecology") as ecology, client(gateway, "transport") as transport:
        roads = await opened(transport, "reload", families=["warning"])
        await ecology.publish(warning_event())
        before = await roads.next(timeout=10)
        assert before is not None
        await roads.ack(before)

        rules = policy_dir / "rules.yaml"
        rules.write_text(rules.read_text() + "\n  # a reviewed change\n")
        for _ in range(100):
            await ecology.publish(warning_event())
            after = await roads.next(timeout=10)
            assert after is not None
            await roads.ack(after)
            if after.policy_version != before.policy_version:
                break
        else:
            pytest.fail("the changed policy never took effect")
        settled = after.policy_version
        await ecology.publish(warning_event())
        delivery = await roads.next(timeout=10)
        assert delivery is not None and delivery.policy_version == settled, (
            "no stale version after the swap"
        )
        await roads.ack(delivery)

        rules.write_text("rules:\n  - id: broken\n    effect: maybe\n")
        await asyncio.sleep(0.5)
        await ecology.publish(warning_event())
        still = await roads.next(timeout=10)
        assert still is not None and still.policy_version == settled, (
            "a bad file leaves the old policy in force"
        )
        await roads.close()


async def test_break_glass_unredacts_for_the_incident_until_it_expires_and_is_listed(
    gateway: Gateway,
) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        breakglass = gateway_pb2_grpc.BreakGlassServiceStub(channel)
        request = gateway_pb2.DeclareEmergencyRequest(
            incident_id="INC-2026-0815-001", agencies=["transport"], fields=["incident.reporter"],
            reason="Trapped workers: transport escorts need the caller's phone",
        )  # fmt: skip
        request.duration.FromTimedelta(timedelta(seconds=2))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await breakglass.DeclareEmergency(
                request, metadata=(("authorization", f"Bearer {TOKENS['fire']}"),)
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        declared = await breakglass.DeclareEmergency(
            request, metadata=(("authorization", f"Bearer {TOKENS['command']}"),)
        )
        listed = await breakglass.ListEmergencies(
            gateway_pb2.ListEmergenciesRequest(),
            metadata=(("authorization", f"Bearer {TOKENS['transport']}"),),
        )
    assert [g.id for g in listed.grants] == [declared.grant.id]
    assert declared.grant.declared_by == "command"
    async with client(gateway, "transport") as transport, client(gateway, "fire") as fire:
        roads = await opened(transport, "escort", families=["incident"])
        await fire.publish(incident_event(incident_id="INC-2026-0815-001"))
        during = await roads.next(timeout=10)
        assert during is not None
        assert during.event.incident.reporter.phone and not during.withheld_fields
        assert declared.grant.id in during.rule_ids
        await roads.ack(during)
        await asyncio.sleep(2.1)
        update = incident_event(incident_id="INC-2026-0815-001")
        update.type = "incident.updated"  # the incident exists: a second report would be refused
        await fire.publish(update)
        after = await roads.next(timeout=10)
        assert after is not None and "incident.reporter" in after.withheld_fields
        await roads.close()
