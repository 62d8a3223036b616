"""What a publish answers and records, per event: the outcome of the publish pipeline
(gateway.rpc.publish), as a status (Publish), as a batch's results (PublishBatch), and as the
audit entries of each step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2
from gateway.access.auth import Principal
from gateway.audit.entries import publish_entry, stored_entry
from gateway.audit.log import AuditUnavailableError
from gateway.core.admission import Admitted, Refused
from gateway.core.crypto import HashSuite
from gateway.core.envelope import family
from gateway.core.ports import Stored, StoreError, StoreUnavailableError
from gateway.core.validation import CUT_RULE, FieldProblem
from gateway.rpc.calls import (
    MAX_ECHOED_ID_CHARS,
    MAX_STATUS_DETAIL_BYTES,
    MAX_STATUS_MESSAGE_CHARS,
    REFUSAL_CODES,
    REFUSAL_OUTCOMES,
    fit_problems,
    fit_state_refusals,
    shorten,
    status,
    store_code,
    store_message,
)
from gateway.rpc.error_model import batch_status, reason_of, standard_details
from gateway.telemetry.metrics import GatewayMetrics


@dataclass(frozen=True)
class Published:
    """An event stored (or found stored already: a duplicate or a conflict)."""

    admitted: Admitted
    stored: Stored


# What became of one event: refused by admission, not audited (so not stored), not stored, or
# stored.
Outcome = Refused | AuditUnavailableError | StoreError | Published


def never_stored(outcome: Outcome) -> bool:
    """Whether an admitted event is certainly not stored, and will not be unless it is sent
    again: not audited, refused by the store, or other content stored under its id. (No answer
    from the store leaves the outcome unknown: the event may be stored.)"""
    if isinstance(outcome, Published):
        return outcome.stored.conflict
    if isinstance(outcome, StoreUnavailableError):
        return False
    return isinstance(outcome, AuditUnavailableError | StoreError)


def stored_before(outcome: Outcome) -> bool:
    """Whether an admitted event is a retry of one the store already holds (same content)."""
    return (
        isinstance(outcome, Published) and outcome.stored.duplicate and not outcome.stored.conflict
    )


def unaudited_message(error: AuditUnavailableError) -> str:
    return f"{error}; not accepted, retry with the same event id"


def fill_receipt(
    receipt: gateway_pb2.Receipt, admitted: Admitted, stored: Stored, room: int | None = None
) -> None:
    """The receipt of `admitted`; its advisories listed within `room` bytes (None: all), the
    rest counted in a last one (a batch's answer must stay within the message size limit)."""
    receipt.event_id = admitted.event.id
    receipt.stream_sequence = stored.sequence
    receipt.duplicate = stored.duplicate
    receipt.conflict = stored.conflict
    receipt.received_time.CopyFrom(admitted.event.received_time)
    advisories = admitted.advisories
    if room is not None:
        advisories = fit_problems(advisories, room)
    receipt.advisories.extend(
        gateway_pb2.FieldViolation(field=p.field, description=p.description, rule_id=p.rule_id)
        for p in advisories
    )


def conflict_reason(stored: Stored) -> str:
    return (
        f"event id already stored at sequence {stored.sequence} with other content: not "
        "stored, the stored original is kept (content_digest vs stored_content_digest)"
    )


def publish_error(
    code: grpc.StatusCode,
    message: str,
    problems: tuple[FieldProblem, ...] = (),
    max_message_chars: int = MAX_STATUS_MESSAGE_CHARS,
    state_refusals: Sequence[gateway_pb2.StateRefusal] = (),
) -> gateway_pb2.PublishError:
    return gateway_pb2.PublishError(
        code=code.value[0],
        message=shorten(message, max_message_chars),
        violations=[
            gateway_pb2.FieldViolation(field=p.field, description=p.description, rule_id=p.rule_id)
            for p in problems
        ],
        state_refusals=state_refusals,
    )


def refusal_error(
    index: int, refused: Refused, room: int, max_message_chars: int
) -> gateway_pb2.PublishError:
    """The PublishError of the batch's event at `index`: its field problems (named from the
    batch, "events[3].type") and the aggregate states that refuse it, within about `room`
    bytes (shared equally when there are both), and how many were cut."""
    problems = tuple(
        FieldProblem(
            f"events[{index}].{p.field}" if p.field else f"events[{index}]",
            p.description,
            p.rule_id,
        )
        for p in refused.problems
    )
    room = min(MAX_STATUS_DETAIL_BYTES, room)
    share = room // 2 if problems and refused.state_problems else room
    refusals, left_out = fit_state_refusals(refused.state_problems, share)
    if left_out:
        problems += (
            FieldProblem(
                f"events[{index}]", f"and {left_out} more state refusals were cut", CUT_RULE
            ),
        )
    return publish_error(
        REFUSAL_CODES[refused.kind],
        refused.message,
        fit_problems(problems, share),
        max_message_chars,
        refusals,
    )


def refusal_entry(
    principal: Principal, event: event_pb2.Event, refused: Refused
) -> audit_pb2.AuditEntry:
    return publish_entry(
        principal.agency,
        event,
        REFUSAL_OUTCOMES[refused.kind],
        reason=refused.message,
        decision=refused.decision,
    )


def accepted_entry(
    principal: Principal, admitted: Admitted, hashing: HashSuite
) -> audit_pb2.AuditEntry:
    entry = publish_entry(
        principal.agency,
        admitted.event,
        audit_pb2.AUDIT_OUTCOME_ACCEPTED,
        digest=hashing.digest(admitted.data),
        decision=admitted.decision,
    )
    entry.reason = principal.noted(entry.reason)  # which TLCP front it came through, if one
    return entry


def store_answer_entry(
    principal: Principal, admitted: Admitted, stored: Stored, hashing: HashSuite
) -> audit_pb2.AuditEntry:
    entry = stored_entry(
        principal.agency,
        admitted.event,
        hashing.digest(admitted.data),
        sequence=stored.sequence,
        duplicate=stored.duplicate,
    )
    if stored.conflict:
        entry.outcome = audit_pb2.AUDIT_OUTCOME_CONFLICT
        entry.reason = conflict_reason(stored)
        entry.content_digest = stored.content_digest
        entry.stored_content_digest = stored.stored_content_digest
    return entry


def failure_entry(
    principal: Principal, admitted: Admitted, error: StoreError, hashing: HashSuite
) -> audit_pb2.AuditEntry:
    return publish_entry(
        principal.agency,
        admitted.event,
        audit_pb2.AUDIT_OUTCOME_FAILED,
        reason=str(error),
        digest=hashing.digest(admitted.data),
    )


def outcome_code(outcome: Outcome) -> grpc.StatusCode:
    """The code a publisher is answered with for `outcome` (OK: stored)."""
    if isinstance(outcome, Published):
        return grpc.StatusCode.OK
    if isinstance(outcome, Refused):
        return REFUSAL_CODES[outcome.kind]
    if isinstance(outcome, AuditUnavailableError):
        return grpc.StatusCode.UNAVAILABLE
    return store_code(outcome)


def count_outcomes(
    metrics: GatewayMetrics,
    agency: str,
    events: Sequence[event_pb2.Event],
    outcomes: Sequence[Outcome],
) -> None:
    """The events accepted (retries of stored ones aside) and refused, by agency and family
    (and code)."""
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, Published):
            if not outcome.stored.duplicate:
                metrics.events_accepted.labels(agency, family(event)).inc()
        else:
            code = outcome_code(outcome).name
            metrics.events_refused.labels(agency, family(event), code).inc()


