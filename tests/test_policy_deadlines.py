"""Deadlines in the policy language: the samples, every validation with its file:line, the
matcher, escalation targets and the proto's own checks of acknowledgements and escalations."""

from __future__ import annotations

import datetime as dt
import textwrap

import protovalidate
import pytest

from dutylink.catalogue import load_catalogue
from dutylink.policies.deadlines import deadlines_for, due, level_due, matches, notified
from dutylink.policies.engine import Evaluator, parties
from dutylink.policies.loader import load_policy, parse_policy, policy_files
from dutylink.policies.model import (
    CAP_SEVERITIES,
    CAP_URGENCIES,
    CLASSIFICATIONS,
    PLANES,
    EscalationLevel,
    Policy,
    PolicyError,
)
from dutylink.v1 import (
    acknowledgement_pb2,
    escalation_pb2,
    event_pb2,
    incident_pb2,
    task_pb2,
    warning_pb2,
)

AGENCIES = textwrap.dedent("""\
    roles:
      command: Command duty officer
      supervisor: Supervising agency
    agencies:
      - id: fire
        name: Fire
      - id: emergency
        name: Emergency
        roles: [supervisor]
      - id: command
        name: Command
        roles: [command]
""")

WARNING_DEADLINE = textwrap.dedent("""\
    deadlines:
      - id: extreme-warning-acknowledged
        types: [warning.alert, warning.update]
        severities: [EXTREME]
        urgencies: [IMMEDIATE]
        min_priority: URGENT
        planes: [ACTUAL, EXERCISE]
        expect: acknowledged
        within: 2m
        escalate:
          - after: 0s
            to: [command_centre]
          - after: 10m
            to: [command, supervisor]
            deputy: [fire]
""")


def load(text: str) -> Policy:
    return parse_policy({"policies/agencies.yaml": AGENCIES, "policies/deadlines.yaml": text})


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(text)
    return [str(finding) for finding in caught.value.findings]


def one_deadline(**changes: str) -> str:
    """A valid deadline with some keys' YAML replaced (a value of "" drops the key)."""
    keys = {
        "id": "d1",
        "types": "incident.assigned",
        "expect": "state:handling",
        "within": "15m",
        "escalate": "\n      - after: 0s\n        to: [command]",
    } | changes
    body = "".join(f"    {key}: {value}\n" for key, value in keys.items() if value)
    return "deadlines:\n  - " + body.lstrip()


# --- the samples and the shape ----------------------------------------------------------------


def test_the_sample_deadlines_load_without_warnings() -> None:
    policy = load_policy(policy_files())
    assert [d.id for d in policy.deadlines] == [
        "extreme-warning-acknowledged",
        "assignment-accepted",
        "public-report-first-feedback",
        "task-rechecked",
    ]
    assert policy.warnings == ()
    rechecked = policy.deadline("task-rechecked")
    assert rechecked is not None and rechecked.states == ("rechecked", "recheck_failed")
    assert rechecked.within == dt.timedelta(days=3)


def test_a_deadline_is_read_with_its_levels_in_order() -> None:
    (deadline,) = load(WARNING_DEADLINE).deadlines
    assert deadline.expect == "acknowledged" and deadline.within == dt.timedelta(minutes=2)
    assert deadline.severities == {CAP_SEVERITIES["EXTREME"]}
    assert deadline.urgencies == {CAP_URGENCIES["IMMEDIATE"]}
    assert [lv.after for lv in deadline.escalate] == [dt.timedelta(0), dt.timedelta(minutes=10)]
    assert deadline.escalate[1].to == ("command", "supervisor")
    assert deadline.escalate[1].deputy == ("fire",)
    assert (deadline.file, deadline.line) == ("policies/deadlines.yaml", 2)


def test_the_deadlines_are_part_of_the_policy_version() -> None:
    shorter = WARNING_DEADLINE.replace("within: 2m", "within: 1m")
    assert load(WARNING_DEADLINE).version != load(shorter).version


