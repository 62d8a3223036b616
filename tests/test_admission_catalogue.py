"""The catalogue at admission's door: a type the catalogue does not declare, and an event
without a field its type requires, are refused as INVALID with one field problem each, before
the policy is asked; a field the gateway stamps is never missing. No server, no grpc."""

from __future__ import annotations

from datetime import UTC, datetime

from dutylink.catalogue import load_catalogue, parse_catalogue
from dutylink.policies.engine import Decision
from dutylink.v1 import event_pb2, task_pb2
from gateway.access.auth import Principal
from gateway.core import envelope
from gateway.core.admission import (
    CATALOGUE_HINT,
    Admitted,
    RefusalKind,
    Refused,
    admit,
    admit_all,
    pipeline,
)
from gateway.core.validation import Validator
from tests.factories import envelope as envelope_of
from tests.factories import incident_event, resource_request_event, warning_event

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# A catalogue whose only type requires the source, a field the gateway stamps.
STAMPED_REQUIRED = parse_catalogue(
    """
version = 1
[lifecycles.thing]
description = "A thing."
key = "incident.incident_id"
states = ["open"]
initial = ["open"]

[[types]]
type = "incident.reported"
family = "incident"
description = "Reported."
lifecycle = "thing"
from = ["none"]
to = "open"
roles = ["any"]
required = ["source", "incident.feedback"]
"""
)


class Asked:
    """A policy that allows everything and remembers what it was asked about."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, event: event_pb2.Event) -> Decision:
        self.ids.append(event.id)
        return Decision(True, ("r1",), "ok", (), "v1")


def deny(_: event_pb2.Event) -> Decision:
    return Decision(False, (), "no rule allows it", (), "v1")


def run(event: event_pb2.Event, decide=None, catalogue=None):  # type: ignore[no-untyped-def]
    guards = pipeline(Validator(), decide or Asked(), max_event_bytes=1 << 20, catalogue=catalogue)
    return guards.run(Principal("fire"), event, envelope.timestamp(NOW))


def test_the_factories_events_carry_what_their_types_require() -> None:
    for event in (incident_event(), resource_request_event(), warning_event()):
        assert isinstance(run(event), Admitted), event.type


def test_an_unknown_type_is_invalid_on_the_type_field_before_the_policy_is_asked() -> None:
    asked = Asked()
    event = incident_event()
    event.type = "incident.teleported"
    outcome = run(event, asked)
    assert isinstance(outcome, Refused) and outcome.kind is RefusalKind.INVALID
    (problem,) = outcome.problems
    assert (problem.field, problem.rule_id) == ("type", "catalogue.unknown_type")
    assert "incident.teleported" in problem.description
    assert "dutylink catalogue list" in problem.description and CATALOGUE_HINT in outcome.message
    assert asked.ids == []


def test_an_unknown_type_is_invalid_even_where_the_policy_would_deny() -> None:
    event = incident_event()
    event.type = "incident.teleported"
    outcome = run(event, deny)
    assert isinstance(outcome, Refused) and outcome.kind is RefusalKind.INVALID
    assert outcome.decision is None


def test_each_missing_required_field_is_one_problem_named_by_its_path() -> None:
    asked = Asked()
    event = envelope_of("task.rechecked")  # requires task_id, recheck.result, recheck.agency
    event.task.task_id = "JE-2026-0042"
    event.task.title = "Blocked fire lane at the chemical park"
    event.task.status = task_pb2.TASK_STATUS_RECHECKED
    outcome = run(event, asked)
    assert isinstance(outcome, Refused) and outcome.kind is RefusalKind.INVALID
    assert [(p.field, p.rule_id) for p in outcome.problems] == [
        ("task.recheck.result", "catalogue.required"),
        ("task.recheck.agency", "catalogue.required"),
    ]
    assert "task.recheck.agency" in outcome.message and asked.ids == []
    event.task.recheck.result = task_pb2.RECHECK_RESULT_PASSED
    event.task.recheck.agency = "police"
    assert isinstance(run(event, asked), Admitted) and asked.ids == [event.id]


def test_a_missing_field_is_invalid_even_where_the_policy_would_deny() -> None:
    event = incident_event()
    event.type = "incident.feedback"  # requires incident.feedback
    outcome = run(event, deny)
    assert isinstance(outcome, Refused) and outcome.kind is RefusalKind.INVALID
    assert [(p.field, p.rule_id) for p in outcome.problems] == [
        ("incident.feedback", "catalogue.required")
    ]


def test_a_required_path_through_a_repeated_field_needs_one_item() -> None:
    event = resource_request_event()
    event.resource.request_resource.ClearField("resource_infos")
    outcome = run(event)
    assert isinstance(outcome, Refused)
    assert [p.field for p in outcome.problems] == ["resource.request_resource.resource_infos"]


def test_a_field_the_gateway_stamps_is_never_missing() -> None:
    event = incident_event()
    event.ClearField("source")
    event.incident.feedback = "Fire out."
    outcome = run(event, catalogue=STAMPED_REQUIRED)
    assert isinstance(outcome, Admitted) and outcome.event.source == "fire"
    event.incident.ClearField("feedback")
    refused = run(event, catalogue=STAMPED_REQUIRED)
    assert isinstance(refused, Refused)
    assert [p.field for p in refused.problems] == ["incident.feedback"]


def test_the_catalogue_handed_in_is_the_one_judged() -> None:
    warning = warning_event()  # catalogued in the shipped catalogue, not in this one
    refused = run(warning, catalogue=STAMPED_REQUIRED)
    assert isinstance(refused, Refused) and refused.problems[0].rule_id == "catalogue.unknown_type"
    assert isinstance(run(warning, catalogue=load_catalogue()), Admitted)


def test_admit_and_admit_all_judge_by_the_shipped_catalogue_unless_given_one() -> None:
    unknown = incident_event()
    unknown.type = "incident.teleported"
    events = [incident_event(), unknown]
    principal = Principal("fire")
    outcomes = admit_all(Validator(), Asked(), principal, events, NOW, max_event_bytes=1 << 20)
    assert [type(o).__name__ for o in outcomes] == ["Admitted", "Refused"]
    alone = admit(Validator(), Asked(), principal, unknown, NOW, max_event_bytes=1 << 20)
    assert alone == outcomes[1]
    given = admit(
        Validator(),
        Asked(),
        principal,
        incident_event(),
        NOW,
        max_event_bytes=1 << 20,
        catalogue=STAMPED_REQUIRED,
    )
    assert isinstance(given, Refused)  # this catalogue's incident.reported needs a feedback
    assert [p.field for p in given.problems] == ["incident.feedback"]
