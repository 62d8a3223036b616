"""What a refusal by an aggregate's state says: the gateway's `StateRefusal`s, read from a
unary Publish's error (its google.rpc.Status details) or from a batch's result.

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

import grpc
from grpc_status import rpc_status

from dutylink.v1 import gateway_pb2

__all__ = ["allowed_transitions", "describe_state_refusal", "state_refusals"]


def state_refusals(
    refused: grpc.aio.AioRpcError | gateway_pb2.PublishResult | gateway_pb2.PublishError,
) -> list[gateway_pb2.StateRefusal]:
    """The aggregates that refused an event, each with its state, version and what it allows
    (empty if the refusal was not about state, or the result is a receipt)."""
    if isinstance(refused, gateway_pb2.PublishResult):
        return list(refused.error.state_refusals) if refused.HasField("error") else []
    if isinstance(refused, gateway_pb2.PublishError):
        return list(refused.state_refusals)
    status = rpc_status.from_call(refused)
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