# --- validation, each on its line ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"within": "2x"}, "policies/deadlines.yaml:5: bad duration '2x' for within"),
        ({"within": "0m"}, "policies/deadlines.yaml:5: within must be longer than 0"),
        ({"within": "31d"}, "policies/deadlines.yaml:5: within 31d is longer than 30d"),
        ({"types": "incident.asigned"}, "policies/deadlines.yaml:3: unknown event type 'incident.asigned' (did you mean 'incident.assigned'?)"),
        ({"types": "'*'"}, "policies/deadlines.yaml:3: a deadline tracks named types or families, not '*'"),
        ({"types": "acknowledgement.*"}, "policies/deadlines.yaml:3: 'acknowledgement.*': acknowledgement events are not tracked"),
        ({"types": "alarm.*"}, "policies/deadlines.yaml:3: bad type pattern 'alarm.*'"),
        ({"expect": "answered"}, "policies/deadlines.yaml:4: unknown expect 'answered'"),
        ({"expect": "state:handled"}, "policies/deadlines.yaml:4: unknown state 'handled' of lifecycle incident (did you mean 'handling'?)"),
        ({"types": "warning.ack", "expect": "state:active"}, "policies/deadlines.yaml:4: expect 'state:active' needs types of one lifecycle: warning.ack moves no lifecycle"),
        ({"types": "[incident.assigned, task.assigned]"}, "policies/deadlines.yaml:4: expect 'state:handling' needs types of one lifecycle: the types span the lifecycles incident, task"),
        ({"severities": "[EXTREME]"}, "policies/deadlines.yaml:9: unknown incident severity 'EXTREME'"),
        ({"types": "task.assigned", "expect": "acknowledged", "severities": "[MAJOR]"}, "policies/deadlines.yaml:9: severities apply to warnings (CAP severity) or incidents"),
        ({"urgencies": "[IMMEDIATE]"}, "policies/deadlines.yaml:9: urgencies apply to warnings only"),
        ({"min_priority": "HIGH"}, "policies/deadlines.yaml:9: unknown priority 'HIGH'"),
        ({"planes": "[DRILL]"}, "policies/deadlines.yaml:9: unknown plane 'DRILL'"),
        ({"escalate": "[]"}, "policies/deadlines.yaml:6: escalate needs at least one level"),
        ({"escalate": "\n      - after: 1m\n        to: [command]\n      - after: 1m\n        to: [command]"}, "policies/deadlines.yaml:9: level 2 fires after 1m, not later than level 1"),
        ({"escalate": "\n      - after: 1m"}, "policies/deadlines.yaml:7: escalation level 1 is missing required key 'to'"),
        ({"escalate": "\n      - after: 0s\n        to: [comand]"}, "policies/deadlines.yaml:8: unknown agency 'comand' (did you mean 'command'?)"),
        ({"escalate": "\n      - after: 0s\n        to: [command]\n        deputy: [polic]"}, "policies/deadlines.yaml:9: unknown agency 'polic'"),
        ({"escalate": "\n      - after: 0s\n        to: ['*']"}, "policies/deadlines.yaml:8: '*' is not allowed in to"),
        ({"escalate": "\n      - after: 0\n        to: [command]"}, "policies/deadlines.yaml:7: bad duration '0' for after"),
        ({"within": ""}, "policies/deadlines.yaml:2: deadline 'd1' is missing required key 'within'"),
        ({"witin": "2m"}, "policies/deadlines.yaml:9: unknown key 'witin' in deadline 'd1' (did you mean 'within'?)"),
    ],
)  # fmt: skip
def test_each_mistake_is_reported_on_its_line(changes: dict[str, str], expected: str) -> None:
    found = errors(one_deadline(**changes))
    assert any(line.startswith(expected) for line in found), found


def test_an_escalation_to_a_standing_role_nobody_holds_is_a_warning() -> None:
    text = one_deadline(escalate="\n      - after: 0s\n        to: [command_centre]")
    assert not [w for w in load(text).warnings if "deadline" in w.message]
    alone = parse_policy({"policies/deadlines.yaml": "agencies:\n  - id: fire\n    name: Fire\n"
                          + text})  # fmt: skip
    (warning,) = [w for w in alone.warnings if "deadline" in w.message]
    assert str(warning) == (
        "policies/deadlines.yaml:10: deadline 'd1': escalation to command_centre reaches no "
        "agency (no agency holds the role 'command')"
    )


