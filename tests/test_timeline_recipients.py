"""Who received an event of an incident's timeline and what the policy withheld from whom
(gateway.core.projections.recipients), judged with the sample policies, no server: one line per
agency but the sender, each with its receive decision and, when tracked, its status."""

from __future__ import annotations

from datetime import timedelta

from dutylink.policies.engine import Decision, Evaluator
from dutylink.policies.loader import load_policy, policy_files
from dutylink.v1 import board_pb2, event_pb2, gateway_pb2, incident_pb2
from gateway.core.projections.board_wire import board_recipient
from gateway.core.projections.recipients import Decide, Outcome, recipient_lines
from gateway.core.workflows import tracking
from tests.factories import NOW, incident_event, warning_event

SAMPLES = Evaluator(load_policy(policy_files()))
AGENCIES = SAMPLES.policy.agency_ids


def sample_policy(event: event_pb2.Event) -> Decide:
    def decide(agency: str) -> Decision:
        profile = SAMPLES.policy.agency(agency)
        roles = profile.roles if profile is not None else frozenset()
        return SAMPLES.decide(agency, roles, "receive", event)

    return decide


def fires_report() -> event_pb2.Event:
    """Fire's report of a level-IV chemical fire, RESTRICTED: no "everyone" rule lets it out."""
    report = incident_event()
    report.source = "fire"
    report.incident.severity = incident_pb2.INCIDENT_SEVERITY_GENERAL
    report.classification = event_pb2.CLASSIFICATION_RESTRICTED
    return report


def test_every_agency_but_the_sender_has_a_line_with_its_receive_decision() -> None:
    lines = {
        line.agency: line
        for line in recipient_lines(fires_report(), AGENCIES, sample_policy(fires_report()))
    }
    assert sorted(lines) == sorted(set(AGENCIES) - {"fire"})
    police, transport, housing = lines["police"], lines["transport"], lines["housing"]
    assert police.outcome is Outcome.RECEIVES and police.redacted_fields == ()
    assert "responders-receive-incidents" in police.rule_ids
    assert transport.outcome is Outcome.RECEIVES_REDACTED
    assert transport.redacted_fields == ("incident.reporter",)
    assert transport.rule_ids == ("responders-receive-incidents",)
    assert (housing.outcome, housing.rule_ids, housing.reason) == (
        Outcome.WITHHELD,
        (),
        "no rule allows",
    )
    assert lines["weather"].outcome is Outcome.WITHHELD  # above its clearance
    assert "clearance" in lines["weather"].reason
    assert lines["command"].redacted_fields == ("incident.reporter.name", "incident.reporter.phone")
    assert {line.policy_version for line in lines.values()} == {SAMPLES.version}
    assert not any(line.policy_not_archived or line.tracked for line in lines.values())


def test_an_event_without_the_fields_a_redaction_names_goes_out_whole() -> None:
    report = fires_report()
    report.incident.ClearField("reporter")
    lines = {line.agency: line for line in recipient_lines(report, AGENCIES, sample_policy(report))}
    assert (lines["transport"].outcome, lines["transport"].redacted_fields) == (
        Outcome.RECEIVES,
        (),
    )


def test_a_deny_rule_names_itself_on_the_line_it_withholds() -> None:
    warning = warning_event()  # PUBLIC: every agency may have it, but the audit office
    warning.source = "weather"
    (audit,) = [
        line
        for line in recipient_lines(warning, AGENCIES, sample_policy(warning))
        if line.agency == "audit"
    ]
    assert audit.outcome is Outcome.WITHHELD
    assert audit.rule_ids == ("auditors-receive-no-events",)
    assert audit.reason == "denied by rule auditors-receive-no-events"


def test_a_tracked_message_adds_each_recipients_status_and_the_wire_carries_it() -> None:
    report = fires_report()
    entry = tracking.start(report.id, report.type, "fire", NOW, "v1", ["police", "health"])
    entry, _ = tracking.delivered(entry, "police", NOW + timedelta(seconds=5))
    entry, _ = tracking.answered(entry, "police", True, NOW + timedelta(seconds=9), by="Li")
    lines = recipient_lines(report, AGENCIES, sample_policy(report), tracked=entry)
    by_agency = {line.agency: line for line in lines}
    police = by_agency["police"].tracked
    assert police is not None and police.status is tracking.Status.ACKNOWLEDGED
    assert by_agency["health"].tracked is not None
    assert by_agency["health"].tracked.status is tracking.Status.PENDING
    assert by_agency["transport"].tracked is None  # receives it, but it was not tracked for it
    wire = board_recipient(by_agency["police"])
    assert wire.outcome == board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES
    assert wire.tracked.status == gateway_pb2.RECIPIENT_STATUS_ACKNOWLEDGED
    assert wire.tracked.delivered_at.ToDatetime(NOW.tzinfo) == NOW + timedelta(seconds=5)
    assert wire.tracked.answered_by == "Li"
    transport = board_recipient(by_agency["transport"])
    assert transport.outcome == board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES_REDACTED
    assert list(transport.redacted_fields) == ["incident.reporter"] and not transport.HasField(
        "tracked"
    )


def test_lines_judged_without_the_policy_of_then_on_record_say_so() -> None:
    report = fires_report()
    lines = recipient_lines(
        report, ["police", "fire"], sample_policy(report), policy_not_archived=True
    )
    assert [(line.agency, line.policy_not_archived) for line in lines] == [("police", True)]
    assert board_recipient(lines[0]).policy_not_archived


def test_an_agency_the_policy_does_not_know_is_withheld_with_the_reason() -> None:
    report = fires_report()
    (stranger,) = recipient_lines(report, ["stranger"], sample_policy(report))
    assert stranger.outcome is Outcome.WITHHELD
    assert "unknown agency" in stranger.reason
