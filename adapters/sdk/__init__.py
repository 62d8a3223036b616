"""The client SDK for department systems: the client, its retry policy, the checkpoint keeper,
what a refusal says (`state_refusals`, `field_violations`, `refusal_reason`, `retry_after`: the
standard gRPC error model, the same for Publish and each PublishBatch result), and the business
acknowledgement of a delivered message (`acknowledgement_of`)."""

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.adapters.sdk.refusals import (
    describe_state_refusal,
    field_violations,
    refusal_reason,
    retry_after,
    state_refusals,
)

__all__ = [
    "acknowledgement_of",
    "describe_state_refusal",
    "field_violations",
    "refusal_reason",
    "retry_after",
    "state_refusals",
]