def test_a_deadline_id_must_differ_from_every_rule_id() -> None:
    text = one_deadline(id="fire-publishes") + textwrap.dedent("""\
        rules:
          - id: fire-publishes
            effect: allow
            action: publish
            agencies: [fire]
            types: incident.*
    """)
    assert any("duplicate rule id 'fire-publishes'" in line for line in errors(text))


# --- the matcher ---------------------------------------------------------------------------------


def warning_event(
    severity: str = "EXTREME", urgency: str = "IMMEDIATE", priority: int = 3
) -> event_pb2.Event:
    event = event_pb2.Event(id="w-1", type="warning.alert", source="weather", priority=priority,
                            plane=event_pb2.PLANE_ACTUAL)  # fmt: skip
    event.time.FromDatetime(dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC))
    event.warning.infos.add(severity=CAP_SEVERITIES["MINOR"], urgency=CAP_URGENCIES["FUTURE"])
    event.warning.infos.add(severity=CAP_SEVERITIES[severity], urgency=CAP_URGENCIES[urgency])
    return event


def test_a_matching_warning_is_tracked_and_falls_due_within_the_deadline() -> None:
    policy = load(WARNING_DEADLINE)
    event = warning_event()
    (deadline,) = deadlines_for(policy, event)
    assert due(deadline, event) == dt.datetime(2026, 7, 1, 8, 2, tzinfo=dt.UTC)
    assert level_due(deadline, 2, event) == dt.datetime(2026, 7, 1, 8, 12, tzinfo=dt.UTC)
    # Once the gateway stamped it, the clock runs from its receipt, not the publisher's time.
    event.received_time.FromDatetime(dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC))
    assert due(deadline, event) == dt.datetime(2026, 7, 1, 9, 2, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "event",
    [
        warning_event(severity="SEVERE"),
        warning_event(urgency="EXPECTED"),
        warning_event(priority=2),
    ],
)
def test_a_warning_missing_one_condition_is_not_tracked(event: event_pb2.Event) -> None:
    assert deadlines_for(load(WARNING_DEADLINE), event) == ()


def test_severity_and_urgency_must_hold_in_the_same_info_block() -> None:
    event = warning_event(severity="MINOR")
    event.warning.infos.add(severity=CAP_SEVERITIES["EXTREME"], urgency=CAP_URGENCIES["PAST"])
    assert deadlines_for(load(WARNING_DEADLINE).deadlines, event) == ()


def test_other_planes_and_types_are_not_tracked() -> None:
    policy = load(WARNING_DEADLINE)
    test_plane = warning_event()
    test_plane.plane = event_pb2.PLANE_TEST
    cancel = warning_event()
    cancel.type = "warning.cancel"
    assert deadlines_for(policy, test_plane) == deadlines_for(policy, cancel) == ()


def test_incident_severities_match_graded_incidents_of_a_family_pattern() -> None:
    policy = load(one_deadline(types="incident.*", expect="acknowledged", severities="[MAJOR]"))
    (deadline,) = policy.deadlines
    event = event_pb2.Event(type="incident.assigned", priority=1)
    event.incident.severity = incident_pb2.INCIDENT_SEVERITY_MAJOR
    assert matches(deadline, event)
    event.incident.severity = incident_pb2.INCIDENT_SEVERITY_GENERAL
    assert not matches(deadline, event)


def test_escalation_targets_resolve_standing_roles_and_deputies() -> None:
    policy = load(WARNING_DEADLINE)
    (deadline,) = policy.deadlines
    catalogue = load_catalogue()
    event = warning_event()
    assert notified(policy, catalogue, deadline.escalate[0], event) == {"command"}
    assert notified(policy, catalogue, deadline.escalate[1], event) == {
        "command",
        "emergency",
        "fire",
    }
    task = event_pb2.Event(type="task.rectified", task=task_pb2.Task(supervising_agency="fire"))
    sup_only = EscalationLevel(dt.timedelta(0), ("supervisor",))
    assert notified(policy, catalogue, sup_only, task) == {"emergency", "fire"}


# --- the payloads: proto checks and parties ------------------------------------------------------


