"""Publish refusals in the standard gRPC error model (google.rpc.Status): the same details for a
unary Publish's status and for each refused event of a PublishBatch (`PublishError.status`), so
clients in any language read them the standard way:

- a google.rpc.ErrorInfo: a machine-readable `reason` (the one place a refusal gets it) in the
  domain "dutylink";
- a google.rpc.RetryInfo when retrying with the same event id may succeed, and after how long;
- a google.rpc.BadRequest of the field violations and a google.rpc.PreconditionFailure with the
  StateRefusals (gateway.rpc.calls.status builds those for the unary call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from dutylink.v1 import gateway_pb2
from gateway.audit.log import AuditUnavailableError
from gateway.core.admission import RefusalKind, Refused
from gateway.core.ports import StoreError, StoreFullError, StoreRejectedError
from gateway.rpc.calls import packed, precondition_failure

DOMAIN = "dutylink"
REFUSAL_REASONS: dict[RefusalKind, str] = {
    RefusalKind.INVALID: "INVALID_EVENT",
    RefusalKind.DENIED: "POLICY_DENIED",
    RefusalKind.ILLEGAL_TRANSITION: "ILLEGAL_TRANSITION",
    RefusalKind.CONFLICT: "STATE_CONFLICT",
    RefusalKind.FULL: "NO_ROOM",
    RefusalKind.UNAVAILABLE: "STATE_UNAVAILABLE",
}
# Seconds after which a retry with the same event id may succeed (the rest will not by waiting:
# an invalid event, a denial, a ledger without room, a full store).
RETRY_AFTER: dict[str, float] = {
    "STATE_CONFLICT": 0.0,  # another writer came first: judge again at once
    "STATE_UNAVAILABLE": 1.0,
    "STORE_UNAVAILABLE": 1.0,
    "AUDIT_UNAVAILABLE": 1.0,
}


def reason_of(outcome: Refused | AuditUnavailableError | StoreError) -> str:
    """The ErrorInfo reason of an event that was not stored."""
    if isinstance(outcome, Refused):
        return REFUSAL_REASONS[outcome.kind]
    if isinstance(outcome, AuditUnavailableError):
        return "AUDIT_UNAVAILABLE"
    if isinstance(outcome, StoreFullError):
        return "STORE_FULL"
    if isinstance(outcome, StoreRejectedError):
        return "STORE_REJECTED"
    return "STORE_UNAVAILABLE"


def standard_details(reason: str, event_id: str = "") -> list[Message]:
    """The ErrorInfo of `reason` and, when waiting helps, a RetryInfo."""
    details: list[Message] = [
        error_details_pb2.ErrorInfo(
            reason=reason, domain=DOMAIN, metadata={"event_id": event_id} if event_id else {}
        )
    ]
    if reason in RETRY_AFTER:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(RETRY_AFTER[reason] * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return details


def batch_status(error: gateway_pb2.PublishError, reason: str, *, lean: bool) -> status_pb2.Status:
    """`error` (as fitted into the batch's answer) as a google.rpc.Status with the details a
    unary Publish's status carries (the event's id is its PublishResult's). `lean`, once the
    answer's room for refusals is spent: only the reason and the retry, so that the statuses of
    a whole batch of refusals stay within the message size limit."""
    details: list[Message] = []
    if error.violations and not lean:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description, reason=v.rule_id
                    )
                    for v in error.violations
                ]
            )
        )
    if error.state_refusals and not lean:
        details.append(precondition_failure(error.state_refusals, 0))
        details.extend(cast(Sequence[Message], error.state_refusals))
    details.extend(standard_details(reason))
    return status_pb2.Status(
        code=error.code, message=error.message, details=[packed(d) for d in details]
    )
