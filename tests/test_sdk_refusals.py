"""The SDK reads a refusal by an aggregate's state: `state_refusals` of a unary Publish's error
and of a PublishBatch result, against a real gateway that enforces the loops."""

from __future__ import annotations

import grpc
import pytest

from dutylink.adapters.sdk import describe_state_refusal, state_refusals
from dutylink.v1 import gateway_pb2
from tests.conftest import ClientFactory
from tests.loop_support import incident


async def test_a_refused_publish_gives_the_aggregate_its_state_and_what_it_allows(
    client_for: ClientFactory,
) -> None:
    police = await client_for("police")
    await police.publish(incident("reported", "INC-SDK-1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await police.publish(incident("handling", "INC-SDK-1"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (refusal,) = state_refusals(caught.value)
    assert (refusal.aggregate, refusal.state, refusal.version) == ("incident/actual/INC-SDK-1",
                                                                   "reported", 1)  # fmt: skip
    assert any(a.startswith("incident.verified → verified") for a in refusal.allowed)
    line = describe_state_refusal(refusal)
    assert line.startswith("incident/actual/INC-SDK-1 is 'reported' (version 1): ")
    assert "allowed from there: incident.verified → verified" in line


async def test_a_merge_into_an_incident_nobody_reported_names_the_survivor(
    client_for: ClientFactory,
) -> None:
    police = await client_for("police")
    await police.publish(incident("reported", "INC-SDK-DUP"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await police.publish(incident("merged", "INC-SDK-DUP", merged_into="INC-SDK-GHOST"))
    (refusal,) = state_refusals(caught.value)
    assert (refusal.aggregate, refusal.state, refusal.version) == ("incident/actual/INC-SDK-GHOST",
                                                                   "none", 0)  # fmt: skip


async def test_a_batch_result_gives_the_refusal_of_its_event_and_none_for_the_others(
    client_for: ClientFactory,
) -> None:
    batch = [
        incident("reported", "INC-SDK-2"),
        incident("feedback", "INC-SDK-2"),  # illegal: nobody was assigned
    ]
    stored, refused = await (await client_for("police")).publish_batch(batch)
    assert state_refusals(stored) == []
    (refusal,) = state_refusals(refused)
    assert (refusal.aggregate, refusal.state, refusal.version) == ("incident/actual/INC-SDK-2",
                                                                   "reported", 1)  # fmt: skip
    assert state_refusals(refused.error) == [refusal]


async def test_an_error_not_about_state_has_no_state_refusals(client_for: ClientFactory) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (await client_for("police")).publish(gateway_pb2.PublishRequest().event)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert state_refusals(caught.value) == []
