"""A retry of an event the store holds, sent after its entries forgot its id (more than
RECENT_EVENTS later changes): the store answers duplicate, and the transitions judged afresh
are taken back, so the ledger never counts one event twice."""

from __future__ import annotations

from dutylink.v1 import event_pb2
from gateway.core.workflows.base import RECENT_EVENTS
from gateway.core.workflows.ledger_state import ItemKey
from tests.conftest import ClientFactory
from tests.loop_support import adjust, declare, item_line


async def test_a_late_retry_of_a_stock_adjustment_is_a_duplicate_and_counts_once(
    client_for: ClientFactory, nats_url: str
) -> None:
    health = await client_for("health")
    await health.publish(declare("AMB-LATE", 50))
    delivered = adjust("AMB-LATE", 5)
    first = await health.publish(delivered)
    for _ in range(RECENT_EVENTS):  # the item line forgets the delivery's id
        await health.publish(adjust("AMB-LATE", 1))
    key = ItemKey(event_pb2.PLANE_ACTUAL, "health", "AMB-LATE")
    before = await item_line(nats_url, key)
    assert delivered.id not in before.recent and before.total == 50 + 5 + RECENT_EVENTS

    again = await health.publish(delivered)

    assert again.duplicate and again.stream_sequence == first.stream_sequence
    after = await item_line(nats_url, key)
    assert after.total == before.total and after.available == before.available
