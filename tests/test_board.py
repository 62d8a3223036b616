"""The duty board's projection (gateway.core.projections.board), pure: the demo's story folded
into the board, what each agency is shown of it, and a fold that depends only on the stream."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dutylink.catalogue import load_catalogue
from dutylink.incidents import incident_ids
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.policies.redaction import redact
from dutylink.v1 import event_pb2
from gateway.access.auth import Principal
from gateway.access.authorization import Authorizer, GrantBook, PolicyHolder
from gateway.cli.demo_scenario import scenario
from gateway.core.projections.board import (
    Board,
    IncidentKey,
    Visible,
    agencies,
    board_view,
    incident_view,
)
from tests.workflow_support import T0, days, incident, task

NOW = datetime(2026, 8, 15, 6, tzinfo=UTC)
CATALOGUE = load_catalogue()


@pytest.fixture(scope="module")
def authorizer(tmp_path_factory: pytest.TempPathFactory) -> Authorizer:
    directory = tmp_path_factory.mktemp("board") / "policies"
    shutil.copytree(SAMPLE_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return Authorizer(PolicyHolder(directory), GrantBook())


def stored_story() -> list[event_pb2.Event]:
    """The demo's events as the gateway stores them: stamped with source and receive time."""
    events = []
    for number, step in enumerate(scenario(NOW)):
        event = event_pb2.Event()
        event.CopyFrom(step.event)
        event.source = step.agency
        event.received_time.FromDatetime(NOW + timedelta(seconds=number))
        events.append(event)
    return events


def folded(events: list[event_pb2.Event]) -> Board:
    board = Board()
    for sequence, event in enumerate(events, start=1):
        board.add(sequence, event)
    return board


def everything(event: event_pb2.Event) -> event_pb2.Event:
    return event


def as_agency(authorizer: Authorizer, agency: str) -> Visible:
    """What the subscribe path would send `agency`: nothing it may not receive, redacted."""
    profile = authorizer.policy.agency(agency)
    principal = Principal(agency, profile.roles if profile else frozenset())

    def visible(event: event_pb2.Event) -> event_pb2.Event | None:
        decision = authorizer.decide(principal, "receive", event, NOW)
        return redact(event, decision.redacted_fields)[0] if decision.allowed else None

    return visible


def test_the_demo_incident_is_folded_to_its_whole_loop_with_its_lines() -> None:
    events = stored_story()
    board = folded(events)
    incident = events[0].incident.incident_id
    key = IncidentKey(event_pb2.PLANE_EXERCISE, incident)
    view = incident_view(CATALOGUE, board, key, everything, NOW)
    assert view is not None and view.title == events[0].incident.title
    assert view.stage is not None and view.stage.state == "closed" and not view.open
    assert view.stage.lead == "fire" and view.division_code == "310115"
    ends = {(line.lifecycle, line.key.rsplit("-", 1)[-1]): line.state for line in view.lines}
    assert ends[("resource_line", "0007/1")] == "released"
    assert sorted(s for (lifecycle, _), s in ends.items() if lifecycle == "warning") == [
        "active",
        "active",
        "cancelled",
    ]
    assert [entry.event.id for entry in view.timeline] == [
        e.id for e in events if incident in incident_ids(e)
    ]
    assert {"fire", "command", "police"} <= set(agencies(view))
    # Closed: off the board of open incidents, on it when finished ones are asked for.
    assert board_view(CATALOGUE, board, event_pb2.PLANE_EXERCISE, "31", everything, NOW) == []
    (shown,) = board_view(
        CATALOGUE, board, event_pb2.PLANE_EXERCISE, "3101", everything, NOW, include_finished=True
    )
    assert shown.key == key
    assert board_view(CATALOGUE, board, event_pb2.PLANE_ACTUAL, "", everything, NOW) == []