def test_a_declined_acknowledgement_needs_a_reason() -> None:
    declined = acknowledgement_pb2.Acknowledgement(
        event_id="CAD-2026-000123",
        event_source="police",
        decision=acknowledgement_pb2.ACKNOWLEDGEMENT_DECISION_DECLINED,
    )
    with pytest.raises(protovalidate.ValidationError) as caught:
        protovalidate.validate(declined)
    assert "acknowledgement.declined_needs_reason" in str(caught.value.violations)
    declined.reason = "Not our district: forward to Pudong."
    protovalidate.validate(declined)


def test_an_acknowledgement_needs_an_id_and_a_decision() -> None:
    with pytest.raises(protovalidate.ValidationError) as caught:
        protovalidate.validate(acknowledgement_pb2.Acknowledgement(event_id="-bad"))
    paths = str(caught.value.violations)
    assert "event_id" in paths and "decision" in paths


def test_an_escalation_is_bounded() -> None:
    escalation = escalation_pb2.Escalation(
        event_id="w-1", tracked_source="weather", tracked_type="warning.alert",
        deadline_id="extreme-warning-acknowledged", level=1,
        state=escalation_pb2.ESCALATION_STATE_RAISED, rules_version="ab" * 32,
        pending_agencies=["fire"], notified_agencies=["command"],
    )  # fmt: skip
    escalation.due.FromDatetime(dt.datetime(2026, 7, 1, 8, 2, tzinfo=dt.UTC))
    protovalidate.validate(escalation)
    escalation.level = 0
    escalation.notified_agencies.extend(["command"])
    with pytest.raises(protovalidate.ValidationError) as caught:
        protovalidate.validate(escalation)
    paths = str(caught.value.violations)
    assert "level" in paths and "notified_agencies" in paths


def test_the_parties_of_answers_and_escalations() -> None:
    ack = event_pb2.Event(source="fire", type="acknowledgement.acknowledged")
    ack.acknowledgement.event_source = "weather"
    assert parties(ack) == {"fire", "weather"}
    escalation = event_pb2.Event(source="dutylink", type="escalation.raised")
    escalation.escalation.tracked_source = "weather"
    escalation.escalation.pending_agencies.append("fire")
    escalation.escalation.notified_agencies.extend(["command", "emergency"])
    assert parties(escalation) == {"dutylink", "weather", "fire", "command", "emergency"}


def test_an_escalation_event_matches_its_family() -> None:
    event = event_pb2.Event(type="warning.raised")
    event.escalation.event_id = "w-1"
    with pytest.raises(protovalidate.ValidationError) as caught:
        protovalidate.validate(event)
    assert "event.type_matches_payload" in str(caught.value.violations)
    assert warning_pb2  # the CAP Ack stays a warning event


def test_the_sample_rules_route_answers_to_the_sender_and_the_command_centre() -> None:
    evaluator = Evaluator(load_policy(policy_files()))
    ack = event_pb2.Event(source="fire", type="acknowledgement.acknowledged",
                          classification=CLASSIFICATIONS["INTERNAL"], plane=PLANES["ACTUAL"])  # fmt: skip
    ack.jurisdiction.division_code = "310115"
    ack.acknowledgement.event_id = "w-1"
    ack.acknowledgement.event_source = "weather"
    assert evaluator.decide("fire", frozenset(), "publish", ack).allowed
    assert evaluator.decide("command", frozenset({"command"}), "receive", ack).allowed
    assert evaluator.decide("weather", frozenset(), "receive", ack).allowed
    assert not evaluator.decide("transport", frozenset(), "receive", ack).allowed


def test_an_acknowledgements_type_says_its_decision() -> None:
    event = event_pb2.Event(type="acknowledgement.acknowledged")
    event.acknowledgement.decision = acknowledgement_pb2.ACKNOWLEDGEMENT_DECISION_DECLINED
    with pytest.raises(protovalidate.ValidationError) as caught:
        protovalidate.validate(event)
    assert "event.acknowledgement_type_matches_decision" in str(caught.value.violations)
    event.type = "acknowledgement.declined"
    with pytest.raises(protovalidate.ValidationError) as caught:
        protovalidate.validate(event)
    assert "event.acknowledgement_type_matches_decision" not in str(caught.value.violations)
