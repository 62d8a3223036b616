"""Break-glass: who may declare, what a grant lifts (only there, only for whom, only while it
lasts), and what it cannot lift."""

from __future__ import annotations

import datetime as dt

import pytest

from dutylink.policies.engine import BreakGlassError, Evaluator, declare_grant
from dutylink.policies.loader import load_policy, policy_files
from dutylink.policies.model import Grant
from dutylink.v1 import event_pb2, incident_pb2
from tests.factories import incident_event

POLICY = load_policy(policy_files())
SAMPLES = Evaluator(POLICY)
COMMAND = frozenset({"command"})
NONE: frozenset[str] = frozenset()
NOW = dt.datetime(2026, 8, 15, 6, 0, tzinfo=dt.UTC)
REPORTER = ("incident.reporter",)


def event_of(incident_id: str, division: str = "310115") -> event_pb2.Event:
    event = incident_event()
    event.source = "fire"
    event.incident.incident_id = event.correlation_id = incident_id
    event.jurisdiction.division_code = division
    event.incident.severity = incident_pb2.INCIDENT_SEVERITY_UNSPECIFIED  # not graded: fewer rules
    return event


def casualty_grant(**changes: object) -> Grant:
    """The command centre lets emergency and ecology see who called about INC-1, for 6 hours."""
    declaration: dict[str, object] = {
        "grant_id": "bg-0815-1",
        "agency": "command",
        "roles": COMMAND,
        "reason": "Mass casualty incident: trace callers who reported trapped people",
        "now": NOW,
        "duration": dt.timedelta(hours=6),
        "incident_id": "INC-1",
        "agencies": ["emergency", "ecology"],
        "unredact": REPORTER,
    }
    return declare_grant(POLICY, **{**declaration, **changes})  # type: ignore[arg-type]


def test_a_declared_grant_records_who_why_and_until_when() -> None:
    grant = casualty_grant()
    assert (grant.declared_by, grant.declared_at, grant.not_after) == (
        "command",
        NOW,
        NOW + dt.timedelta(hours=6),
    )
    assert grant.reason.startswith("Mass casualty")


def test_a_grant_unredacts_the_named_fields_for_the_named_agencies_on_that_incident() -> None:
    grant = casualty_grant()
    later = NOW + dt.timedelta(hours=1)
    decision = SAMPLES.decide(
        "emergency", NONE, "receive", event_of("INC-1"), grants=[grant], now=later
    )
    assert decision.allowed
    assert decision.redacted_fields == ()
    assert decision.rule_ids == ("responders-receive-incidents", "bg-0815-1")
    assert "break-glass bg-0815-1 un-redacts fields" in decision.reason
    # Another incident, another agency: redacted as usual, and the grant is not named.
    other = SAMPLES.decide(
        "emergency", NONE, "receive", event_of("INC-2"), grants=[grant], now=later
    )
    assert other.redacted_fields != () and "bg-0815-1" not in other.rule_ids
    fire_event = event_of("INC-1")
    fire_event.source = "police"
    fire = SAMPLES.decide("fire", NONE, "receive", fire_event, grants=[grant], now=later)
    assert fire.redacted_fields != () and "bg-0815-1" not in fire.rule_ids


def test_a_grant_for_an_area_applies_within_its_prefix_only() -> None:
    grant = casualty_grant(incident_id="", jurisdiction="310115", agencies=())
    inside = SAMPLES.decide(
        "transport", NONE, "receive", event_of("X", "310115"), grants=[grant], now=NOW
    )
    outside = SAMPLES.decide(
        "transport", NONE, "receive", event_of("X", "310101"), grants=[grant], now=NOW
    )
    assert inside.redacted_fields == ()
    assert outside.redacted_fields == REPORTER


def test_an_expired_or_future_grant_does_nothing() -> None:
    grant = casualty_grant()
    event = event_of("INC-1")
    normal = SAMPLES.decide("emergency", NONE, "receive", event)
    for moment in (
        grant.not_after,
        grant.not_after + dt.timedelta(seconds=1),
        NOW - dt.timedelta(seconds=1),
    ):
        assert (
            SAMPLES.decide("emergency", NONE, "receive", event, grants=[grant], now=moment)
            == normal
        )


def test_grants_need_the_time_to_be_judged() -> None:
    with pytest.raises(ValueError, match="needs now="):
        SAMPLES.decide("emergency", NONE, "receive", event_of("INC-1"), grants=[casualty_grant()])


def test_a_grant_can_let_more_agencies_receive_the_incident() -> None:
    event = event_of("INC-1")
    assert not SAMPLES.decide("housing", NONE, "receive", event).allowed
    grant = casualty_grant(agencies=["housing"], unredact=(), receive_types=["incident.*"])
    decision = SAMPLES.decide("housing", NONE, "receive", event, grants=[grant], now=NOW)
    assert (decision.allowed, decision.rule_ids) == (True, ("bg-0815-1",))
    assert decision.reason == "allowed by break-glass bg-0815-1"
    assert decision.redacted_fields  # it lets housing receive, not see who called


def test_a_grant_cannot_lift_a_deny_rule() -> None:
    crime = event_of("INC-1")
    crime.classification = event_pb2.CLASSIFICATION_CONFIDENTIAL
    crime.incident.category = incident_pb2.INCIDENT_CATEGORY_PUBLIC_ORDER
    grant = casualty_grant(
        agencies=["command"],
        receive_types=["incident.*"],
        max_classification=event_pb2.CLASSIFICATION_CONFIDENTIAL,
    )
    decision = SAMPLES.decide("command", COMMAND, "receive", crime, grants=[grant], now=NOW)
    assert decision.rule_ids == ("confidential-public-order-police-only",) and not decision.allowed


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"agency": "police", "roles": COMMAND},
            "police holds none of the break-glass roles (command)",
        ),
        ({"roles": NONE}, "command holds none of the break-glass roles (command)"),
        (
            {"duration": dt.timedelta(hours=25)},
            "duration 1 day, 1:00:00 is not within the policy's maximum 1 day, 0:00:00",
        ),
        ({"duration": dt.timedelta(0)}, "is not within the policy's maximum"),
        ({"reason": "  "}, "a reason is required"),
        ({"incident_id": ""}, "name an incident_id or a jurisdiction prefix"),
        ({"jurisdiction": "3"}, "bad jurisdiction prefix '3'"),
        ({"agencies": ["fier"]}, "unknown agencies: fier"),
        ({"unredact": ["incident.reporter.fone"]}, "Reporter has no field 'fone'"),
        ({"unredact": (), "receive_types": ["incident"]}, "bad type pattern 'incident'"),
        ({"unredact": ()}, "a grant must un-redact fields or permit receive_types"),
        ({"now": NOW.replace(tzinfo=None)}, "now must be timezone-aware"),
    ],
)
def test_a_declaration_the_policy_does_not_permit_is_refused(
    changes: dict[str, object], problem: str
) -> None:
    with pytest.raises(BreakGlassError, match=r"^break-glass bg-0815-1: ") as refused:
        casualty_grant(**changes)
    assert problem in str(refused.value)


def test_a_grant_must_name_an_incident_or_an_area() -> None:
    with pytest.raises(ValueError, match="needs an incident_id or a jurisdiction"):
        Grant("bg", "command", "why", NOW, NOW + dt.timedelta(hours=1))
