"""The generic lifecycle machine: the catalogue's data decides whether an event may move an
aggregate, the lifecycle's rules (incident, task, resource line, warning) say which aggregates
it touches and what it tells about them. Pure: no I/O; time comes in as `now`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from dutylink.catalogue import NONE, Catalogue, EventType
from dutylink.v1 import event_pb2
from gateway.core.workflows.base import (
    Accepted,
    Actor,
    AggregateRef,
    AggregateState,
    Context,
    IllegalTransition,
    Precondition,
    Rules,
    Verdict,
    current,
    remember,
)
from gateway.core.workflows.incident import EMERGENCY_PHASE, INCIDENT
from gateway.core.workflows.resources import RESOURCE_LINE
from gateway.core.workflows.task import TASK
from gateway.core.workflows.warnings import WARNING

# One entry per lifecycle of the catalogue; a new lifecycle adds its rules here.
LIFECYCLE_RULES: Mapping[str, Rules] = {
    "incident": INCIDENT,
    "emergency_phase": EMERGENCY_PHASE,
    "task": TASK,
    "resource_line": RESOURCE_LINE,
    "warning": WARNING,
}
EXPIRED = "expired"  # a lifecycle with this state ends its aggregates at their `expires`
_STANDING_ROLES = frozenset({"command_centre", "supervisor"})


def aggregate_refs(event: event_pb2.Event, catalogue: Catalogue) -> list[AggregateRef]:
    """The aggregates `event` moves (none for an informational or unknown type). Exercise and
    test planes are aggregates of their own."""
    event_type = catalogue.get(event.type)
    if event_type is None or event_type.lifecycle is None:
        return []
    return LIFECYCLE_RULES[event_type.lifecycle].refs(event, event_type)


def preconditions(event: event_pb2.Event, catalogue: Catalogue) -> list[Precondition]:
    """The aggregates `event` reads without moving them, and the states they must not be in."""
    event_type = catalogue.get(event.type)
    if event_type is None or event_type.lifecycle is None:
        return []
    return LIFECYCLE_RULES[event_type.lifecycle].preconditions(event, event_type)


def unmet(
    catalogue: Catalogue,
    precondition: Precondition,
    state: AggregateState | None,
    now: datetime,
) -> IllegalTransition | None:
    """Why `precondition` does not hold for its aggregate in `state` (None: it holds). The
    refusal names that aggregate, which the event does not move."""
    ref = precondition.ref
    at = effective_state(catalogue, state, now)
    if at not in precondition.refused_in:
        return None
    version = state.version if state is not None else 0
    allowed = allowed_from(catalogue, ref.lifecycle, at)
    return IllegalTransition(ref, at, version, allowed, precondition.reason)


def effective_state(catalogue: Catalogue, state: AggregateState | None, now: datetime) -> str:
    """The state the aggregate is in at `now`: past its `expires`, in a lifecycle that has an
    "expired" state, it is expired (no event needed: expiry is a matter of time)."""
    expired = state is not None and state.expires is not None and now >= state.expires
    if expired and state and EXPIRED in catalogue.lifecycle(state.lifecycle).states:
        return EXPIRED
    return current(state)


def actor_roles(actor: Actor, state: AggregateState | None) -> frozenset[str]:
    """The catalogue roles `actor` holds on the aggregate. Opening one makes it the reporter."""
    roles = {"any"} | (actor.roles & _STANDING_ROLES)
    agency = actor.agency
    if state is None:
        return frozenset(roles | {"reporter", "any_party"})
    if agency == state.opened_by:
        roles.add("reporter")
    if agency == state.lead:
        roles |= {"lead", "assigned"}
    if agency in state.assigned:
        roles.add("assigned")
    if agency and agency == state.supervisor:
        roles.add("supervisor")
    if agency in state.handlers:
        roles.add("handler")
    if roles & {"reporter", "lead", "assigned"} or agency in state.parties:
        roles.add("any_party")
    return frozenset(roles)


def allowed_from(catalogue: Catalogue, lifecycle: str, state: str) -> tuple[str, ...]:
    """The transitions the catalogue allows from `state`, as "type → state"."""
    allowed = []
    for event_type in catalogue.types_of(lifecycle=lifecycle):
        transition = event_type.transition
        if transition is None or not transition.accepts(state):
            continue
        if state in transition.stays_in or transition.to_state is None:
            allowed.append(f"{event_type.type} (stays)")
            continue
        targets = [transition.to_state]
        targets += [s for s in transition.outcomes.values() if s not in targets]
        allowed.append(f"{event_type.type} → {' | '.join(targets)}")
    return tuple(allowed)


def decide(
    catalogue: Catalogue,
    ref: AggregateRef,
    state: AggregateState | None,
    actor: Actor,
    event: event_pb2.Event,
    now: datetime,
) -> Verdict:
    """Whether `event` by `actor` may move aggregate `ref` from `state` (None: it does not
    exist yet): the new state to write, or why not with the transitions allowed instead. A
    refusal leaves the state as it is."""
    event_type = catalogue.get(event.type)
    at = effective_state(catalogue, state, now)
    version = state.version if state is not None else 0

    def refuse(reason: str) -> IllegalTransition:
        allowed = allowed_from(catalogue, ref.lifecycle, at)
        return IllegalTransition(ref, at, version, allowed, reason)

    if event_type is None or event_type.transition is None:
        return refuse(f"'{event.type}' moves no {ref.lifecycle} aggregate")
    if event_type.lifecycle != ref.lifecycle:
        return refuse(f"'{event.type}' belongs to lifecycle '{event_type.lifecycle}'")
    transition = event_type.transition
    if ref.opens:
        if state is not None:
            return refuse(f"'{event.type}' opens {ref}, which exists already")
        target = transition.opens or ""
    elif not transition.accepts(at):
        return refuse(f"'{event.type}' is not allowed from '{at}'")
    else:
        target = transition.target(at, ref.outcome)
    roles = actor_roles(actor, state)
    if not roles & set(event_type.roles):
        return refuse(
            f"'{actor.agency}' may not perform '{event.type}' (needs one of: "
            f"{', '.join(event_type.roles)})"
        )
    excluded = roles & set(event_type.not_roles)
    if excluded:
        return refuse(
            f"'{actor.agency}' may not perform '{event.type}' as {', '.join(sorted(excluded))}"
        )
    rules = LIFECYCLE_RULES[ref.lifecycle]
    problem = rules.check(Context(ref, state, event_type, event, actor, now))
    if problem:
        return refuse(problem)
    return Accepted(_next(state, ref, target, event_type, actor, event, roles, rules))


def replay(
    catalogue: Catalogue, ref: AggregateRef, state: AggregateState | None, event: event_pb2.Event
) -> AggregateState | None:
    """The state `event`, accepted when it was stored, leads aggregate `ref` to from `state` as
    a reader of the stream knows it (a projection shown only the events an agency may see can
    know fewer): no role or state check, the guard made them at the door. None when the type
    moves no aggregate of `ref`'s lifecycle, or would open one that exists."""
    event_type = catalogue.get(event.type)
    if event_type is None or event_type.transition is None:
        return None
    if event_type.lifecycle != ref.lifecycle or (ref.opens and state is not None):
        return None
    transition = event_type.transition
    at = current(state)
    target = transition.opens if ref.opens else transition.target(at, ref.outcome)
    actor = Actor(event.source)
    rules = LIFECYCLE_RULES[ref.lifecycle]
    return _next(
        state, ref, target or at, event_type, actor, event, actor_roles(actor, state), rules
    )


