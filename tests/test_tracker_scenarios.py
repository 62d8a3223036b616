"""Business acknowledgement and escalation over the gRPC API, on a real NATS: a warning that must
be taken within a deadline, recipients that take it, decline it or stay silent, the gateway's
escalation to the command centre when the deadline passes, and its resolution by a late answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.adapters.sdk.client import Subscription
from dutylink.v1 import escalation_pb2, event_pb2, gateway_pb2
from gateway.core.workflows.tracking import Status, Tracked, summary
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import agency_clients
from tests.factories import extreme_warning

# The sample deadline: every recipient takes an Extreme, Immediate warning within 2 minutes; the
# command centre hears at once, the supervisors an hour later. The tests move the tracker's
# clock past it rather than wait (and so never race a loaded machine's slowness).
DEADLINES = """
deadlines:
  - id: extreme-warning-acknowledged
    types: [warning.alert, warning.update]
    severities: [EXTREME]
    urgencies: [IMMEDIATE]
    expect: acknowledged
    within: 2m
    escalate:
      - after: 0s
        to: [command_centre]
      - after: 1h
        to: [command_centre, supervisor]
"""
RECIPIENTS = ("fire", "police", "transport")


@pytest.fixture
async def tracking_gateway(nats_url: str, policy_dir: Path) -> AsyncIterator[Gateway]:
    (policy_dir / "deadlines.yaml").write_text(DEADLINES)
    config = config_for_tests(policy={"dir": str(policy_dir)}, tracking={"check_seconds": 0.2})
    async with gateway_for_tests(nats_url, config) as running:
        yield running


async def next_of_type(
    subscription: Subscription, event_type: str, timeout: float = 30.0
) -> gateway_pb2.Delivery:
    """The next delivery of `event_type` (others acked and passed over)."""
    async with asyncio.timeout(timeout):
        while True:
            delivery = await subscription.next()
            assert delivery is not None, "the stream ended early"
            await subscription.ack(delivery)
            if delivery.event.type == event_type:
                return delivery


def pass_time(gateway: Gateway, by: timedelta) -> None:
    """The tracker's clock runs `by` ahead of the real one from now on."""
    assert gateway.tracker is not None
    gateway.tracker.clock = lambda: datetime.now(UTC) + by


async def tracked_status(
    gateway: Gateway, event: event_pb2.Event, until: Status, agency: str
) -> Tracked:
    """The tracked message once `agency` reached status `until` (within 30 s)."""
    tracker = gateway.tracker
    assert tracker is not None
    async with asyncio.timeout(30):
        while True:
            tracked = await tracker.status(event.plane, event.source, event.id)
            found = tracked.recipient(agency) if tracked is not None else None
            if tracked is not None and found is not None and found.status is until:
                return tracked
            await asyncio.sleep(0.1)


async def test_a_warning_to_three_escalates_once_for_the_silent_one_and_a_late_ack_resolves_it(
    tracking_gateway: Gateway,
) -> None:
    async with agency_clients(tracking_gateway.address) as client_for:
        ecology, command = await client_for("ecology"), await client_for("command")
        recipients = {agency: await client_for(agency) for agency in RECIPIENTS}
        async with contextlib.AsyncExitStack() as stack:
            escalations = await stack.enter_async_context(
                command.subscribe("duty", families=["escalation"])
            )
            inboxes = {
                agency: await stack.enter_async_context(
                    client.subscribe("warnings", families=["warning"])
                )
                for agency, client in recipients.items()
            }
            warning = extreme_warning()
            await ecology.publish(warning)
            taken = {
                agency: await next_of_type(inbox, "warning.alert")
                for agency, inbox in inboxes.items()
            }
            await recipients["fire"].publish(acknowledgement_of(taken["fire"].event, by="duty 3"))
            await recipients["police"].publish(
                acknowledgement_of(taken["police"].event, decline_reason="not our area")
            )
            tracked = await tracked_status(tracking_gateway, warning, Status.DECLINED, "police")
            await tracked_status(tracking_gateway, warning, Status.ACKNOWLEDGED, "fire")
            await tracked_status(tracking_gateway, warning, Status.DELIVERED, "transport")
            assert str(summary(tracked)).startswith("delivered 3 of 3, acknowledged 1, declined 1")
            pass_time(tracking_gateway, timedelta(minutes=3))

            raised = await next_of_type(escalations, "escalation.raised")
            assert raised.event.escalation.event_id == warning.id
            assert list(raised.event.escalation.pending_agencies) == ["transport"]
            assert raised.event.escalation.level == 1
            assert "command" in raised.event.escalation.notified_agencies

            # Late: transport takes it after the escalation; the escalation resolves, once.
            await recipients["transport"].publish(acknowledgement_of(taken["transport"].event))
            resolved = await next_of_type(escalations, "escalation.resolved")
            assert resolved.event.escalation.state == escalation_pb2.ESCALATION_STATE_RESOLVED
            tracked = await tracked_status(
                tracking_gateway, warning, Status.ACKNOWLEDGED, "transport"
            )
            assert str(summary(tracked)) == (
                "delivered 3 of 3, acknowledged 2, declined 1, pending 0"
            )
            with pytest.raises(TimeoutError):  # nothing more: no level fires twice
                await next_of_type(escalations, "escalation.raised", timeout=2.0)
    registry = tracking_gateway.metrics.registry
    for state in ("raised", "resolved"):
        labels = {"deadline": "extreme-warning-acknowledged", "state": state}
        assert registry.get_sample_value("dutylink_escalations_total", labels) == 1


async def test_a_warning_everyone_takes_in_time_never_escalates(
    tracking_gateway: Gateway,
) -> None:
    async with agency_clients(tracking_gateway.address) as client_for:
        ecology, command = await client_for("ecology"), await client_for("command")
        async with command.subscribe("quiet", families=["escalation"]) as escalations:
            warning = extreme_warning()
            await ecology.publish(warning)
            for agency in RECIPIENTS:
                await (await client_for(agency)).publish(acknowledgement_of(warning))
            for agency in RECIPIENTS:
                await tracked_status(tracking_gateway, warning, Status.ACKNOWLEDGED, agency)
            pass_time(tracking_gateway, timedelta(hours=2))  # past every level
            with pytest.raises(TimeoutError):
                await next_of_type(escalations, "escalation.raised", timeout=3.0)
