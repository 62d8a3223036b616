"""The client SDK for department systems: the client, its retry policy, the checkpoint keeper,
and what a refusal by an aggregate's state says (`state_refusals`)."""

from adapters.sdk.refusals import describe_state_refusal, state_refusals

__all__ = ["describe_state_refusal", "state_refusals"]
