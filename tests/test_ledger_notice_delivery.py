"""The ledger's replenishment notice reaches the agency whose stock ran low and the emergency
management bureau, and no other agency (the sample policy's `only_parties` rule); subscriptions
select the task and inventory families like the others."""

from __future__ import annotations

from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.core.subjects import FAMILIES
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import ClientFactory, agency_clients
from tests.loop_support import VALIDATOR, commit, declare, request

TEST = event_pb2.PLANE_TEST

NOTICE = "inventory.replenishment_needed"


async def test_a_replenishment_notice_goes_to_the_owner_and_the_bureau_only(
    nats_url: str,
) -> None:
    config = config_for_tests(policy={"dir": str(SAMPLE_DIR)})
    async with gateway_for_tests(nats_url, config) as gateway, agency_clients(gateway.address) as client_for:  # fmt: skip
        await _exchange(client_for)


async def _exchange(client_for: ClientFactory) -> None:
    health, emergency = await client_for("health"), await client_for("emergency")
    command, police = await client_for("command"), await client_for("police")
    types, planes = [NOTICE, "inventory.declared"], [event_pb2.PLANE_ACTUAL, TEST]
    inboxes = {name: client.subscribe(f"stock-{name}", types=types, planes=planes)
               for name, client in (("health", health), ("emergency", emergency),
                                    ("police", police))}  # fmt: skip
    for inbox in inboxes.values():
        await inbox.open()
    try:
        await health.publish(declare("COTS-N", 3, kind="cot", unit="cots", threshold=2))
        await command.publish(request("RM-NOTICE", 2, unit="cots"))
        await emergency.publish(commit("RM-NOTICE", "COTS-N", "health", 2, unit="cots"))
        # A link test every agency receives, stored after the notice: police's first delivery.
        await health.publish(declare("COTS-T", 1, kind="cot", unit="cots", plane=TEST))

        async def first(name: str, wanted: str) -> event_pb2.Event:
            inbox = inboxes[name]
            while (delivery := await inbox.next(timeout=10)) is not None:
                await inbox.ack(delivery)
                if delivery.event.type == wanted or delivery.event.plane == TEST:
                    return delivery.event
            raise AssertionError(f"{name} received nothing")

        for name in ("health", "emergency"):
            notice = await first(name, NOTICE)
            assert notice.type == NOTICE and notice.source == "dutylink", name
            assert notice.inventory.replenishment_needed.agency == "health"
            assert notice.inventory.replenishment_needed.on_hand == 1
        assert (await first("police", NOTICE)).inventory.declaration.items[0].item_id == "COTS-T"
    finally:
        for inbox in inboxes.values():
            await inbox.close()


def test_a_subscription_may_select_every_family_and_its_types() -> None:
    for family in FAMILIES:
        opening = gateway_pb2.SubscriptionOpen(
            name="desk",
            filter=gateway_pb2.SubscriptionFilter(families=[family], types=[f"{family}.any"]),
        )
        assert list(VALIDATOR.problems(opening, "open")) == [], family
    every = gateway_pb2.SubscriptionOpen(
        name="desk", filter=gateway_pb2.SubscriptionFilter(families=FAMILIES)
    )
    assert list(VALIDATOR.problems(every, "open")) == []
