"""Publish refusals in the standard gRPC error model: a unary Publish's status and each refused
event of a batch (`PublishError.status`) carry the same google.rpc details, an ErrorInfo with a
machine-readable reason, a RetryInfo where a retry may succeed, the BadRequest and the
PreconditionFailure; the SDK reads them the same way from either. Built from values; no server."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from dutylink.adapters.sdk.refusals import (
    field_violations,
    refusal_reason,
    retry_after,
    state_refusals,
)
from dutylink.v1 import gateway_pb2
from gateway.audit.log import AuditUnavailableError
from gateway.core.admission import RefusalKind, Refused
from gateway.core.ports import StoreFullError, StoreUnavailableError
from gateway.core.settings import GatewaySettings
from gateway.core.validation import FieldProblem
from gateway.rpc.error_model import DOMAIN
from gateway.rpc.publish_outcomes import Outcome, Published, batch_response, failure_status
from tests.factories import LINE, incident_event

TYPE = FieldProblem("type", "unknown event type 'incident.bogus'", "catalogue.type")
# Each refusal, its code, its reason and the retry delay it carries (None: none).
CASES: list[tuple[Outcome, grpc.StatusCode, str, float | None]] = [
    (Refused(RefusalKind.INVALID, "invalid", (TYPE,)), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_EVENT", None),
    (Refused(RefusalKind.DENIED, "no rule allows it"), grpc.StatusCode.PERMISSION_DENIED,
     "POLICY_DENIED", None),
    (Refused(RefusalKind.FULL, "no room", state_problems=(LINE,)),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "NO_ROOM", None),
    (Refused(RefusalKind.CONFLICT, "lost a race", state_problems=(LINE,)),
     grpc.StatusCode.ABORTED, "STATE_CONFLICT", 0.0),
    (AuditUnavailableError("the audit stream is away"), grpc.StatusCode.UNAVAILABLE,
     "AUDIT_UNAVAILABLE", 1.0),
    (StoreUnavailableError("no JetStream"), grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", 1.0),
    (StoreFullError("the stream is full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "STORE_FULL", None),
]  # fmt: skip


def decoded(status: grpc.Status) -> status_pb2.Status:
    (binary,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    return status_pb2.Status.FromString(binary)


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    (info,) = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    unpacked = error_details_pb2.ErrorInfo()
    assert info.Unpack(unpacked)
    return unpacked


@pytest.mark.parametrize(("outcome", "code", "reason", "delay"), CASES)
def test_a_unary_refusal_carries_its_reason_and_when_to_retry(
    outcome: Outcome, code: grpc.StatusCode, reason: str, delay: float | None
) -> None:
    assert not isinstance(outcome, Published)
    status = decoded(failure_status(outcome, "INC-1"))
    assert status.code == code.value[0]
    info = error_info(status)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        reason,
        DOMAIN,
        {"event_id": "INC-1"},
    )
    retries = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retries) == (delay is not None)


@pytest.mark.parametrize(("outcome", "code", "reason", "delay"), CASES)
def test_each_refused_event_of_a_batch_carries_the_same_status(
    outcome: Outcome, code: grpc.StatusCode, reason: str, delay: float | None
) -> None:
    event = incident_event()
    (result,) = batch_response([event], [outcome], 1024 * 1024).results
    error = result.error
    assert (error.status.code, error.status.message) == (error.code, error.message)
    assert error.code == code.value[0]
    assert dict(error_info(error.status).metadata) == {}, "its result names the event"
    assert result.event_id == event.id
    # The SDK reads the standard details from the batch's result as from a unary error.
    assert refusal_reason(result) == reason
    assert retry_after(result) == delay
    assert [(v.field, v.reason) for v in field_violations(result)] == [
        (v.field, v.rule_id) for v in error.violations
    ]
    assert state_refusals(result) == list(error.state_refusals)
    if isinstance(outcome, Refused) and outcome.problems:
        assert [v.field for v in field_violations(result)] == ["events[0].type"]
    if isinstance(outcome, Refused) and outcome.state_problems:
        failures = [
            d for d in error.status.details
            if d.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR)
        ]  # fmt: skip
        assert len(failures) == 1


def test_a_batch_of_refusals_with_their_statuses_stays_within_the_size_limit() -> None:
    """The worst a batch can do at the default limits: every one of 1,000 events refused, each
    with a 128-character id and 300 long violations. Each status repeats its error's details
    while the refusals' half of the answer lasts, then only says why: all within the limit."""
    settings = GatewaySettings()
    many = tuple(
        FieldProblem(f"incident.units[{i}].id", "x" * 200, "string.pattern") for i in range(300)
    )
    events = []
    for _ in range(settings.max_batch_events):
        event = incident_event()
        event.id = "x" * 200  # echoed shortened to 128
        events.append(event)
    outcomes: list[Outcome] = [Refused(RefusalKind.INVALID, "y" * 500, many) for _ in events]
    response = batch_response(events, outcomes, settings.max_message_bytes)
    assert response.ByteSize() <= settings.max_message_bytes

    def repeated(result: gateway_pb2.PublishResult) -> bool:
        bad_request = error_details_pb2.BadRequest.DESCRIPTOR
        return any(d.Is(bad_request) for d in result.error.status.details)

    first, last = response.results[0], response.results[-1]
    assert repeated(first), "the first ones in full"
    assert not repeated(last) and field_violations(last), "the last one lean, its error cut"
    assert all(refusal_reason(r) == "INVALID_EVENT" for r in response.results)


def test_a_receipt_has_no_status() -> None:
    result = gateway_pb2.PublishResult(receipt=gateway_pb2.Receipt(event_id="x"))
    assert refusal_reason(result) == "" and retry_after(result) is None
    assert field_violations(result) == [] and state_refusals(result) == []
