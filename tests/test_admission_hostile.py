"""Hostile input at the door: out-of-range timestamps, undecodable requests, unknown fields and
events built to be expensive are refused as field violations (never UNKNOWN), audited, and
bounded in what they cost and in what the answer carries."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.adapters.sdk.refusals import field_violations
from dutylink.v1 import (
    audit_pb2,
    audit_service_pb2,
    event_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)
from gateway.core.validation import CUT_RULE, Validator
from gateway.rpc.calls import MAX_STATUS_DETAIL_BYTES
from gateway.server import Gateway
from gateway.store.audit_reader import read_log
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event, warning_event

A = audit_pb2
PUBLISH = "/dutylink.v1.PublisherService/Publish"
PUBLISH_BATCH = "/dutylink.v1.PublisherService/PublishBatch"


@pytest.fixture
async def gateway(nats_url: str, tmp_path: Path, policy_dir: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests(
        nats={"data_dir": str(tmp_path / "data")}, policy={"dir": str(policy_dir)}
    )
    async with gateway_for_tests(nats_url, config) as running:
        yield running


def client(gateway: Gateway, agency: str) -> DutyLinkClient:
    return DutyLinkClient(gateway.address, token=TOKENS[agency])


def auth(agency: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[agency]}"),)


async def call_raw(
    gateway: Gateway, method: str, data: bytes, agency: str = "fire"
) -> grpc.aio.AioRpcError | bytes:
    """`data` sent as the request of `method`, exactly as given: the error, or the answer."""
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = channel.unary_unary(method)
        try:
            return bytes(await call(data, metadata=auth(agency), timeout=20))
        except grpc.aio.AioRpcError as error:
            return error


async def logged(nats_url: str) -> list[audit_pb2.AuditEntry]:
    connection = await nats.connect(nats_url)
    try:
        stored = await read_log(connection.jetstream(), "gw-1")
    finally:
        await connection.close()
    return [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]


async def stored_events(nats_url: str) -> list[event_pb2.Event]:
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info("DUTYLINK_EVENTS")
        if not info.state.messages:
            return []
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg("DUTYLINK_EVENTS", sequence)
            assert message.data is not None
            found.append(event_pb2.Event.FromString(message.data))
        return found
    finally:
        await connection.close()


def violations(error: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    assert rpc_status.from_call(error) is not None, "the error carries no google.rpc.Status"
    return field_violations(error)


async def test_an_event_time_past_year_9999_is_a_field_violation_not_unknown(
    gateway: Gateway,
) -> None:
    event = incident_event()
    event.time.seconds = 253_402_300_800  # 10000-01-01
    async with client(gateway, "fire") as fire:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fire.publish(event)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in violations(caught.value)] == [("time", "timestamp.range")]


async def test_out_of_range_timestamps_anywhere_in_an_event_are_refused_not_stored(
    gateway: Gateway, nats_url: str
) -> None:
    expires_too_late = incident_event()
    expires_too_late.expires.seconds = 300_000_000_000
    nanos_too_big = incident_event()
    nanos_too_big.incident.reported_at.nanos = 1_000_000_000
    before_year_1 = warning_event()
    before_year_1.warning.infos[0].onset.seconds = -62_135_596_801
    async with client(gateway, "fire") as fire, client(gateway, "ecology") as ecology:
        for publisher, event, field in (
            (fire, expires_too_late, "expires"),
            (fire, nanos_too_big, "incident.reported_at"),
            (ecology, before_year_1, "warning.infos[0].onset"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await publisher.publish(event)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [v.field for v in violations(caught.value)] == [field]
    assert await stored_events(nats_url) == []


async def test_a_batch_stores_and_audits_its_valid_events_and_refuses_only_the_one_out_of_range(
    gateway: Gateway, nats_url: str
) -> None:
    valid = [incident_event() for _ in range(3)]
    broken = incident_event()
    broken.time.seconds = -100_000_000_000
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.PublisherServiceStub(channel)
        response = await stub.PublishBatch(
            gateway_pb2.PublishBatchRequest(events=[valid[0], broken, *valid[1:]]),
            metadata=auth("fire"),
        )
    results = list(response.results)
    assert [r.HasField("receipt") for r in results] == [True, False, True, True]
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in results[1].error.violations] == ["events[1].time"]
    assert sorted(e.id for e in await stored_events(nats_url)) == sorted(e.id for e in valid)
    outcomes: dict[str, set[int]] = {}
    for entry in await logged(nats_url):
        if entry.event_id:
            outcomes.setdefault(entry.event_id, set()).add(entry.outcome)
    # A STORED entry follows each ACCEPTED one with the log's next append (timing decides
    # whether it is there yet); the refused event has its INVALID entry only.
    assert outcomes.keys() == {*(e.id for e in valid), broken.id}
    for event in valid:
        assert A.AUDIT_OUTCOME_ACCEPTED in outcomes[event.id]
        assert outcomes[event.id] <= {A.AUDIT_OUTCOME_ACCEPTED, A.AUDIT_OUTCOME_STORED}
    assert outcomes[broken.id] == {A.AUDIT_OUTCOME_INVALID}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x0a\xff\xff\xff\xff\x0f", id="a length past the end"),
        pytest.param(b"\x0a\x05\x0a\x03\xff\xfe\xfd", id="invalid UTF-8 in Event.id"),
        pytest.param(b"\x0f\x00", id="a wire type that does not exist"),
    ],
)
async def test_an_undecodable_publish_is_invalid_argument_and_audited_with_a_digest_of_its_bytes(
    gateway: Gateway, nats_url: str, data: bytes
) -> None:
    answer = await call_raw(gateway, PUBLISH, data, agency="police")
    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded" in (answer.details() or "")
    (entry,) = [e for e in await logged(nats_url) if e.outcome == A.AUDIT_OUTCOME_INVALID]
    assert entry.action == A.AUDIT_ACTION_PUBLISH
    assert entry.actor_agency == "police"
    assert entry.event_digest == hashlib.sha256(data).digest()
    assert PUBLISH in entry.reason
    assert data not in entry.SerializeToString()


def every_method() -> list[tuple[str, bool]]:
    """Every RPC of every service the gateway serves: (path, whether it streams requests)."""
    files = (gateway_pb2.DESCRIPTOR, audit_service_pb2.DESCRIPTOR)
    return [
        (f"/{service.full_name}/{method.name}", method.client_streaming)
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    ] + [("/grpc.health.v1.Health/Check", False)]


async def test_every_rpc_of_every_service_answers_an_undecodable_request_with_invalid_argument(
    gateway: Gateway,
) -> None:
    garbage = b"\x0a\xff\xff\xff\xff\x0f"
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        for method, streaming in every_method():
            if streaming:
                call = channel.stream_stream(method)(metadata=auth("fire"), timeout=20)
                await call.write(garbage)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call.read()
                code = caught.value.code()
            else:
                try:
                    await channel.unary_unary(method)(garbage, metadata=auth("fire"), timeout=20)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
            assert code == grpc.StatusCode.INVALID_ARGUMENT, method


async def test_an_unknown_field_inside_the_reporter_never_reaches_a_receiver(
    gateway: Gateway, nats_url: str
) -> None:
    event = incident_event()
    # Field 95 (length-delimited) is in no schema: a reporter's detail no policy names.
    event.incident.reporter.MergeFromString(b"\xfa\x05\x0aSECRET-PII")
    assert b"SECRET-PII" in event.SerializeToString()
    async with client(gateway, "emergency") as emergency, client(gateway, "fire") as fire:
        desk = emergency.subscribe("desk", families=["incident"])
        await desk.open()
        await fire.publish(event)
        delivery = await desk.next(timeout=10)
        assert delivery is not None and delivery.event.id == event.id
        assert "incident.reporter.name" in delivery.withheld_fields
        assert b"SECRET-PII" not in delivery.SerializeToString()
        await desk.close()
    (stored,) = await stored_events(nats_url)
    assert b"SECRET-PII" not in stored.SerializeToString()


async def test_100_kb_of_empty_warning_infos_is_refused_by_the_list_limit_before_any_rule_runs(
    gateway: Gateway,
) -> None:
    event = warning_event()
    for _ in range(50_000):
        event.warning.infos.add()
    async with client(gateway, "ecology") as ecology:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ecology.publish(event)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in violations(caught.value)] == [
        ("warning.infos", "repeated.max_items")
    ]


def many_violations(areas: int, geocodes: int) -> event_pb2.Event:
    """A warning within every list limit with `areas` more areas of `geocodes` empty geocodes
    each: two violations per geocode (name and value are required)."""
    event = warning_event()
    info = event.warning.infos[0]
    for _ in range(areas):
        area = info.areas.add(area_desc="somewhere")
        for _ in range(geocodes):
            area.geocodes.add()
    return event


def test_the_structural_limits_refuse_an_event_with_too_many_elements_before_the_rules() -> None:
    validator = Validator()
    event = many_violations(63, validator.limits.max_elements // 63 + 1)
    problems = validator.problems(event)
    assert [p.rule_id for p in problems] == ["message.max_elements"]


def test_a_big_event_that_breaks_a_rule_everywhere_lists_only_the_first_violation() -> None:
    event = many_violations(20, 50)  # 1000 geocodes, 2000 violations
    problems = Validator().problems(event)
    assert [p.rule_id for p in problems] == ["violations.first_only", "string.min_len"]


async def test_the_violations_of_one_event_are_capped_and_the_rest_counted(
    gateway: Gateway,
) -> None:
    async with client(gateway, "ecology") as ecology:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ecology.publish(many_violations(1, 60))  # 120 violations
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(caught.value)
    assert len(found) == gateway.config.gateway.max_violations_per_event + 1
    assert found[-1].reason == CUT_RULE and "more were cut" in found[-1].description
    status = rpc_status.from_call(caught.value)
    assert status is not None and status.ByteSize() < MAX_STATUS_DETAIL_BYTES + 2048


async def test_a_batch_whose_errors_would_pass_the_size_limit_still_answers_with_its_receipt(
    gateway: Gateway, nats_url: str
) -> None:
    valid = warning_event()
    broken = many_violations(1, 60)  # 120 violations
    batch = gateway_pb2.PublishBatchRequest(events=[broken] * 299 + [valid])
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.PublisherServiceStub(channel)
        response = await stub.PublishBatch(batch, metadata=auth("ecology"), timeout=60)
    assert response.ByteSize() <= gateway.config.gateway.max_message_bytes
    *refused, accepted = response.results
    assert accepted.receipt.event_id == valid.id
    assert all(r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in refused)
    assert refused[-1].error.violations[-1].rule_id == CUT_RULE
    assert [e.id for e in await stored_events(nats_url)] == [valid.id]


async def test_a_batch_result_echoes_an_overlong_event_id_shortened(gateway: Gateway) -> None:
    broken = incident_event()
    broken.id = "x" * 100_000
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.PublisherServiceStub(channel)
        response = await stub.PublishBatch(
            gateway_pb2.PublishBatchRequest(events=[broken]), metadata=auth("fire")
        )
    (result,) = response.results
    assert len(result.event_id) <= 128 and result.event_id.startswith("xxx")
    assert [v.rule_id for v in result.error.violations] == ["string.max_len"]


async def test_an_undecodable_message_in_the_middle_of_a_subscribe_stream_ends_it_invalid_argument(
    gateway: Gateway,
) -> None:
    opening = gateway_pb2.SubscribeRequest(open=gateway_pb2.SubscriptionOpen(name="desk"))
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = channel.stream_stream("/dutylink.v1.SubscriberService/Subscribe")(
            metadata=auth("police"), timeout=20
        )
        await call.write(opening.SerializeToString())
        ready = gateway_pb2.SubscribeResponse.FromString(await call.read())
        assert ready.HasField("ready")
        await call.write(b"\x12\xff\xff\xff\xff\x0f")  # an ack whose length runs past the end
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_until_the_status(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def read_until_the_status(call: grpc.aio.StreamStreamCall[bytes, bytes]) -> None:
    """Read responses until the call ends (AioRpcError) or the stream does (then fail)."""
    while await call.read() is not grpc.aio.EOF:
        pass
    pytest.fail("the stream ended without a status")


@pytest.mark.parametrize(
    "delay",
    [
        duration_pb2.Duration(seconds=10**12),  # past protobuf's range: no timedelta holds it
        duration_pb2.Duration(seconds=7200),  # past the schema's hour
        duration_pb2.Duration(seconds=-5),
    ],
)
async def test_a_nack_with_a_delay_out_of_range_ends_the_stream_invalid_argument_naming_it(
    gateway: Gateway, delay: duration_pb2.Duration
) -> None:
    opening = gateway_pb2.SubscribeRequest(open=gateway_pb2.SubscriptionOpen(name="desk"))
    nack = gateway_pb2.SubscribeRequest(nack=gateway_pb2.Nack(delivery_id=1, delay=delay))
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = channel.stream_stream("/dutylink.v1.SubscriberService/Subscribe")(
            metadata=auth("police"), timeout=20
        )
        await call.write(opening.SerializeToString())
        ready = gateway_pb2.SubscribeResponse.FromString(await call.read())
        assert ready.HasField("ready")
        await call.write(nack.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_until_the_status(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nack.delay" in caught.value.details()
