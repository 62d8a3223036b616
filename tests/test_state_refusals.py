"""A refusal by an aggregate's state reaches the caller: a unary Publish's status carries a
google.rpc.PreconditionFailure and a StateRefusal per aggregate, a batch's PublishError the
StateRefusals; both stay within the status size limits, cutting what does not fit and saying
how much. Built from values, decoded back; no server."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from dutylink.v1 import gateway_pb2
from gateway.core.admission import RefusalKind, Refused, StateProblem
from gateway.core.validation import FieldProblem
from gateway.rpc.calls import MAX_STATUS_DETAIL_BYTES, STATE_REFUSALS_CUT
from gateway.rpc.publish_outcomes import batch_response, failure_status
from tests.factories import LINE, incident_event

CLOSED = StateProblem(
    aggregate="incident/actual/INC-2026-0815-001",
    state="closed",
    version=7,
    allowed=("incident.reopened → verified",),
    reason="incident.feedback is not allowed from 'closed'",
)


def illegal(*problems: StateProblem, field_problems: tuple[FieldProblem, ...] = ()) -> Refused:
    return Refused(
        RefusalKind.ILLEGAL_TRANSITION,
        "the aggregate's state does not allow it",
        field_problems,
        state_problems=problems,
    )


def details(status: grpc.Status) -> status_pb2.Status:
    (binary,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    decoded = status_pb2.Status()
    decoded.ParseFromString(binary)
    return decoded


def unpacked(
    status: status_pb2.Status,
) -> tuple[
    list[error_details_pb2.PreconditionFailure],
    list[gateway_pb2.StateRefusal],
    list[error_details_pb2.BadRequest],
]:
    failures, refusals, bad_requests = [], [], []
    for detail in status.details:
        for kind, found in (
            (error_details_pb2.PreconditionFailure, failures),
            (gateway_pb2.StateRefusal, refusals),
            (error_details_pb2.BadRequest, bad_requests),
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)  # type: ignore[attr-defined]
    return failures, refusals, bad_requests  # type: ignore[return-value]


def test_a_publish_refused_by_state_names_each_aggregate_in_its_status_details() -> None:
    status = failure_status(illegal(CLOSED, LINE))
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    decoded = details(status)
    assert decoded.message == "the aggregate's state does not allow it"
    (failure,), refusals, bad_requests = unpacked(decoded)
    assert bad_requests == []
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [
        ("incident", CLOSED.aggregate, CLOSED.reason),
        ("ledger", LINE.aggregate, LINE.reason),
    ]
    assert [
        (r.aggregate, r.state, r.version, tuple(r.allowed), r.reason, r.allowed_cut)
        for r in refusals
    ] == [
        (CLOSED.aggregate, "closed", 7, CLOSED.allowed, CLOSED.reason, 0),
        (LINE.aggregate, "available 2", 12, (), LINE.reason, 0),
    ]


def test_a_conflict_or_a_full_ledger_carries_its_states_too() -> None:
    for kind, code in (
        (RefusalKind.CONFLICT, grpc.StatusCode.ABORTED),
        (RefusalKind.FULL, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ):
        status = failure_status(Refused(kind, "no", state_problems=(LINE,)))
        assert status.code == code
        _, refusals, _ = unpacked(details(status))
        assert [r.aggregate for r in refusals] == [LINE.aggregate]


def test_a_refusal_without_state_problems_has_no_state_details() -> None:
    problem = FieldProblem("type", "not catalogued", "catalogue.unknown_type")
    status = failure_status(Refused(RefusalKind.INVALID, "invalid", (problem,)))
    failures, refusals, (bad_request,) = unpacked(details(status))
    assert failures == [] and refusals == []
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("type", "catalogue.unknown_type")
    ]


def test_field_problems_and_state_problems_travel_together() -> None:
    problem = FieldProblem("incident.feedback", "required", "catalogue.required")
    failures, refusals, bad_requests = unpacked(
        details(failure_status(illegal(CLOSED, field_problems=(problem,))))
    )
    assert len(failures) == len(bad_requests) == 1 and len(refusals) == 1


def test_a_batch_error_carries_the_state_refusals() -> None:
    events = [incident_event(), incident_event()]
    refused = illegal(CLOSED)
    other = Refused(RefusalKind.DENIED, "no rule allows it")
    response = batch_response(events, [refused, other], max_message_bytes=1 << 20)
    wire = gateway_pb2.PublishBatchResponse.FromString(response.SerializeToString())
    first, second = wire.results
    assert first.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    (refusal,) = first.error.state_refusals
    assert (refusal.aggregate, refusal.state, refusal.version) == (CLOSED.aggregate, "closed", 7)
    assert tuple(refusal.allowed) == CLOSED.allowed and refusal.reason == CLOSED.reason
    assert list(second.error.state_refusals) == []


def huge(index: int) -> StateProblem:
    return StateProblem(
        aggregate=f"resource_line/actual/RM-{index}/" + "x" * 1000,
        state="committed",
        version=index,
        allowed=tuple(f"resource.type_{n} → state_{n}" for n in range(200)),
        reason="why " * 500,
    )


def test_a_status_stays_within_its_detail_limit_and_says_what_it_cut() -> None:
    problems = tuple(huge(i) for i in range(40))
    fields = tuple(FieldProblem(f"f{i}", "d" * 300, "rule") for i in range(40))
    decoded = details(failure_status(illegal(*problems, field_problems=fields)))
    assert sum(d.ByteSize() for d in decoded.details) <= MAX_STATUS_DETAIL_BYTES
    (failure,), refusals, _ = unpacked(decoded)
    assert 0 < len(refusals) < len(problems)
    assert all(r.allowed_cut > 0 and len(r.allowed) + r.allowed_cut == 200 for r in refusals)
    last = failure.violations[-1]
    assert last.type == STATE_REFUSALS_CUT
    assert f"and {len(problems) - len(refusals)} more were cut" == last.description


def test_a_batchs_state_refusals_share_the_answers_room() -> None:
    events = [incident_event() for _ in range(30)]
    outcomes = [illegal(huge(i), huge(i + 1)) for i in range(30)]
    max_message_bytes = 32 * 1024
    response = batch_response(events, outcomes, max_message_bytes)
    assert response.ByteSize() <= max_message_bytes
    errors = [r.error for r in response.results]
    assert errors[0].state_refusals and not errors[-1].state_refusals
    # Past the room an error says only how many were cut.
    (note,) = errors[-1].violations
    assert note.description.startswith("and 2 more") and note.rule_id == "violations.cut"
    first = errors[0].state_refusals
    assert len(first) == 2 and all(r.allowed_cut > 0 for r in first)
