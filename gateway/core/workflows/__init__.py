"""The linked-duty workflows as pure folds over events: the resource ledger (ledger.py) and the
lifecycles (incident loop, emergency phase, joint-enforcement
task, EDXL-RM resource line, CAP warning). The machines are the catalogue's data
(dutylink.catalogue); each lifecycle's module only says which aggregates an event touches and
what it tells about them.

How an admission guard uses it (the store and its compare-and-set sit at the edge):

    for ref in aggregate_refs(event, catalogue):
        raw = kv.get(ref.kv_key)                 # None: the aggregate does not exist yet
        state = AggregateState.from_bytes(raw) if raw else None
        verdict = decide(catalogue, ref, state, actor, event, now)
        # Accepted: write verdict.new_state.to_bytes() only if the version read is still there;
        # IllegalTransition: refuse (FAILED_PRECONDITION) naming its aggregate, state, version
        # and allowed transitions.

Pure: no I/O; time comes in as `now`.
"""

from gateway.core.workflows.base import (
    Accepted,
    Actor,
    AggregateRef,
    AggregateState,
    IllegalTransition,
    Verdict,
)
from gateway.core.workflows.machine import (
    actor_roles,
    aggregate_refs,
    allowed_from,
    decide,
    effective_state,
)

__all__ = [
    "Accepted",
    "Actor",
    "AggregateRef",
    "AggregateState",
    "IllegalTransition",
    "Verdict",
    "actor_roles",
    "aggregate_refs",
    "allowed_from",
    "decide",
    "effective_state",
]
