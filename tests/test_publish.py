"""Publishing through the gateway: receipts, idempotency, validation, authentication."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import nats
import pytest
import structlog.testing
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.aio.msg import Msg

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient, Retry
from dutylink.adapters.sdk.refusals import field_violations
from dutylink.policies.engine import Decision
from dutylink.v1 import event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.access.auth import Principal
from gateway.core.admission import Admitted, admit, admit_all
from gateway.core.ports import Stored, StoreRejectedError, StoreUnavailableError
from gateway.core.subjects import EVENTS_PREFIX
from gateway.core.validation import Validator
from gateway.server import Gateway
from gateway.store.events import FLUSH_EVERY
from gateway.store.jetstream import EventStore
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS, ClientFactory
from tests.factories import incident_event, resource_request_event, warning_event


def incident_event_with_id(event_id: str):  # type: ignore[no-untyped-def]
    event = incident_event()
    event.id = event_id
    return event


def bad_request(error: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    assert rpc_status.from_call(error) is not None, "the error carries no google.rpc.Status"
    return field_violations(error)


async def test_a_publish_is_stored_and_stamped_with_the_callers_agency(
    client_for: ClientFactory,
) -> None:
    fire = await client_for("fire")
    receipt = await fire.publish(incident_event())
    assert receipt.stream_sequence >= 1
    assert not receipt.duplicate
    assert receipt.received_time.seconds > 0


async def test_the_same_event_id_twice_stores_one_event_and_says_duplicate(
    client_for: ClientFactory,
) -> None:
    fire = await client_for("fire")
    event = incident_event()
    first = await fire.publish(event)
    second = await fire.publish(event)
    assert second.duplicate
    assert second.stream_sequence == first.stream_sequence


async def test_two_agencies_may_use_the_same_event_id(client_for: ClientFactory) -> None:
    event = incident_event()
    first = await (await client_for("fire")).publish(event)
    second = await (await client_for("police")).publish(event)
    assert not second.duplicate
    assert second.stream_sequence != first.stream_sequence


async def test_an_invalid_event_lists_every_violated_field(client_for: ClientFactory) -> None:
    event = incident_event()
    event.jurisdiction.division_code = "31011"
    event.incident.location.point.latitude = 123.0
    event.ClearField("time")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (await client_for("fire")).publish(event)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in bad_request(caught.value)}
    assert {"jurisdiction.division_code", "incident.location.point.latitude", "time"} <= fields


async def test_a_type_of_another_family_than_the_payload_is_refused(
    client_for: ClientFactory,
) -> None:
    event = incident_event()
    event.type = "warning.alert"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (await client_for("fire")).publish(event)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event.type_matches_payload" in {v.reason for v in bad_request(caught.value)}


async def test_claiming_another_agency_as_source_is_permission_denied(
    client_for: ClientFactory,
) -> None:
    event = incident_event()
    event.source = "police"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (await client_for("fire")).publish(event)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("token", ["", "not-a-token"])
async def test_an_unknown_or_missing_token_is_unauthenticated(gateway: Gateway, token: str) -> None:
    channel = grpc.aio.insecure_channel(gateway.address)
    publisher = gateway_pb2_grpc.PublisherServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await publisher.Publish(
            gateway_pb2.PublishRequest(event=incident_event()), metadata=metadata
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await channel.close()


async def test_a_batch_stores_the_valid_events_and_reports_each_invalid_one(
    client_for: ClientFactory,
) -> None:
    health = await client_for("health")
    good = [resource_request_event() for _ in range(3)]
    bad = resource_request_event()
    bad.classification = event_pb2.CLASSIFICATION_UNSPECIFIED
    results = await health.publish_batch([good[0], bad, good[1], good[1], good[2]])
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.WhichOneof("outcome") for r in results] == [
        "receipt",
        "error",
        "receipt",
        "receipt",
        "receipt",
    ]
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in results[1].error.violations] == ["events[1].classification"]
    assert (
        results[3].receipt.duplicate
        and results[3].receipt.stream_sequence == results[2].receipt.stream_sequence
    )
    sequences = [r.receipt.stream_sequence for r in results if r.HasField("receipt")]
    assert sequences[0] < sequences[1] < sequences[3], "a batch is stored in request order"


async def test_a_batch_over_the_limit_is_refused_whole(nats_url: str) -> None:
    config = config_for_tests(gateway={"max_batch_events": 2})
    async with gateway_for_tests(nats_url, config) as small:
        client = DutyLinkClient(small.address, token=TOKENS["weather"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.publish_batch([warning_event() for _ in range(3)])
        await client.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_calls_beyond_the_concurrent_limit_are_refused_not_queued(nats_url: str) -> None:
    """Open subscriptions hold their slots; one call more is RESOURCE_EXHAUSTED (retryable), and
    a slot freed serves the next call."""
    config = config_for_tests(gateway={"max_concurrent_rpcs": 2})
    async with gateway_for_tests(nats_url, config) as small:
        receiver = DutyLinkClient(small.address, token=TOKENS["police"])
        publisher = DutyLinkClient(small.address, token=TOKENS["fire"], retry=NO_RETRY)
        first = receiver.subscribe(f"limit-a-{uuid.uuid4().hex[:8]}", families=["incident"])
        second = receiver.subscribe(f"limit-b-{uuid.uuid4().hex[:8]}", families=["incident"])
        await first.open()
        await second.open()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await publisher.publish(incident_event())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The SDK's retry backs off on RESOURCE_EXHAUSTED and gets through once a slot frees.
        patient = DutyLinkClient(
            small.address, token=TOKENS["fire"], retry=Retry(wait_initial=0.05, wait_jitter=0)
        )
        retrying = asyncio.create_task(patient.publish(incident_event()))
        await asyncio.sleep(0.3)
        assert not retrying.done()
        await second.close()
        receipt = await asyncio.wait_for(retrying, 30)
        assert receipt.stream_sequence > 0
        await first.close()
        for client in (receiver, publisher, patient):
            await client.close()


async def test_a_full_event_stream_refuses_new_events_and_evicts_nothing(nats_url: str) -> None:
    config = config_for_tests(nats={"events_max_bytes": 16 * 1024})
    async with gateway_for_tests(nats_url, config) as small:
        # No retries: RESOURCE_EXHAUSTED is the answer here (the SDK would retry for a minute).
        client = DutyLinkClient(small.address, token=TOKENS["fire"], retry=NO_RETRY)
        results = await client.publish_batch([incident_event() for _ in range(40)])
        codes = [r.error.code if r.HasField("error") else 0 for r in results]
        assert codes.index(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]) > 0, (
            "some fit, then the stream is full"
        )
        assert set(codes) == {0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.publish(incident_event())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first = results[0].receipt.stream_sequence
        again = await client.publish(incident_event_with_id(results[0].event_id))
        assert again.duplicate and again.stream_sequence == first, "the first event is still there"
        await client.close()


async def test_logs_name_the_event_but_never_carry_its_content(client_for: ClientFactory) -> None:
    event = incident_event()
    event.incident.reporter.phone = "13912345678"
    event.incident.title = "Unmistakable-title-marker"
    with structlog.testing.capture_logs() as captured:
        await (await client_for("fire")).publish(event)
    stored = [entry for entry in captured if entry["event"] == "publish.stored"]
    assert [e["event_id"] for e in stored] == [event.id]
    text = repr(captured)
    assert "13912345678" not in text and "Unmistakable-title-marker" not in text


async def test_a_batch_is_stamped_with_one_moment_of_receipt(client_for: ClientFactory) -> None:
    fire = await client_for("fire")
    results = await fire.publish_batch([incident_event() for _ in range(3)])
    stamps = {r.receipt.received_time.ToNanoseconds() for r in results}
    assert len(stamps) == 1 and stamps.pop() > 0


def test_admitting_a_batch_decides_each_event_as_admitting_it_alone() -> None:
    validator, principal = Validator(), Principal("fire")
    now = datetime.now(UTC)
    decisions: list[str] = []

    def decide(stamped: event_pb2.Event) -> Decision:
        decisions.append(stamped.id)
        return Decision(stamped.type != "incident.updated", ("r1",), "ok", (), "v1")

    denied, invalid, other_source = incident_event(), incident_event(), incident_event()
    denied.type = "incident.updated"
    invalid.ClearField("classification")
    other_source.source = "police"
    events = [incident_event(), denied, invalid, other_source, incident_event()]
    together = admit_all(validator, decide, principal, events, now, max_event_bytes=1 << 20)
    alone = [admit(validator, decide, principal, e, now, max_event_bytes=1 << 20) for e in events]
    assert together == alone
    assert [type(o).__name__ for o in together] == [
        "Admitted", "Refused", "Refused", "Refused", "Admitted",
    ]  # fmt: skip
    assert decisions == [e.id for e in (events[0], denied, events[4])] * 2
    for outcome in together:
        if isinstance(outcome, Admitted):
            assert outcome.event.received_time.ToDatetime(UTC) == now
            assert outcome.event.source == "fire"
            assert outcome.data == outcome.event.SerializeToString()


async def test_a_pipelined_publish_gives_each_message_its_own_outcome_in_order(
    nats_url: str,
) -> None:
    store = EventStore(config_for_tests())
    await store.connect(nats_url)
    try:
        await store.ensure_streams()
        tag = uuid.uuid4().hex
        count = 3 * FLUSH_EVERY + 5  # several flushes while sending
        messages = [
            (f"{EVENTS_PREFIX}.t{tag}.{i}", b"x", {"Nats-Msg-Id": f"{tag}-{i}"})
            for i in range(count)
        ]
        messages[7] = (messages[7][0], b"x", {"Nats-Msg-Id": f"{tag}-3"})  # a duplicate of 3
        refused = FLUSH_EVERY + 1  # JetStream refuses it: not the last sequence it expects
        messages[refused] = (
            messages[refused][0],
            b"x",
            {"Nats-Msg-Id": f"{tag}-r", "Nats-Expected-Last-Sequence": "1"},
        )
        outcomes = await store.publish_pipelined(messages, 5.0)
        assert len(outcomes) == count
        assert isinstance(outcomes[refused], StoreRejectedError)
        assert isinstance(outcomes[7], Stored) and isinstance(outcomes[3], Stored)
        assert outcomes[7].duplicate and outcomes[7].sequence == outcomes[3].sequence
        stored = [o for i, o in enumerate(outcomes) if i not in (7, refused)]
        assert all(isinstance(o, Stored) and not o.duplicate for o in stored)
        sequences = [o.sequence for o in stored if isinstance(o, Stored)]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    finally:
        await store.close()


async def test_unacknowledged_publishes_time_out_as_unknown_and_are_not_awaited_after(
    nats_url: str,
) -> None:
    store = EventStore(config_for_tests())
    await store.connect(nats_url)
    # Not a stream subject: this subscriber takes the messages and never acknowledges them.
    listener = await nats.connect(nats_url)
    received: list[Msg] = []
    six = asyncio.Event()

    async def keep(message: Msg) -> None:
        received.append(message)
        if len(received) >= 6:
            six.set()

    await listener.subscribe("untracked.>", cb=keep)
    await listener.flush()
    try:
        messages = [(f"untracked.{i}", b"x", {"Nats-Msg-Id": str(i)}) for i in range(3)]
        outcomes = await store.publish_pipelined(messages, 0.3)
        assert all(isinstance(o, StoreUnavailableError) for o in outcomes)
        assert all("outcome unknown" in str(o) for o in outcomes)
        assert len({id(o) for o in outcomes}) == 3, "an error of its own for each message"
        # A late acknowledgement is ignored: nobody waits for it any more.
        await listener.publish(received[0].reply, b'{"stream":"X","seq":1}')
        await listener.flush()
        # Cancelled while waiting: the acknowledgements are no longer awaited either.
        waiting = asyncio.create_task(store.publish_pipelined(messages, 30.0))
        await asyncio.wait_for(six.wait(), 10)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not store.events._acks._waiting  # type: ignore[union-attr]
    finally:
        await listener.close()
        await store.close()