def failure_status(
    outcome: Refused | AuditUnavailableError | StoreError, event_id: str = ""
) -> grpc.Status:
    """The status a Publish whose event was not stored is answered with."""
    standard = standard_details(reason_of(outcome), shorten(event_id, MAX_ECHOED_ID_CHARS))
    if isinstance(outcome, Refused):
        return status(
            REFUSAL_CODES[outcome.kind],
            outcome.message,
            outcome.problems,
            outcome.state_problems,
            standard,
        )
    if isinstance(outcome, AuditUnavailableError):
        return status(grpc.StatusCode.UNAVAILABLE, unaudited_message(outcome), standard=standard)
    return status(store_code(outcome), store_message(outcome), standard=standard)


def batch_response(
    events: Sequence[event_pb2.Event], outcomes: Sequence[Outcome], max_message_bytes: int
) -> gateway_pb2.PublishBatchResponse:
    """A batch's answer: a receipt or an error per event, in order, within the size limit."""
    response = gateway_pb2.PublishBatchResponse()
    # The refusals' text shares half of the response's size limit; past it an error says
    # only its code and how many violations were cut (the receipts must still fit).
    # Advisories share a quarter of it.
    room = max_message_bytes // 2
    advice_room = max_message_bytes // 4
    for index, (event, outcome) in enumerate(zip(events, outcomes, strict=True)):
        event_id = shorten(event.id, MAX_ECHOED_ID_CHARS)
        result = response.results.add(index=index, event_id=event_id)
        if isinstance(outcome, Published):
            fill_receipt(result.receipt, outcome.admitted, outcome.stored, max(0, advice_room))
            advice_room -= sum(a.ByteSize() + 3 for a in result.receipt.advisories)
            continue
        if isinstance(outcome, Refused):
            # Half the room: its status repeats the violations and refusals.
            error = refusal_error(
                index,
                outcome,
                room // 2,
                MAX_STATUS_MESSAGE_CHARS if room > MAX_STATUS_MESSAGE_CHARS else 64,
            )
        elif isinstance(outcome, AuditUnavailableError):
            error = publish_error(grpc.StatusCode.UNAVAILABLE, unaudited_message(outcome))
        else:
            error = publish_error(store_code(outcome), store_message(outcome))
        error.status.CopyFrom(batch_status(error, reason_of(outcome), lean=room <= 0))
        room -= error.ByteSize()
        result.error.CopyFrom(error)
    return response
