"""What a refusal says, read from a unary Publish's error or a batch's result alike (both carry
a google.rpc.Status): the gateway's `StateRefusal`s, the violated fields, the machine-readable
reason (google.rpc.ErrorInfo) and whether and when a retry may succeed (google.rpc.RetryInfo).

    try:
        await client.publish(event)
    except grpc.aio.AioRpcError as error:
        for refusal in state_refusals(error):
            print(describe_state_refusal(refusal))

A FAILED_PRECONDITION (an illegal lifecycle transition), RESOURCE_EXHAUSTED (a ledger line
without room) or ABORTED (a race lost to another writer) carries one per aggregate that refused
the event; any other error carries none.
"""

from __future__ import annotations

from typing import TypeAlias, TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dutylink.v1 import gateway_pb2

__all__ = [
    "allowed_transitions",
    "describe_state_refusal",
    "field_violations",
    "refusal_reason",
    "retry_after",
    "state_refusals",
    "status_of",
]

Refusal: TypeAlias = grpc.aio.AioRpcError | gateway_pb2.PublishResult | gateway_pb2.PublishError
_Detail = TypeVar("_Detail", bound=Message)


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """A failed call's google.rpc.Status (None if it carries none)."""
    # An AioRpcError has the code, details and trailing metadata from_call reads; the stubs
    # type from_call for grpc.Call only.
    return rpc_status.from_call(cast(grpc.Call, error))


def _status(refused: Refusal) -> status_pb2.Status | None:
    if isinstance(refused, gateway_pb2.PublishResult):
        return refused.error.status if refused.HasField("error") else None
    if isinstance(refused, gateway_pb2.PublishError):
        return refused.status
    return status_of(refused)


def _details(refused: Refusal, kind: type[_Detail]) -> list[_Detail]:
    """The status details of `kind`."""
    status = _status(refused)
    found = []
    for detail in status.details if status is not None else ():
        unpacked = kind()
        if detail.Unpack(unpacked):
            found.append(unpacked)
    return found


def field_violations(refused: Refusal) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """Every violated field rule (`field`, `description`, `reason`: the rule's id)."""
    if isinstance(refused, gateway_pb2.PublishResult | gateway_pb2.PublishError):
        error = refused.error if isinstance(refused, gateway_pb2.PublishResult) else refused
        return [
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason=v.rule_id
            )
            for v in error.violations
        ]
    return [v for request in _details(refused, error_details_pb2.BadRequest)
            for v in request.field_violations]  # fmt: skip


def refusal_reason(refused: Refusal) -> str:
    """Why, for a program: INVALID_EVENT, POLICY_DENIED, ILLEGAL_TRANSITION, STATE_CONFLICT,
    NO_ROOM, STORE_UNAVAILABLE, AUDIT_UNAVAILABLE, ... ("" when none is given)."""
    infos = _details(refused, error_details_pb2.ErrorInfo)
    return infos[0].reason if infos else ""


def retry_after(refused: Refusal) -> float | None:
    """Seconds after which the same event (same id) may be sent again with a chance of being
    stored; None when retrying will not help."""
    infos = _details(refused, error_details_pb2.RetryInfo)
    return infos[0].retry_delay.ToNanoseconds() / 1e9 if infos else None


def state_refusals(refused: Refusal) -> list[gateway_pb2.StateRefusal]:
    """The aggregates that refused an event, each with its state, version and what it allows
    (empty if the refusal was not about state, or the result is a receipt)."""
    if isinstance(refused, gateway_pb2.PublishResult):
        return list(refused.error.state_refusals) if refused.HasField("error") else []
    if isinstance(refused, gateway_pb2.PublishError):
        return list(refused.state_refusals)
    status = status_of(refused)
    found: list[gateway_pb2.StateRefusal] = []
    for detail in status.details if status is not None else ():
        refusal = gateway_pb2.StateRefusal()
        if detail.Unpack(refusal):
            found.append(refusal)
    return found


def allowed_transitions(refusal: gateway_pb2.StateRefusal) -> list[str]:
    """What the aggregate allows from its state ("type → state"), with how many were cut."""
    allowed = list(refusal.allowed)
    if refusal.allowed_cut:
        allowed.append(f"and {refusal.allowed_cut} more")
    return allowed


def describe_state_refusal(refusal: gateway_pb2.StateRefusal) -> str:
    """One line for a person: the aggregate, its state and version, why, what it allows."""
    allowed = allowed_transitions(refusal)
    allows = f"; allowed from there: {', '.join(allowed)}" if allowed else ""
    return (
        f"{refusal.aggregate} is '{refusal.state}' (version {refusal.version}): "
        f"{refusal.reason}{allows}"
    )
