"""The catalogue at the gateway's door, through gRPC: Publish and PublishBatch refuse a type the
catalogue does not declare and an event without a field its type requires, INVALID_ARGUMENT
with the field named, and store nothing for it."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from dutylink.adapters.sdk.refusals import field_violations
from dutylink.v1 import event_pb2
from tests.conftest import ClientFactory
from tests.factories import incident_event


def unknown_type() -> event_pb2.Event:
    event = incident_event()
    event.type = "incident.teleported"
    return event


def without_feedback() -> event_pb2.Event:
    event = incident_event()
    event.type = "incident.feedback"  # requires incident.feedback, which the factory leaves empty
    return event


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str, str]]:
    assert rpc_status.from_call(error) is not None, "the error carries no google.rpc.Status"
    return [(v.field, v.reason, v.description) for v in field_violations(error)]


async def test_publish_refuses_an_unknown_type_naming_the_type_field(
    client_for: ClientFactory,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (await client_for("fire")).publish(unknown_type())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((field, rule, description),) = violations(caught.value)
    assert (field, rule) == ("type", "catalogue.unknown_type")
    assert "incident.teleported" in description and "dutylink catalogue list" in description


async def test_publish_refuses_a_missing_required_field_naming_its_path(
    client_for: ClientFactory,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (await client_for("fire")).publish(without_feedback())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(f, r) for f, r, _ in violations(caught.value)] == [
        ("incident.feedback", "catalogue.required")
    ]


async def test_publish_batch_refuses_each_such_event_alone(client_for: ClientFactory) -> None:
    fire = await client_for("fire")
    results = await fire.publish_batch([incident_event(), unknown_type(), without_feedback()])
    stored, unknown, missing = results
    assert stored.HasField("receipt") and stored.receipt.stream_sequence >= 1
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert unknown.error.code == missing.error.code == invalid
    assert [(v.field, v.rule_id) for v in unknown.error.violations] == [
        ("events[1].type", "catalogue.unknown_type")
    ]
    assert "dutylink catalogue list" in unknown.error.violations[0].description
    assert [(v.field, v.rule_id) for v in missing.error.violations] == [
        ("events[2].incident.feedback", "catalogue.required")
    ]
    assert not unknown.error.state_refusals and not missing.error.state_refusals
