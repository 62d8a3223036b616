"""The client SDK for department systems: the client, its retry policy, the checkpoint keeper,
what a refusal by an aggregate's state says (`state_refusals`), and the business
acknowledgement of a delivered message (`acknowledgement_of`)."""

from adapters.sdk.acknowledgements import acknowledgement_of
from adapters.sdk.refusals import describe_state_refusal, state_refusals

__all__ = ["acknowledgement_of", "describe_state_refusal", "state_refusals"]