def _next(
    state: AggregateState | None,
    ref: AggregateRef,
    target: str,
    event_type: EventType,
    actor: Actor,
    event: event_pb2.Event,
    roles: frozenset[str],
    rules: Rules,
) -> AggregateState:
    facts = rules.facts(event, ref)
    base = state or AggregateState(
        lifecycle=ref.lifecycle,
        plane=ref.plane,
        key=ref.key,
        state=NONE,
        version=0,
        opened_by=actor.agency,
    )
    acted_as_assignee = state is not None and bool(roles & {"assigned", "lead"})
    return base.moved(
        state=target,
        version=base.version + 1,
        lead=facts.lead or base.lead,
        assigned=facts.assigned or base.assigned,
        supervisor=facts.supervisor or base.supervisor,
        deadline=facts.deadline or base.deadline,
        expires=facts.expires or base.expires,
        merged_into=facts.merged_into or base.merged_into,
        handlers=_with(base.handlers, actor.agency) if acted_as_assignee else base.handlers,
        parties=_with(base.parties, actor.agency),
        last_event_id=event.id,
        last_type=event_type.type,
        recent=remember(base.recent, event.id),
    )


def _with(agencies: tuple[str, ...], agency: str) -> tuple[str, ...]:
    return agencies if agency in agencies else (*agencies, agency)