def test_the_loop_is_timed_from_the_report_to_the_first_event_of_each_step() -> None:
    events = stored_story()  # received one second apart
    view = incident_view(
        CATALOGUE,
        folded(events),
        IncidentKey(event_pb2.PLANE_EXERCISE, events[0].incident.incident_id),
        everything,
        NOW,
    )
    assert view is not None
    first = {e.type: n for n, e in reversed(list(enumerate(events)))}
    assert [(s.step, s.agency, s.seconds) for s in view.loop] == [
        ("verify", "fire", float(first["incident.verified"])),
        ("assign", "command", float(first["incident.assigned"])),
        ("first_ack", events[first["acknowledgement.acknowledged"]].source, 3.0),  # 4th event
        ("handle", "fire", float(first["incident.handling"])),
        ("close", "command", float(first["incident.closed"])),
    ]
    without_report = incident_view(
        CATALOGUE,
        folded(events),
        view.key,
        lambda e: None if e.type == "incident.reported" else e,
        NOW,
    )
    assert without_report is not None and without_report.loop == ()


def test_an_agency_is_shown_only_the_events_it_may_receive_redacted_as_its_policy_says(
    authorizer: Authorizer,
) -> None:
    events = stored_story()
    board = folded(events)
    key = IncidentKey(event_pb2.PLANE_EXERCISE, events[0].incident.incident_id)
    for agency in sorted(authorizer.policy.agency_ids):
        visible = as_agency(authorizer, agency)
        view = incident_view(CATALOGUE, board, key, visible, NOW)
        allowed = [
            shown for e in events if key.incident_id in incident_ids(e) if (shown := visible(e))
        ]
        if view is None:
            assert allowed == [], agency
            continue
        assert [entry.event for entry in view.timeline] == allowed, agency
    transport = incident_view(CATALOGUE, board, key, as_agency(authorizer, "transport"), NOW)
    assert transport is not None
    reports = [e.event for e in transport.timeline if e.event.type == "incident.reported"]
    assert reports and not any(r.incident.HasField("reporter") for r in reports)


def test_an_event_folded_twice_or_naming_no_incident_changes_nothing() -> None:
    events = stored_story()
    board = folded(events)
    before = board.fingerprint()
    assert board.add(3, events[2]) == []  # a redelivery of a sequence already folded
    unrelated = event_pb2.Event(id="x", type="inventory.declared", plane=event_pb2.PLANE_ACTUAL)
    assert board.add(board.last_sequence + 1, unrelated) == []
    assert board.fingerprint() == before


def test_an_incident_with_a_task_past_its_deadline_comes_first_on_the_board() -> None:
    late, quiet = "INC-LATE", "INC-QUIET"
    events = [incident("incident.reported", quiet), incident("incident.reported", late)]
    for number, event in enumerate(events):
        event.source, event.id = "police", f"report-{number}"
    opened = task("task.opened")
    assigned = task("task.assigned", owner="housing", supervisor="emergency", deadline=T0 + days(7))
    for number, event in enumerate((opened, assigned)):
        event.task.origin_incident_id = late
        event.source, event.id = ("police", "emergency")[number], f"task-{number}"
        event.received_time.FromDatetime(T0 - days(1))  # before the quiet report's update
    events += [opened, assigned]
    board = folded(events)
    before = board_view(CATALOGUE, board, event_pb2.PLANE_ACTUAL, "", everything, T0 + days(6))
    after = board_view(CATALOGUE, board, event_pb2.PLANE_ACTUAL, "", everything, T0 + days(8))
    assert [v.key.incident_id for v in before] == [quiet, late], "newest first"
    assert [v.key.incident_id for v in after] == [late, quiet], "overdue first"
    (overdue,) = after[0].overdue(T0 + days(8))
    assert (overdue.lifecycle, overdue.key, overdue.state) == ("task", "T-1", "assigned")
    assert overdue.assigned == ("housing",) and overdue.deadline == T0 + days(7)


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_same_stream_folds_to_the_same_board_however_it_is_redelivered(
    random: object,
) -> None:
    events = stored_story()
    live = folded(events)
    rebuilt = Board()
    deliveries = list(enumerate(events, start=1))
    # A consumer delivers in order, but may hand over an event again after a reconnect.
    for sequence, event in deliveries:
        rebuilt.add(sequence, event)
        if random.random() < 0.3:  # type: ignore[attr-defined]
            again = random.randint(1, sequence)  # type: ignore[attr-defined]
            rebuilt.add(again, events[again - 1])
    assert rebuilt.fingerprint() == live.fingerprint()
