"""Business acknowledgement and escalation of one message, as pure folds: who it reached, who
took it, and deadlines whose levels fire once each and resolve once when met late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dutylink.catalogue import load_catalogue
from dutylink.policies.deadlines import deadlines_for, notified
from dutylink.policies.engine import Evaluator
from dutylink.policies.loader import load_policy, policy_files
from dutylink.v1 import warning_pb2
from gateway.core.workflows import tracking, tracking_codec
from gateway.core.workflows.recipients import recipients
from gateway.core.workflows.tracking import ArmedDeadline, ArmedLevel, Expect, Status
from tests.factories import warning_event

T0 = datetime(2026, 8, 15, 9, 0, tzinfo=UTC)
NINE = ("police", "fire", "health", "transport", "ecology", "housing", "energy", "weather",
        "hotline")  # fmt: skip
LEVELS = (
    ArmedLevel(timedelta(0), ("command",)),
    ArmedLevel(timedelta(minutes=10), ("command", "emergency"), deputies=("police",)),
)


def ack_within(minutes: float, levels: tuple[ArmedLevel, ...] = LEVELS) -> ArmedDeadline:
    return ArmedDeadline("extreme-warning-acknowledged", Expect.ACKNOWLEDGED,
                    T0 + timedelta(minutes=minutes), levels)  # fmt: skip


def warning(*deadlines: ArmedDeadline, withheld: tuple[str, ...] = ()) -> tracking.Tracked:
    return tracking.start("W-1", "warning.alert", "weather-bureau", T0, "policy-v1",
                          NINE, withheld, deadlines)  # fmt: skip


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_seven_acknowledge_one_declines_one_stays_silent_one_escalation_names_the_silent() -> None:
    tracked = warning(ack_within(2))
    for agency in NINE:
        tracked, _ = tracking.delivered(tracked, agency, at(0.1))
    for agency in NINE[:7]:
        tracked, raised = tracking.answered(tracked, agency, True, at(0.5), by="duty officer")
        assert raised == []
    tracked, _ = tracking.answered(tracked, "weather", False, at(0.7), reason="not our area")
    assert str(tracking.summary(tracked)) == (
        "delivered 9 of 9, acknowledged 7, declined 1, pending 1: hotline"
    )
    assert tracking.due(tracked, at(1.9))[1] == []

    tracked, escalations = tracking.due(tracked, at(2))
    (escalation,) = escalations
    assert (escalation.level, escalation.resolved, escalation.pending, escalation.notify) == (
        1, False, ("hotline",), ("command",),
    )  # fmt: skip
    assert escalation.rules_version == "policy-v1" and escalation.due == at(2)
    assert tracking.due(tracked, at(5))[1] == []  # level 1 fires once
    assert tracked.next_due() == at(12)

    # A late acknowledgement is recorded and resolves the escalation, once.
    tracked, resolved = tracking.answered(tracked, "hotline", True, at(6), by="desk 3")
    assert [(e.resolved, e.level, e.notify) for e in resolved] == [(True, 1, ("command",))]
    assert tracked.recipient("hotline") == tracking.Recipient(
        "hotline", Status.ACKNOWLEDGED, at(0.1), at(6), "desk 3"
    )
    assert tracking.due(tracked, at(60))[1] == [] and tracked.next_due() is None
    assert tracking.answered(tracked, "hotline", False, at(7), reason="again")[0] == tracked


def test_levels_fire_in_order_each_once_even_when_the_timer_comes_late() -> None:
    tracked, escalations = tracking.due(warning(ack_within(2)), at(30))
    assert [(e.level, e.notify, e.deputies) for e in escalations] == [
        (1, ("command",), ()),
        (2, ("command", "emergency"), ("police",)),
    ]
    assert escalations[1].pending == tuple(sorted(NINE))
    assert tracking.due(tracked, at(90))[1] == [] and tracked.next_due() is None


def test_a_deadline_met_in_time_never_escalates() -> None:
    tracked = warning(ack_within(2))
    for agency in NINE:
        tracked, resolved = tracking.answered(tracked, agency, True, at(1))
        assert resolved == []
    assert tracked.deadlines[0].met_at == at(1) and tracked.next_due() is None
    assert tracking.due(tracked, at(100))[1] == []


def test_withheld_agencies_are_never_pending() -> None:
    tracked = warning(ack_within(2), withheld=("ecology", "housing"))
    for agency in NINE:
        tracked, _ = tracking.answered(tracked, agency, True, at(1))
    summary = tracking.summary(tracked)
    assert (summary.intended, summary.acknowledged, summary.pending) == (7, 7, ())
    assert str(summary).endswith("; withheld by policy from ecology, housing")
    assert tracking.due(tracked, at(100))[1] == []
    assert tracked.recipient("ecology") == tracking.Recipient("ecology", Status.WITHHELD)


def test_the_sender_and_strangers_are_not_recipients() -> None:
    tracked = tracking.start("T-1", "task.assigned", "command", T0, "v", ["command", "police"])
    assert [r.agency for r in tracked.recipients] == ["police"]
    assert tracking.answered(tracked, "fire", True, at(1)) == (tracked, [])
    assert tracking.delivered(tracked, "fire", at(1)) == (tracked, [])


def test_a_delivery_deadline_waits_for_delivery_not_answers() -> None:
    deadline = ArmedDeadline("delivered-in-a-minute", Expect.DELIVERED, at(1), LEVELS[:1])
    tracked = tracking.start("W-2", "warning.alert", "ecology", T0, "v", ["police", "fire"],
                             deadlines=[deadline])  # fmt: skip
    tracked, _ = tracking.delivered(tracked, "police", at(0.5))
    tracked, (escalation,) = tracking.due(tracked, at(1))
    assert escalation.pending == ("fire",)
    tracked, (resolution,) = tracking.delivered(tracked, "fire", at(3))
    assert resolution.resolved and str(tracking.summary(tracked)) == (
        "delivered 2 of 2, acknowledged 0, declined 0, pending 2: fire, police"
    )


def test_a_state_deadline_is_met_when_the_aggregate_enters_the_state() -> None:
    accepted = ArmedDeadline(
        "assignment-accepted", Expect.STATE, at(15), LEVELS, states=("handling",)
    )
    tracked = tracking.start("INC-1", "incident.assigned", "command", T0, "v", ["fire"],
                             deadlines=[accepted])  # fmt: skip
    tracked, _ = tracking.answered(tracked, "fire", True, at(1))  # acknowledged, not handling
    assert tracked.deadlines[0].met_at is None
    tracked, (raised,) = tracking.due(tracked, at(15))
    assert raised.pending == () and raised.deadline_id == "assignment-accepted"
    tracked, (resolved,) = tracking.entered(tracked, "handling", at(16))
    assert resolved.resolved and tracking.entered(tracked, "handling", at(17)) == (tracked, [])


@pytest.mark.parametrize(
    "levels",
    [(), (ArmedLevel(timedelta(minutes=5), ()), ArmedLevel(timedelta(minutes=5), ())),
     (ArmedLevel(timedelta(minutes=-1), ()),)],
)  # fmt: skip
def test_levels_must_be_distinct_ascending_and_not_negative(levels: tuple[ArmedLevel, ...]) -> None:
    with pytest.raises(ValueError, match="levels need distinct, ascending"):
        ack_within(2, levels)


def test_a_state_is_named_with_a_state_deadline_only() -> None:
    with pytest.raises(ValueError, match=r"states are named with Expect\.STATE only"):
        ArmedDeadline("d", Expect.STATE, T0, LEVELS)
    with pytest.raises(ValueError, match=r"states are named with Expect\.STATE only"):
        ArmedDeadline("d", Expect.ACKNOWLEDGED, T0, LEVELS, states=("handling",))


def test_an_entry_it_did_not_write_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tracking format"):
        tracking_codec.decode(b'{"format": 99}')
    with pytest.raises(ValueError, match="not a tracking entry"):
        tracking_codec.decode(b'{"format": 1}')


# --- properties ---------------------------------------------------------------------------------

AGENCIES = ("police", "fire", "health", "transport")
steps = st.lists(
    st.tuples(
        st.sampled_from(["deliver", "ack", "decline", "enter", "due"]),
        st.sampled_from(AGENCIES),
        st.integers(0, 40),  # minutes after the previous step
    ),
    max_size=30,
)


@given(steps=steps, withheld=st.sets(st.sampled_from(AGENCIES)))
def test_every_level_fires_at_most_once_and_resolves_at_most_once(
    steps: list[tuple[str, str, int]], withheld: set[str]
) -> None:
    deadlines = [
        ack_within(5),
        ArmedDeadline("delivered", Expect.DELIVERED, at(1), LEVELS[:1]),
        ArmedDeadline("handled", Expect.STATE, at(30), LEVELS, states=("handling",)),
    ]
    tracked = tracking.start("M-1", "task.assigned", "command", T0, "v", AGENCIES, withheld,
                             deadlines)  # fmt: skip
    now, raised, resolved = T0, [], []
    for action, agency, minutes in steps:
        now += timedelta(minutes=minutes)
        if action == "deliver":
            tracked, out = tracking.delivered(tracked, agency, now)
        elif action in ("ack", "decline"):
            tracked, out = tracking.answered(tracked, agency, action == "ack", now, reason="-")
        elif action == "enter":
            tracked, out = tracking.entered(tracked, "handling", now)
        else:
            before = {r.agency for r in tracked.recipients if r.outstanding}
            tracked, out = tracking.due(tracked, now)
            for escalation in out:
                assert set(escalation.pending) <= before and not set(escalation.pending) & withheld
        raised += [(e.deadline_id, e.level) for e in out if not e.resolved]
        resolved += [e.deadline_id for e in out if e.resolved]
        assert tracking_codec.decode(tracking_codec.encode(tracked)) == tracked
    assert len(raised) == len(set(raised))
    assert len(resolved) == len(set(resolved))
    assert all(any(d == r for d, _ in raised) for r in resolved)  # only what escalated resolves
    if (when := tracked.next_due()) is not None:
        assert tracking.due(tracked, when)[1]  # something fires then


def test_the_sample_policys_extreme_warning_deadline_armed_and_missed_by_one_agency() -> None:
    policy, catalogue = load_policy(policy_files()), load_catalogue()
    evaluator = Evaluator(policy)
    alert = warning_event()
    alert.source = "weather"
    alert.warning.infos[0].severity = warning_pb2.CAP_SEVERITY_EXTREME
    alert.warning.infos[0].urgency = warning_pb2.CAP_URGENCY_IMMEDIATE
    alert.received_time.FromDatetime(T0)
    armed = tracking.arm(
        deadlines_for(policy, alert), alert, lambda level: notified(policy, catalogue, level, alert)
    )
    assert [(d.deadline_id, d.expect, d.due) for d in armed] == [
        ("extreme-warning-acknowledged", Expect.ACKNOWLEDGED, at(2))
    ]
    assert [(level.after, level.notify) for level in armed[0].levels] == [
        (timedelta(0), ("command",)),
        (timedelta(minutes=10), ("command", "emergency")),
    ]
    meant = recipients(
        alert,
        policy.agency_ids,
        lambda a: evaluator.decide(a, frozenset(), "receive", alert).allowed,
    )
    tracked = tracking.start(alert.id, alert.type, alert.source, T0, policy.version,
                             meant.intended, meant.withheld, armed)  # fmt: skip
    for agency in meant.intended:
        if agency != "transport":
            tracked, _ = tracking.answered(tracked, agency, True, at(1))
    tracked, (escalation,) = tracking.due(tracked, at(2))
    assert (escalation.pending, escalation.notify, escalation.rules_version) == (
        ("transport",), ("command",), policy.version,
    )  # fmt: skip


def test_a_level_with_a_deputy_reroutes_and_the_deputys_acknowledgement_answers_for_the_silent() -> (
    None
):
    levels = (ArmedLevel(timedelta(0), ("command",), deputies=("emergency",)),)
    tracked = warning(ack_within(2, levels))
    for agency in NINE[:7]:
        tracked, _ = tracking.answered(tracked, agency, True, at(1))
    tracked, (raised,) = tracking.due(tracked, at(2))
    assert raised.pending == ("hotline", "weather") and raised.deputies == ("emergency",)
    deputy = tracked.recipient("emergency")
    assert deputy is not None and deputy.deputy_for == ("hotline", "weather")
    assert str(tracking.summary(tracked)) == (
        "delivered 7 of 9, acknowledged 7, declined 0, pending 2: hotline, weather; "
        "re-routed to emergency"
    )
    assert tracking_codec.decode(tracking_codec.encode(tracked)) == tracked

    tracked, resolved = tracking.answered(tracked, "emergency", True, at(3), by="deputy desk")
    assert [(e.resolved, e.level) for e in resolved] == [(True, 1)]
    summary = tracking.summary(tracked)
    assert summary.pending == () and summary.acknowledged == 7
