"""The SDK's acknowledgement of a delivered message: it names the message by publisher and id,
stays on its plane and in its jurisdiction, and the gateway admits it as the catalogue says."""

from __future__ import annotations

import grpc
import pytest

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.v1 import acknowledgement_pb2, event_pb2
from tests.conftest import ClientFactory
from tests.factories import warning_event


def test_an_acknowledgement_names_the_message_and_keeps_its_plane_and_jurisdiction() -> None:
    drill = warning_event()
    drill.source, drill.plane = "weather", event_pb2.PLANE_EXERCISE
    taken = acknowledgement_of(drill, by="duty officer Li", note="sirens checked")
    assert taken.type == "acknowledgement.acknowledged"
    assert (taken.plane, taken.jurisdiction, taken.priority) == (
        drill.plane, drill.jurisdiction, drill.priority,
    )  # fmt: skip
    answer = taken.acknowledgement
    assert (answer.event_source, answer.event_id, answer.acknowledged_by) == (
        "weather", drill.id, "duty officer Li",
    )  # fmt: skip
    assert answer.decision == acknowledgement_pb2.ACKNOWLEDGEMENT_DECISION_ACKNOWLEDGED


def test_a_decline_needs_a_reason() -> None:
    declined = acknowledgement_of(warning_event(), decline_reason="not our district")
    assert declined.type == "acknowledgement.declined"
    assert declined.acknowledgement.reason == "not our district"
    with pytest.raises(ValueError, match="a decline needs a reason"):
        acknowledgement_of(warning_event(), decline_reason="")


async def test_the_gateway_admits_acknowledgements_and_refuses_one_of_the_wrong_type(
    client_for: ClientFactory,
) -> None:
    ecology, police = await client_for("ecology"), await client_for("police")
    alert = warning_event()
    await ecology.publish(alert)
    alert.source = "ecology"  # as delivered: the gateway stamps the publisher
    assert not (await police.publish(acknowledgement_of(alert, by="desk 1"))).duplicate
    await police.publish(acknowledgement_of(alert, decline_reason="outside our district"))
    mislabelled = acknowledgement_of(alert, decline_reason="no")
    mislabelled.type = "acknowledgement.acknowledged"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await police.publish(mislabelled)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
