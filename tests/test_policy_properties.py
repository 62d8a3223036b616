"""Invariants of the evaluator over small random policies and events: an allow rule never
removes access, a deny rule never adds it, grants never beat a deny rule, and `explain` agrees
with `decide`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from itertools import product

from hypothesis import given
from hypothesis import strategies as st

from dutylink.policies.engine import Evaluator
from dutylink.policies.model import ACTIONS, EFFECTS, Agency, Grant, Policy, Rule, type_scope
from dutylink.v1 import common_pb2, event_pb2

AGENCY_IDS = ("fire", "police", "command")
ROLES = ("command", "duty")
AGENCIES = (
    Agency("fire", "Fire"),
    Agency("police", "Police", clearance=event_pb2.CLASSIFICATION_RESTRICTED),
    Agency("command", "Command", roles=frozenset(ROLES)),
)
CALLERS = [
    (agency, roles)
    for agency in (*AGENCY_IDS, "stranger")
    for roles in (frozenset(), frozenset({"command"}), frozenset(ROLES))
]
PATTERNS = ("*", "incident.*", "incident.reported", "incident.closed", "resource.*",
            "resource.request", "warning.*", "warning.alert")  # fmt: skip
NOW = dt.datetime(2026, 8, 15, 6, 0, tzinfo=dt.UTC)


@st.composite
def rules(draw: st.DrawFn, effect: str | None = None) -> Rule:
    types = tuple(draw(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True)))
    incident_only = set(type_scope(types)) == {"incident"}
    lowest = draw(st.integers(1, 4))
    some = st.lists
    action = draw(st.sampled_from(ACTIONS))
    return Rule(
        id="rule",
        effect=draw(st.sampled_from(EFFECTS)) if effect is None else effect,  # type: ignore[arg-type]
        action=action,
        agencies=draw(
            st.just(("*",))
            | some(st.sampled_from(AGENCY_IDS), min_size=1, max_size=3, unique=True).map(tuple)
        ),
        types=types,
        except_agencies=frozenset(draw(some(st.sampled_from(AGENCY_IDS), max_size=1))),
        roles=frozenset(draw(some(st.sampled_from(ROLES), max_size=2))),
        jurisdictions=tuple(
            draw(some(st.sampled_from(["31", "3101", "310115", "32"]), max_size=2, unique=True))
        ),
        planes=frozenset(draw(some(st.integers(1, 3), max_size=2))),
        min_classification=lowest,
        max_classification=draw(st.integers(lowest, 4)),
        min_priority=draw(st.integers(0, 4)),
        categories=frozenset(draw(some(st.integers(1, 16), max_size=3)))
        if incident_only
        else frozenset(),
        min_severity=draw(st.integers(0, 4)) if incident_only else 0,
        only_parties=draw(st.booleans()) if action == "receive" else False,
    )


def numbered(drawn: list[Rule]) -> tuple[Rule, ...]:
    return tuple(dataclasses.replace(rule, id=f"r{n}") for n, rule in enumerate(drawn))


@st.composite
def events(draw: st.DrawFn) -> event_pb2.Event:
    event_type = draw(
        st.sampled_from(
            [
                "incident.reported",
                "incident.closed",
                "resource.request",
                "resource.commit",
                "warning.alert",
            ]
        )
    )
    event = event_pb2.Event(
        type=event_type,
        source=draw(st.sampled_from(AGENCY_IDS)),
        correlation_id="INC-1",
        jurisdiction=common_pb2.Jurisdiction(
            division_code=draw(st.sampled_from(["310115", "310101", "320100"]))
        ),
        classification=draw(st.integers(1, 4)),  # type: ignore[arg-type]
        plane=draw(st.integers(1, 3)),  # type: ignore[arg-type]
        priority=draw(st.integers(1, 4)),  # type: ignore[arg-type]
    )
    if event_type.startswith("incident"):
        event.incident.category = draw(st.integers(1, 16))  # type: ignore[assignment]
        event.incident.severity = draw(st.integers(0, 4))  # type: ignore[assignment]
        event.incident.involved_agencies.extend(
            draw(st.lists(st.sampled_from(AGENCY_IDS), max_size=2, unique=True))
        )
    elif event_type.startswith("resource"):
        event.resource.incident_id = "INC-1"
    else:
        event.warning.identifier = "W-1"
    return event


grants = st.builds(
    Grant,
    id=st.just("bg-1"),
    declared_by=st.just("command"),
    reason=st.just("mass casualty incident"),
    declared_at=st.just(NOW - dt.timedelta(hours=1)),
    not_after=st.just(NOW + dt.timedelta(hours=5)),
    incident_id=st.just("INC-1"),
    agencies=st.frozensets(st.sampled_from(AGENCY_IDS), max_size=2),
    receive_types=st.lists(st.sampled_from(PATTERNS), max_size=2).map(tuple),
    max_classification=st.integers(1, 4),
)


def access(
    rules: tuple[Rule, ...], event: event_pb2.Event, grant_list: tuple[Grant, ...] = ()
) -> dict[tuple[str, frozenset[str], str], bool]:
    evaluator = Evaluator(Policy(AGENCIES, rules))
    return {
        (agency, roles, action): evaluator.decide(
            agency, roles, action, event, grants=grant_list, now=NOW
        ).allowed
        for (agency, roles), action in product(CALLERS, ACTIONS)
    }


@given(st.lists(rules(), max_size=6), rules(effect="allow"), events())
def test_adding_an_allow_rule_never_removes_access(
    base: list[Rule], extra: Rule, event: event_pb2.Event
) -> None:
    before = access(numbered(base), event)
    after = access((*numbered(base), dataclasses.replace(extra, id="extra")), event)
    assert all(after[key] for key, allowed in before.items() if allowed)


@given(st.lists(rules(), max_size=6), rules(effect="deny"), events(), st.lists(grants, max_size=1))
def test_adding_a_deny_rule_never_adds_access(
    base: list[Rule], extra: Rule, event: event_pb2.Event, grant_list: list[Grant]
) -> None:
    before = access(numbered(base), event, tuple(grant_list))
    after = access(
        (*numbered(base), dataclasses.replace(extra, id="extra")), event, tuple(grant_list)
    )
    assert all(before[key] for key, allowed in after.items() if allowed)


@given(st.lists(rules(), max_size=6), events(), grants)
def test_a_grant_never_overrides_a_deny_rule(
    base: list[Rule], event: event_pb2.Event, grant: Grant
) -> None:
    evaluator = Evaluator(Policy(AGENCIES, numbered(base)))
    for (agency, roles), action in product(CALLERS, ACTIONS):
        plain = evaluator.decide(agency, roles, action, event)
        granted = evaluator.decide(agency, roles, action, event, grants=[grant], now=NOW)
        if plain.reason.startswith("denied by"):
            assert granted == plain
        if plain.allowed:
            assert granted.allowed


@given(st.lists(rules(), max_size=8), events())
def test_explain_agrees_with_decide(base: list[Rule], event: event_pb2.Event) -> None:
    evaluator = Evaluator(Policy(AGENCIES, numbered(base)))
    for (agency, roles), action in product(CALLERS, ACTIONS):
        explanation = evaluator.explain(agency, roles, action, event)
        decision = explanation.decision
        matched = {
            effect: {
                c.rule_id
                for c in explanation.checks
                if c.effect == effect and c.outcome == "matches"
            }
            for effect in EFFECTS
        }
        if decision.reason.startswith(("unknown agency", "classification")):
            continue  # decided before any rule is looked at
        if decision.allowed:
            assert (set(decision.rule_ids), matched["deny"]) == (matched["allow"], set())
        elif decision.rule_ids:
            assert set(decision.rule_ids) == matched["deny"]
        else:
            assert matched == {"allow": set(), "deny": set()}
