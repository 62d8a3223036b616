"""Decisions: allow, deny-overrides-allow, default deny, each condition, the fields to withhold,
and the sample agreements read as decisions."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from dutylink.adapters.edxl.mapping import RM_EVENT_TYPES
from dutylink.policies import bench
from dutylink.policies.engine import Decision, Evaluator, declare_grant
from dutylink.policies.loader import load_policy, parse_policy, policy_files
from dutylink.v1 import event_pb2, incident_pb2, resource_pb2
from tests.factories import NOW, incident_event, resource_request_event, warning_event

SAMPLES = Evaluator(load_policy(policy_files()))
NONE: frozenset[str] = frozenset()

AGENCIES = textwrap.dedent("""\
    roles:
      command: Command duty officer
    agencies:
      - id: fire
        name: Fire
      - id: police
        name: Police
        clearance: RESTRICTED
      - id: command
        name: Command
        roles: [command]
""")


def evaluator(rules: str) -> Evaluator:
    return Evaluator(
        parse_policy({"agencies.yaml": AGENCIES, "rules.yaml": textwrap.dedent(rules)})
    )


def incident(
    *,
    classification: int = event_pb2.CLASSIFICATION_INTERNAL,
    division: str = "310115",
    plane: int = event_pb2.PLANE_ACTUAL,
    category: int = incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS,
    severity: int = incident_pb2.INCIDENT_SEVERITY_UNSPECIFIED,
    source: str = "fire",
) -> event_pb2.Event:
    event = incident_event()
    event.classification = classification  # type: ignore[assignment]
    event.jurisdiction.division_code = division
    event.plane = plane  # type: ignore[assignment]
    event.incident.category = category  # type: ignore[assignment]
    event.incident.severity = severity  # type: ignore[assignment]
    event.source = source
    return event


def decide(
    agency: str, action: str, event: event_pb2.Event, roles: frozenset[str] = NONE
) -> Decision:
    return SAMPLES.decide(agency, roles, action, event)


# --- allow, deny, default deny ----------------------------------------------------------------


def test_an_allow_rule_allows_and_names_itself() -> None:
    decision = decide("fire", "publish", incident())
    assert decision.allowed
    assert decision.rule_ids == ("everyone-publishes-incidents",)
    assert decision.reason == "allowed by everyone-publishes-incidents"


def test_every_matching_allow_rule_is_listed_in_policy_order() -> None:
    decision = decide("police", "receive", incident(severity=incident_pb2.INCIDENT_SEVERITY_MAJOR))
    assert decision.rule_ids == (
        "responders-receive-incidents",
        "police-and-command-receive-confidential-incidents",
        "everyone-receives-major-incidents",
    )


def test_a_deny_rule_overrides_the_allow_rules_that_match() -> None:
    confidential = incident(classification=event_pb2.CLASSIFICATION_CONFIDENTIAL)
    decision = decide("fire", "publish", confidential)
    assert not decision.allowed
    assert decision.rule_ids == ("confidential-only-from-police-and-command",)
    assert decision.reason == "denied by rule confidential-only-from-police-and-command"
    assert decide("police", "publish", confidential).allowed


def test_confidential_public_order_incidents_reach_the_police_only() -> None:
    crime = incident(
        classification=event_pb2.CLASSIFICATION_CONFIDENTIAL,
        category=incident_pb2.INCIDENT_CATEGORY_PUBLIC_ORDER,
        source="police",
    )
    assert decide("police", "receive", crime).allowed
    command = decide("command", "receive", crime, frozenset({"command"}))
    assert (command.allowed, command.rule_ids) == (
        False,
        ("confidential-public-order-police-only",),
    )
    other_confidential = incident(classification=event_pb2.CLASSIFICATION_CONFIDENTIAL)
    assert decide("command", "receive", other_confidential).allowed


def test_nothing_is_allowed_unless_a_rule_allows_it() -> None:
    decision = decide("weather", "publish", resource_request_event())
    assert decision == Decision(False, (), "no rule allows", (), SAMPLES.version)


def test_an_agency_the_policy_does_not_know_is_denied() -> None:
    decision = decide("stranger", "receive", warning_event())
    assert (
        not decision.allowed and decision.reason == "unknown agency 'stranger' (not in the policy)"
    )


def test_an_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown action 'read'"):
        decide("fire", "read", incident())


def test_every_decision_carries_the_policy_version() -> None:
    assert decide("fire", "publish", incident()).policy_version == SAMPLES.policy.version
    assert (
        decide("weather", "publish", incident(division="320100")).policy_version == SAMPLES.version
    )


# --- conditions -------------------------------------------------------------------------------

RECEIVE_UP_TO_INTERNAL = """\
    rules:
      - id: fire-receives-incidents
        effect: allow
        action: receive
        agencies: [fire, police]
        types: incident.*
        max_classification: INTERNAL
        purpose: Respond.
      - id: police-receives-everything
        effect: allow
        action: receive
        agencies: [police]
        types: "*"
        max_classification: CONFIDENTIAL
        purpose: Investigate.
