"""Priority lanes: which events are urgent, where they are stored, and that an urgent event
overtakes a routine backlog on its way to a subscriber, still delivered at least once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dutylink.v1 import event_pb2, incident_pb2, warning_pb2
from gateway.core import subjects
from gateway.core.lanes import Lane, lane_of
from gateway.store.subscriptions import _pulled
from tests.conftest import ClientFactory
from tests.factories import incident_event, resource_request_event, warning_event
from tests.test_subscribe import receive


def flash(event: event_pb2.Event) -> event_pb2.Event:
    event.priority = event_pb2.PRIORITY_FLASH
    return event


def routine_warning() -> event_pb2.Event:
    event = warning_event()
    info = event.warning.infos[0]
    info.urgency, info.severity = warning_pb2.CAP_URGENCY_EXPECTED, warning_pb2.CAP_SEVERITY_SEVERE
    return event


def test_flash_priority_extreme_or_immediate_warnings_and_level_one_incidents_are_urgent() -> None:
    extreme = routine_warning()
    extreme.warning.infos[0].severity = warning_pb2.CAP_SEVERITY_EXTREME
    immediate = routine_warning()
    immediate.warning.infos.add().CopyFrom(immediate.warning.infos[0])
    immediate.warning.infos[1].urgency = warning_pb2.CAP_URGENCY_IMMEDIATE  # any info counts
    level_one = incident_event()
    level_one.incident.severity = incident_pb2.INCIDENT_SEVERITY_EXTRAORDINARY
    for urgent in (flash(resource_request_event()), extreme, immediate, level_one):
        assert lane_of(urgent) is Lane.URGENT, urgent.type
    for routine in (incident_event(), resource_request_event(), routine_warning()):
        assert lane_of(routine) is Lane.ROUTINE, routine.type


def test_urgent_subjects_add_a_token_the_routine_filters_do_not_match() -> None:
    routine = subjects.event_subject(event_pb2.PLANE_ACTUAL, "warning.alert", "310115")
    urgent = subjects.event_subject(event_pb2.PLANE_ACTUAL, "warning.alert", "310115", Lane.URGENT)
    assert routine == "dutylink.events.actual.warning.alert.31.01.15"
    assert urgent == routine + ".urgent"
    filters = subjects.filter_subjects(subjects.Filter(families=("warning",)), limit=10)
    assert filters == ["dutylink.events.actual.warning.*.*.*.*"]
    assert subjects.lane_filters(filters, Lane.ROUTINE) == filters
    assert subjects.lane_filters(filters, Lane.URGENT) == [filters[0] + ".urgent"]


def test_a_lane_consumer_never_shares_a_name_with_another_subscription() -> None:
    # Subscription names are lowercase; the urgent lane's suffix is not.
    assert subjects.consumer_name("police", "x", Lane.URGENT) == "sub_police_x_URGENT"
    assert subjects.consumer_name("police", "x_urgent") == "sub_police_x_urgent"
    assert subjects.consumer_name("police", "x") == "sub_police_x"


async def test_an_urgent_event_overtakes_a_routine_backlog_and_each_lane_keeps_its_order(
    client_for: ClientFactory,
) -> None:
    police, fire = await client_for("police"), await client_for("fire")
    subscription = police.subscribe("lanes", families=["incident"], max_in_flight=2)
    await subscription.open()
    backlog = [incident_event() for _ in range(40)]
    await fire.publish_batch(backlog)
    urgent = flash(incident_event())
    await fire.publish(urgent)
    got = [d.event.id for d in await receive(subscription, len(backlog) + 1)]
    await subscription.close()
    # Two routine deliveries were on their way before the urgent event was stored; it passes
    # the 38 behind them (one or two more may slip past while it is fetched, not the backlog).
    assert got.index(urgent.id) < 10
    assert [i for i in got if i != urgent.id] == [e.id for e in backlog]


@pytest.mark.parametrize("make", [lambda: flash(incident_event()), warning_event])
async def test_an_unacked_urgent_delivery_comes_again_on_the_next_session(
    client_for: ClientFactory, make: Callable[[], event_pb2.Event]
) -> None:
    police = await client_for("police")
    event = make()
    first = police.subscribe("urgent-retry", families=["incident", "warning"])
    await first.open()
    await (await client_for("fire" if event.type.startswith("incident") else "ecology")).publish(
        event
    )
    (delivered,) = await receive(first, 1, ack=False)
    assert delivered.event.id == event.id
    await first.close()
    second = police.subscribe("urgent-retry", families=["incident", "warning"])
    await second.open()
    (again,) = await receive(second, 1)
    assert again.event.id == event.id and again.attempt == 2
    await second.close()


class _TimingOut:
    """A pull subscription whose fetch times out as nats-py's sometimes does: with asyncio's
    own TimeoutError rather than nats.errors.TimeoutError."""

    async def fetch(self, batch: int, timeout: float) -> list[object]:
        raise TimeoutError


async def test_a_fetch_that_times_out_either_way_means_nothing_arrived_not_a_failure() -> None:
    assert await _pulled(_TimingOut(), 10, 0.01) == []  # type: ignore[arg-type]