"""


def test_a_receive_rule_stops_at_its_classification_ceiling() -> None:
    rules = evaluator(RECEIVE_UP_TO_INTERNAL)
    assert rules.decide("fire", NONE, "receive", incident()).allowed
    restricted = incident(classification=event_pb2.CLASSIFICATION_RESTRICTED)
    assert rules.decide("fire", NONE, "receive", restricted).reason == "no rule allows"
    [check] = [
        c
        for c in rules.explain("fire", NONE, "receive", restricted).checks
        if c.rule_id == "fire-receives-incidents"
    ]
    assert check.outcome == "classification RESTRICTED is above the ceiling INTERNAL"


def test_an_agency_clearance_caps_what_any_rule_allows() -> None:
    rules = evaluator(RECEIVE_UP_TO_INTERNAL)
    restricted = incident(classification=event_pb2.CLASSIFICATION_RESTRICTED)
    assert rules.decide("police", NONE, "receive", restricted).allowed
    confidential = incident(classification=event_pb2.CLASSIFICATION_CONFIDENTIAL)
    decision = rules.decide("police", NONE, "receive", confidential)
    assert not decision.allowed
    assert decision.reason == "classification CONFIDENTIAL is above police's clearance RESTRICTED"


@pytest.mark.parametrize(
    ("division", "allowed"),
    [("310115", True), ("310101", True), ("310000", True), ("320100", False), ("130100", False)],
)
def test_a_jurisdiction_is_a_division_code_prefix(division: str, allowed: bool) -> None:
    assert decide("fire", "publish", incident(division=division)).allowed is allowed


def test_a_longer_prefix_narrows_the_area() -> None:
    rules = evaluator("""\
        rules:
          - id: fire-publishes-in-pudong
            effect: allow
            action: publish
            agencies: [fire]
            types: incident.*
            jurisdictions: ["310115", "3102"]
    """)
    for division, allowed in (
        ("310115", True),
        ("310230", True),
        ("310116", False),
        ("310101", False),
    ):
        assert rules.decide("fire", NONE, "publish", incident(division=division)).allowed is allowed


def test_a_plane_list_limits_a_rule_to_those_planes() -> None:
    test_warning, real_warning = warning_event(), warning_event()
    test_warning.plane = event_pb2.PLANE_TEST
    decision = decide("police", "publish", test_warning)
    assert decision.rule_ids == ("everyone-sends-link-tests",)
    assert decide("police", "publish", real_warning).reason == "no rule allows"


def test_a_role_counts_only_if_the_caller_holds_it_and_the_policy_grants_it() -> None:
    rules = evaluator("""\
        rules:
          - id: command-publishes-anything
            effect: allow
            action: publish
            agencies: "*"
            roles: [command]
            types: "*"
    """)
    event = incident()
    assert rules.decide("command", frozenset({"command"}), "publish", event).allowed
    assert not rules.decide("command", NONE, "publish", event).allowed
    # The gateway says fire holds "command", but the reviewed policy does not give it to fire.
    assert not rules.decide("fire", frozenset({"command"}), "publish", event).allowed


def test_min_priority_filters_routine_events() -> None:
    rules = evaluator("""\
        rules:
          - id: fire-gets-urgent-incidents
            effect: allow
            action: receive
            agencies: [fire]
            types: incident.*
            min_priority: URGENT
            max_classification: RESTRICTED
            purpose: Respond.
    """)
    event = incident()
    assert rules.decide("fire", NONE, "receive", event).allowed
    event.priority = event_pb2.PRIORITY_ROUTINE
    assert not rules.decide("fire", NONE, "receive", event).allowed


def test_incident_categories_and_severity_select_what_specialists_receive() -> None:
    gas = incident(
        category=incident_pb2.INCIDENT_CATEGORY_GAS_LEAK,
        classification=event_pb2.CLASSIFICATION_RESTRICTED,
    )
    assert decide("housing", "receive", gas).rule_ids == ("housing-receives-structural-incidents",)
    fire = incident(category=incident_pb2.INCIDENT_CATEGORY_FIRE)
    assert not decide("housing", "receive", fire).allowed
    graded = incident(
        category=incident_pb2.INCIDENT_CATEGORY_FIRE, severity=incident_pb2.INCIDENT_SEVERITY_LARGE
    )
    assert decide("housing", "receive", graded).rule_ids == ("everyone-receives-major-incidents",)
    minor = incident(
        category=incident_pb2.INCIDENT_CATEGORY_FIRE,
        severity=incident_pb2.INCIDENT_SEVERITY_GENERAL,
    )
    assert not decide("housing", "receive", minor).allowed


def test_everyone_receives_public_warnings() -> None:
    for agency in SAMPLES.policy.agency_ids:
        if agency != "audit":  # the audit office takes no part in the exchange (below)
            assert decide(agency, "receive", warning_event()).allowed, agency


# Every event type the adapters and the samples produce, per family.
SAMPLE_TYPES = (
    "incident.reported", "incident.updated", "incident.status_changed", "incident.closed",
    *RM_EVENT_TYPES.values(), "resource.message",
    "warning.alert", "warning.update", "warning.cancel",
)  # fmt: skip


def test_the_sample_audit_office_publishes_and_receives_no_event_of_any_type() -> None:
    # The auditors read the signed audit log (AuditService), never the events themselves; the
    # sample says so, and the "*" rules (link tests, grave incidents, public warnings) must not
    # make it untrue. Break-glass cannot lift it either.
    makers = {"incident": incident_event, "resource": resource_request_event,
              "warning": warning_event}  # fmt: skip
    profile = SAMPLES.policy.agency("audit")
    assert profile is not None and "auditor" in profile.roles
    grant = declare_grant(
        SAMPLES.policy, grant_id="grant-1", agency="command", roles=frozenset({"command"}),
        reason="all hands", now=NOW, duration=dt.timedelta(hours=1), receive_types=("*",),
        jurisdiction="31",
        max_classification=event_pb2.CLASSIFICATION_INTERNAL,
    )  # fmt: skip
    checked = 0
    for event_type in SAMPLE_TYPES:
        for plane in (event_pb2.PLANE_ACTUAL, event_pb2.PLANE_EXERCISE, event_pb2.PLANE_TEST):
            for classification in (
                event_pb2.CLASSIFICATION_PUBLIC,
                event_pb2.CLASSIFICATION_INTERNAL,
            ):
                event = makers[event_type.partition(".")[0]]()
                event.type = event_type
                event.plane = plane  # type: ignore[assignment]
                event.classification = classification  # type: ignore[assignment]
                if event.HasField("incident"):
                    event.incident.severity = incident_pb2.INCIDENT_SEVERITY_EXTRAORDINARY
                for action in ("publish", "receive"):
                    decision = SAMPLES.decide(
                        "audit", profile.roles, action, event, grants=[grant], now=NOW
                    )
                    assert not decision.allowed, (event_type, plane, classification, action)
                    checked += 1
    assert checked == len(SAMPLE_TYPES) * 3 * 2 * 2


def test_explain_says_why_each_rule_did_or_did_not_match() -> None:
    explanation = SAMPLES.explain("weather", NONE, "receive", incident())
    outcomes = {c.rule_id: c.outcome for c in explanation.checks}
    assert explanation.decision.reason == "no rule allows"
    assert outcomes["responders-receive-incidents"] == "not for agency weather"
    assert (
        outcomes["everyone-receives-major-incidents"]
        == "incident is not graded (needs LARGE or graver)"
    )
    assert outcomes["everyone-receives-link-tests"] == "plane ACTUAL is not one of TEST"
    assert all(c.rule_id != "everyone-receives-public-warnings" for c in explanation.checks)


# --- fields to withhold -----------------------------------------------------------------------

REPORTER_FIELDS = (
    "incident.reporter.id_number",
    "incident.reporter.name",
    "incident.reporter.phone",
    "incident.reporter.position",
)


@pytest.mark.parametrize(
    ("agency", "withheld"),
    [
        ("police", ()),
        ("health", ()),
        ("transport", ("incident.reporter",)),
        ("emergency", REPORTER_FIELDS),
        ("ecology", REPORTER_FIELDS),
        ("command", REPORTER_FIELDS),
    ],
)
def test_reporter_details_go_to_police_and_health_only(
    agency: str, withheld: tuple[str, ...]
) -> None:
    decision = decide(agency, "receive", incident(), frozenset({"command"}))
    assert decision.allowed
    assert decision.redacted_fields == withheld


def test_redactions_are_named_in_the_decision() -> None:
    decision = decide("transport", "receive", incident())
    assert decision.redaction_ids == (
        "reporter-identity-police-and-health-only",
        "transport-sees-location-not-person",
    )


def test_resource_contacts_go_to_emergency_and_health_only() -> None:
    request = resource_request_event()
    request.source = "health"
    kinds = resource_pb2.ResourceMessage.DESCRIPTOR.oneofs_by_name["kind"].fields
    personal = {
        "resource.contacts.email",
        "resource.contacts.person_name",
        "resource.contacts.phone",
        "resource.contacts.party_xml",  # the CIQ party as received: names, numbers, addresses
        "resource.rm_xml",  # the message as received holds the same
        *(f"resource.{kind.name}.resource_infos.resource.responsible_party" for kind in kinds),
    }
    assert set(decide("fire", "receive", request).redacted_fields) == personal
    assert decide("emergency", "receive", request).redacted_fields == ()
    assert decide("fire", "receive", incident(source="police")).redacted_fields == REPORTER_FIELDS


def test_an_agency_sees_every_field_of_its_own_events() -> None:
    assert decide("fire", "receive", incident(source="fire")).redacted_fields == ()
    assert decide("fire", "receive", incident(source="police")).redacted_fields == REPORTER_FIELDS


def test_publishing_withholds_nothing() -> None:
    assert decide("transport", "publish", incident(source="transport")).redacted_fields == ()


# --- benchmark script -------------------------------------------------------------------------


def test_the_benchmark_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--runs", "1", "--decisions", "200"])
    assert "decisions/s" in capsys.readouterr().out


# --- parties ----------------------------------------------------------------------------------


def _stock_notice(owner: str) -> event_pb2.Event:
    notice = event_pb2.Event(
        id="ledger-replenish-1",
        source="dutylink",
        type="inventory.replenishment_needed",
        classification=event_pb2.CLASSIFICATION_INTERNAL,
        plane=event_pb2.PLANE_ACTUAL,
    )
    notice.jurisdiction.division_code = "310115"
    notice.inventory.replenishment_needed.agency = owner
    notice.inventory.replenishment_needed.item_id = "tents"
    return notice


def test_a_ledger_notice_reaches_the_owning_agency_and_the_bureau_only() -> None:
    notice = _stock_notice("fire")
    assert decide("fire", "receive", notice).rule_ids == (
        "agencies-receive-notices-on-their-own-stock",
    )
    assert decide("emergency", "receive", notice).allowed
    assert not decide("police", "receive", notice).allowed
    checks = {c.rule_id: c.outcome for c in SAMPLES.explain("police", NONE, "receive", notice).checks}  # fmt: skip
    assert checks["agencies-receive-notices-on-their-own-stock"] == (
        "police is not a party to the event (its parties: dutylink, fire)"
    )


def test_only_parties_counts_an_incidents_lead_and_involved_agencies() -> None:
    rules = evaluator("""\
        rules:
          - id: parties-follow-their-incidents
            effect: allow
            action: receive
            agencies: "*"
            types: incident.*
            only_parties: true
            max_classification: RESTRICTED
            purpose: Follow the incidents they take part in.
    """)
    event = incident(source="fire")
    event.incident.ClearField("involved_agencies")
    assert not rules.decide("police", NONE, "receive", event).allowed
    event.incident.involved_agencies.append("police")
    assert rules.decide("police", NONE, "receive", event).allowed
    event.incident.ClearField("involved_agencies")
    event.incident.lead_agency = "command"
    assert rules.decide("command", NONE, "receive", event).allowed
    assert not rules.decide("police", NONE, "receive", event).allowed
