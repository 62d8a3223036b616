"""The lifecycle folds (gateway.core.workflows) over the shipped catalogue: scenarios of each
loop, and properties over random message sequences (every accepted sequence is a path of the
declared machine, a refusal changes nothing, one accepted transition per state and version)."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from dutylink.catalogue import NONE
from dutylink.v1 import event_pb2, resource_pb2
from gateway.core.workflows import (
    Accepted,
    Actor,
    AggregateRef,
    AggregateState,
    IllegalTransition,
    aggregate_refs,
    decide,
)
from tests.workflow_support import (
    CATALOGUE,
    COMMAND,
    RECHECK_FAILED,
    RECHECK_PASSED,
    SUPERVISOR,
    T0,
    World,
    agency,
    days,
    incident,
    resource,
    task,
    warning,
)

ACCEPT, DECLINE = resource_pb2.RESPONSE_TYPE_ACCEPT, resource_pb2.RESPONSE_TYPE_DECLINE
INC = "lifecycle.incident.actual.INC-1"


def _state(world: World, key: str) -> str:
    found = world.state(key)
    return found.state if found else NONE


# --- the incident loop -----------------------------------------------------------------------


def test_a_public_report_goes_through_all_seven_stages_to_closed() -> None:
    world, hotline, fire = World(), agency("hotline"), agency("fire")
    steps = [
        (hotline, incident("incident.reported"), "reported"),
        (COMMAND, incident("incident.verified"), "verified"),
        (COMMAND, incident("incident.assigned", lead="fire", involved=["police"]), "assigned"),
        (fire, incident("incident.handling"), "handling"),
        (agency("police"), incident("incident.progress"), "handling"),
        (fire, incident("incident.feedback"), "feedback"),
        (COMMAND, incident("incident.published"), "published"),
        (COMMAND, incident("incident.rewarded"), "rewarded"),
        (COMMAND, incident("incident.closed"), "closed"),
    ]
    for version, (actor, event, expected) in enumerate(steps, start=1):
        assert world.apply(actor, event) == [], event.type
        state = world.state(INC)
        assert state is not None and (state.state, state.version) == (expected, version)
    final = world.state(INC)
    assert final is not None
    assert (final.opened_by, final.lead, final.assigned) == ("hotline", "fire", ("fire", "police"))


def test_a_stage_out_of_order_is_refused_naming_state_version_and_allowed_steps() -> None:
    world = World()
    world.apply(agency("hotline"), incident("incident.reported"))
    [refusal] = world.apply(COMMAND, incident("incident.assigned", lead="fire"))
    assert (refusal.current_state, refusal.version) == ("reported", 1)
    assert refusal.aggregate.key == "INC-1"
    assert "incident.verified → verified" in refusal.allowed
    assert "incident.updated (stays)" in refusal.allowed
    assert "not allowed from 'reported'" in refusal.reason
    assert "is 'reported' (version 1)" in str(refusal)


def test_only_the_lead_gives_feedback() -> None:
    world = World()
    world.apply(agency("hotline"), incident("incident.reported"))
    world.apply(COMMAND, incident("incident.verified"))
    world.apply(COMMAND, incident("incident.assigned", lead="fire", involved=["police"]))
    world.apply(agency("police"), incident("incident.handling"))
    [refusal] = world.apply(agency("police"), incident("incident.feedback"))
    assert "needs one of: lead" in refusal.reason
    assert world.apply(agency("fire"), incident("incident.feedback")) == []


def test_duplicate_reports_are_merged_and_the_merged_one_takes_no_further_step() -> None:
    world = World()
    assert world.apply(agency("fire"), incident("incident.reported", "INC-A")) == []
    assert world.apply(agency("police"), incident("incident.reported", "INC-B")) == []
    assert world.apply(COMMAND, incident("incident.verified", "INC-A")) == []
    merge = incident("incident.merged", "INC-B", merged_into="INC-A")
    assert world.apply(COMMAND, merge) == []
    merged = world.state("lifecycle.incident.actual.INC-B")
    assert merged is not None and (merged.state, merged.merged_into) == ("merged", "INC-A")
    [refusal] = world.apply(agency("police"), incident("incident.updated", "INC-B"))
    assert refusal.current_state == "merged" and refusal.allowed == ()
    assert _state(world, "lifecycle.incident.actual.INC-A") == "verified"


def test_an_incident_is_not_merged_into_itself() -> None:
    world = World()
    world.apply(agency("fire"), incident("incident.reported", "INC-A"))
    [refusal] = world.apply(COMMAND, incident("incident.merged", "INC-A", merged_into="INC-A"))
    assert "merged into itself" in refusal.reason


def test_a_merge_into_an_incident_never_reported_is_refused_naming_the_survivor() -> None:
    world = World()
    world.apply(agency("police"), incident("incident.reported", "INC-B"))
    merge = incident("incident.merged", "INC-B", merged_into="INC-GHOST")
    [refusal] = world.apply(COMMAND, merge)
    assert refusal.aggregate == AggregateRef("incident", "actual", "INC-GHOST")
    assert (refusal.current_state, refusal.version) == (NONE, 0)
    assert "incident.reported → reported" in refusal.allowed
    assert "must have been reported" in refusal.reason
    assert _state(world, "lifecycle.incident.actual.INC-B") == "reported"


def test_a_merge_into_an_incident_merged_away_itself_is_refused() -> None:
    world = World()
    for incident_id in ("INC-A", "INC-B", "INC-C"):
        world.apply(agency("police"), incident("incident.reported", incident_id))
    assert world.apply(COMMAND, incident("incident.merged", "INC-B", merged_into="INC-A")) == []
    [refusal] = world.apply(COMMAND, incident("incident.merged", "INC-C", merged_into="INC-B"))
    assert (refusal.aggregate.key, refusal.current_state, refusal.version) == ("INC-B", "merged", 2)
    assert _state(world, "lifecycle.incident.actual.INC-C") == "reported"


def test_a_merge_reads_the_survivor_on_its_own_plane() -> None:
    world = World()
    world.apply(agency("police"), incident("incident.reported", "INC-A"))
    exercise = event_pb2.PLANE_EXERCISE
    world.apply(agency("police"), incident("incident.reported", "INC-B", plane=exercise))
    merge = incident("incident.merged", "INC-B", merged_into="INC-A", plane=exercise)
    [refusal] = world.apply(COMMAND, merge)
    assert refusal.aggregate == AggregateRef("incident", "exercise", "INC-A")


def test_a_closed_incident_is_reopened_and_assigned_again() -> None:
    world = World()
    world.apply(agency("police"), incident("incident.reported"))
    assert world.apply(agency("police"), incident("incident.closed")) == []
    assert world.apply(COMMAND, incident("incident.reopened")) == []
    assert _state(world, INC) == "verified"


def test_the_emergency_phase_moves_forward_only() -> None:
    world, key = World(), "lifecycle.emergency_phase.actual.INC-1"
    assert world.apply(COMMAND, incident("incident.phase_monitoring")) == []
    assert world.apply(COMMAND, incident("incident.phase_response")) == []
    [refusal] = world.apply(COMMAND, incident("incident.phase_monitoring"))
    assert refusal.current_state == "response_rescue"
    assert world.apply(COMMAND, incident("incident.phase_recovery")) == []
    assert _state(world, key) == "recovery_reconstruction"
    assert _state(world, INC) == NONE  # the phase is an aggregate of its own


def test_an_exercise_incident_is_an_aggregate_apart_from_the_actual_one() -> None:
    world = World()
    world.apply(agency("fire"), incident("incident.reported"))
    drill = incident("incident.reported", plane=event_pb2.PLANE_EXERCISE)
    assert world.apply(agency("fire"), drill) == []
    assert _state(world, "lifecycle.incident.exercise.INC-1") == "reported"
    assert world.apply(agency("fire"), incident("incident.reported")) != []


# --- joint-enforcement tasks -----------------------------------------------------------------


def _assigned_task(world: World) -> None:
    assert world.apply(agency("police"), task("task.opened")) == []
    assigned = task("task.assigned", owner="housing", supervisor="emergency", deadline=T0 + days(7))
    assert world.apply(SUPERVISOR, assigned) == []


def test_a_task_is_rectified_rechecked_by_another_agency_and_closed() -> None:
    world = World()
    _assigned_task(world)
    assert world.apply(agency("housing"), task("task.progress")) == []
    assert world.apply(agency("housing"), task("task.rectified")) == []
    [refusal] = world.apply(
        agency("housing"), task("task.rechecked", recheck=(RECHECK_PASSED, "housing"))
    )
    assert "as assigned, handler" in refusal.reason
    recheck = task("task.rechecked", recheck=(RECHECK_PASSED, "ecology"))
    assert world.apply(agency("ecology"), recheck) == []
    assert world.apply(agency("emergency"), task("task.closed")) == []
    assert _state(world, "lifecycle.task.actual.T-1") == "closed"


def test_a_failed_recheck_raises_accountability_by_the_supervising_agency() -> None:
    world = World()
    _assigned_task(world)
    world.apply(agency("housing"), task("task.rectified"))
    world.apply(agency("ecology"), task("task.rechecked", recheck=(RECHECK_FAILED, "ecology")))
    assert _state(world, "lifecycle.task.actual.T-1") == "recheck_failed"
    # "emergency" is the task's supervising agency, with no standing role needed.
    assert world.apply(agency("emergency"), task("task.accountability")) == []
    assert _state(world, "lifecycle.task.actual.T-1") == "accountable"


def test_a_recheck_must_be_published_by_the_agency_it_names() -> None:
    world = World()
    _assigned_task(world)
    world.apply(agency("housing"), task("task.rectified"))
    [refusal] = world.apply(
        agency("ecology"), task("task.rechecked", recheck=(RECHECK_PASSED, "transport"))
    )
    assert "names agency 'transport'" in refusal.reason


def test_a_task_is_overdue_only_after_its_deadline() -> None:
    world = World()
    _assigned_task(world)
    [refusal] = world.apply(SUPERVISOR, task("task.overdue"), now=T0 + days(6))
    assert "has not passed" in refusal.reason
    assert world.apply(SUPERVISOR, task("task.overdue"), now=T0 + days(8)) == []


# --- resource lines (EDXL-RM) ----------------------------------------------------------------


def test_a_resource_line_goes_from_request_to_release() -> None:
    world, health, emergency = World(), agency("health"), agency("emergency")
    line = "lifecycle.resource_line.actual.RM-1/1"
    steps = [
        (health, "resource.request", "requested"),
        (emergency, "resource.response", "offered"),
        (health, "resource.requisition", "requisitioned"),
        (emergency, "resource.commit", "committed"),
        (emergency, "resource.status_report", "deployed"),
        (emergency, "resource.status_report", "deployed"),
        (health, "resource.request_extension", "extension_requested"),
        (emergency, "resource.extension_response", "deployed"),
        (emergency, "resource.request_return", "return_requested"),
        (health, "resource.return_response", "return_requested"),
        (health, "resource.release", "released"),
    ]
    for actor, event_type, expected in steps:
        assert world.apply(actor, resource(event_type)) == [], event_type
        assert _state(world, line) == expected, event_type


def test_a_declined_line_ends_while_an_accepted_one_goes_on() -> None:
    world = World()
    world.apply(agency("health"), resource("resource.request", [("1", 0), ("2", 0)]))
    answer = resource("resource.response", [("1", ACCEPT), ("2", DECLINE)])
    assert world.apply(agency("emergency"), answer) == []
    assert _state(world, "lifecycle.resource_line.actual.RM-1/1") == "offered"
    assert _state(world, "lifecycle.resource_line.actual.RM-1/2") == "declined"
    [refusal] = world.apply(agency("emergency"), resource("resource.commit", [("2", ACCEPT)]))
    assert refusal.current_state == "declined"


def test_a_line_is_not_committed_twice_and_a_requester_does_not_answer_itself() -> None:
    world = World()
    world.apply(agency("health"), resource("resource.request"))
    [own] = world.apply(agency("health"), resource("resource.response"))
    assert "as reporter" in own.reason
    assert world.apply(agency("emergency"), resource("resource.commit")) == []
    [again] = world.apply(agency("fire"), resource("resource.commit"))
    assert again.current_state == "committed"


def test_a_line_is_recalled_at_any_point_before_it_ends_and_only_by_a_party() -> None:
    world = World()
    world.apply(agency("health"), resource("resource.request"))
    world.apply(agency("emergency"), resource("resource.commit"))
    [outsider] = world.apply(agency("transport"), resource("resource.recall"))
    assert "needs one of: any_party" in outsider.reason
    assert world.apply(agency("health"), resource("resource.recall")) == []
    assert world.apply(agency("health"), resource("resource.release")) != []


def test_a_message_with_a_refused_line_moves_none_of_its_lines() -> None:
    world = World()
    world.apply(agency("health"), resource("resource.request", [("1", 0)]))
    both = resource("resource.commit", [("1", ACCEPT), ("2", ACCEPT)])
    assert world.apply(agency("emergency"), both) != []
    assert _state(world, "lifecycle.resource_line.actual.RM-1/1") == "requested"


# --- CAP warnings ----------------------------------------------------------------------------

W = "lifecycle.warning.actual.weather=40sh=2Egov=2Ecn=2C"


def test_an_alert_is_updated_then_cancelled_and_a_cancelled_one_is_not_updated() -> None:
    world, weather = World(), agency("weather")
    assert world.apply(weather, warning("warning.alert", "A1", expires=T0 + days(1))) == []
    assert world.apply(weather, warning("warning.update", "U1", references=["A1"])) == []
    assert (_state(world, W + "A1"), _state(world, W + "U1")) == ("superseded", "active")
    assert world.apply(weather, warning("warning.cancel", "C1", references=["U1"])) == []
    assert _state(world, W + "U1") == "cancelled"
    [refusal] = world.apply(weather, warning("warning.update", "U2", references=["U1"]))
    assert refusal.current_state == "cancelled"
    assert _state(world, W + "U2") == NONE


def test_an_expired_warning_is_not_updated() -> None:
    world, weather = World(), agency("weather")
    world.apply(weather, warning("warning.alert", "A1", expires=T0 + days(1)))
    update = warning("warning.update", "U1", references=["A1"])
    [refusal] = world.apply(weather, update, now=T0 + days(2))
    assert refusal.current_state == "expired"
    assert world.apply(weather, update, now=T0 + days(0.5)) == []


def test_an_update_of_another_senders_warning_is_refused() -> None:
    world, weather = World(), agency("weather")
    world.apply(weather, warning("warning.alert", "A1", sender="other@sh.gov.cn"))
    foreign = warning("warning.update", "U1", references=["other@sh.gov.cn,A1"])
    [refusal] = world.apply(weather, foreign)
    assert "another sender" in refusal.reason


def test_only_the_agency_that_issued_a_warning_updates_it() -> None:
    world = World()
    world.apply(agency("weather"), warning("warning.alert", "A1"))
    [refusal] = world.apply(agency("ecology"), warning("warning.update", "U1", references=["A1"]))
    assert "needs one of: reporter" in refusal.reason


def test_an_update_of_an_unknown_warning_is_refused() -> None:
    [refusal] = World().apply(agency("weather"), warning("warning.update", "U1", references=["X"]))
    assert refusal.current_state == NONE


def test_informational_and_unknown_types_touch_no_aggregate() -> None:
    ack = event_pb2.Event(type="warning.ack")
    assert aggregate_refs(ack, CATALOGUE) == []
    assert aggregate_refs(event_pb2.Event(type="incident.teleported"), CATALOGUE) == []


def test_state_survives_a_round_trip_through_bytes() -> None:
    world = World()
    world.apply(agency("police"), task("task.opened"))
    world.apply(SUPERVISOR, task("task.assigned", owner="housing", deadline=T0 + days(1)))
    state = world.state("lifecycle.task.actual.T-1")
    assert state is not None
    assert AggregateState.from_bytes(state.to_bytes()) == state


# --- properties ------------------------------------------------------------------------------

ACTORS = [agency(a) for a in ("fire", "police", "housing", "ecology", "weather")]
ACTORS += [COMMAND, SUPERVISOR]
IDS = ["A1", "A2", "U1", "U2", "U3"]


LIFECYCLE_TYPES = [t.type for t in CATALOGUE.types if t.lifecycle]
# The aggregate a guided walk follows in each lifecycle.
WALKED = {
    "incident": "lifecycle.incident.actual.INC-1",
    "emergency_phase": "lifecycle.emergency_phase.actual.INC-1",
    "task": "lifecycle.task.actual.T-1",
    "resource_line": "lifecycle.resource_line.actual.RM-1/1",
    "warning": W + "A1",
}


@st.composite
def messages(
    draw: st.DrawFn, world: World | None = None
) -> tuple[Actor, event_pb2.Event, datetime]:
    """One message of any lifecycle type, about a small set of aggregates so that sequences
    meet the same aggregates often. Given a `world`, mostly a type its followed aggregate
    allows next, by one of the aggregate's parties: a walk that gets deep into each loop."""
    event_type = draw(st.sampled_from(LIFECYCLE_TYPES))
    actor = draw(st.sampled_from(ACTORS))
    guided = world is not None and draw(st.integers(0, 9)) < 8
    if world is not None and guided:
        lifecycle = draw(st.sampled_from(sorted(WALKED)))
        held = world.state(WALKED[lifecycle])
        state = held.state if held else NONE
        fitting = [
            t.type
            for t in CATALOGUE.types_of(lifecycle=lifecycle)
            if t.transition is not None and t.transition.accepts(state)
        ]
        if fitting:
            event_type = draw(st.sampled_from(fitting))
        if held is not None:
            pool = {held.opened_by, held.lead, held.supervisor, *held.assigned} - {""}
            actor = draw(st.sampled_from([*map(agency, sorted(pool)), COMMAND, SUPERVISOR, actor]))
    now = T0 + days(draw(st.integers(0, 10)))
    family = event_type.partition(".")[0]
    if family == "incident":
        event = incident(
            event_type,
            "INC-1" if guided else draw(st.sampled_from(["INC-1", "INC-2"])),
            lead=draw(st.sampled_from(["fire", "police"] if guided else ["", "fire", "police"])),
            involved=draw(st.lists(st.sampled_from(["fire", "housing"]), max_size=2, unique=True)),
            merged_into=draw(st.sampled_from(["", "INC-1", "INC-2"])),
        )
    elif family == "task":
        event = task(
            event_type,
            owner=draw(st.sampled_from(["", "housing", "fire"])),
            supervisor=draw(st.sampled_from(["", "emergency"])),
            deadline=T0 + days(draw(st.integers(1, 9))),
            recheck=(draw(st.sampled_from([RECHECK_PASSED, RECHECK_FAILED])), actor.agency),
        )
    elif family == "resource":
        lines = draw(
            st.lists(
                st.tuples(st.sampled_from(["1", "2"]), st.sampled_from([ACCEPT, DECLINE])),
                min_size=1,
                max_size=2,
                unique_by=lambda line: line[0],
            )
        )
        event = resource(event_type, lines)
    else:
        references = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=2, unique=True))
        event = warning(
            event_type,
            "A1" if guided and event_type == "warning.alert" else draw(st.sampled_from(IDS)),
            references=references,
            expires=T0 + days(draw(st.integers(1, 10))),
        )
    return actor, event, now


def _is_declared(event_type: str, before: str, after: str, ref: AggregateRef) -> bool:
    """The move before → after is one the catalogue declares for the type (its outcome
    included), or the opening of the type's own aggregate."""
    entry = CATALOGUE.get(event_type)
    assert entry is not None and entry.transition is not None
    transition = entry.transition
    if ref.opens:
        return before == NONE and after == transition.opens
    return transition.accepts(before) and after == transition.target(before, ref.outcome)


@settings(max_examples=150, deadline=None)
@given(st.lists(messages(), max_size=30))
def test_every_accepted_sequence_is_a_path_of_the_declared_machines(
    sequence: list[tuple[Actor, event_pb2.Event, datetime]],
) -> None:
    world = World()
    for actor, event, now in sequence:
        before, logged = dict(world.states), len(world.log)
        refusals = world.apply(actor, event, now)
        if refusals:
            assert world.states == before  # a refused message changes nothing
            for refusal in refusals:
                held = before.get(refusal.aggregate.kv_key)
                assert refusal.version == (held.version if held else 0)
        for _, _, old, _ in world.log[logged:]:
            assert old is None or old.expires is None or now < old.expires  # nothing expired moves
    last: dict[str, AggregateState] = {}
    for event_type, ref, old, new in world.log:
        assert old == last.get(ref.kv_key)  # each move starts where the previous one ended
        assert new.version == (old.version if old else 0) + 1
        before_state = old.state if old else NONE
        assert _is_declared(event_type, before_state, new.state, ref), (event_type, before_state)
        last[ref.kv_key] = new


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_guided_walks_go_deep_and_stay_on_the_declared_paths(data: st.DataObject) -> None:
    world = World()
    for _ in range(40):
        actor, event, now = data.draw(messages(world))
        before = dict(world.states)
        if world.apply(actor, event, now):
            assert world.states == before
    for event_type, ref, old, new in world.log:
        before_state = old.state if old else NONE
        assert _is_declared(event_type, before_state, new.state, ref), (event_type, before_state)
        assert new.version == (old.version if old else 0) + 1


@settings(max_examples=100, deadline=None)
@given(st.lists(messages(), min_size=2, max_size=30), st.lists(st.booleans(), min_size=30))
def test_two_replicas_never_both_move_an_aggregate_from_one_version(
    sequence: list[tuple[Actor, event_pb2.Event, datetime]], stale: list[bool]
) -> None:
    """Replicas decide on what they read and write with compare-and-set on the version: a
    decision made on a version that moved on is never written, so every aggregate's history
    is one chain of versions."""
    store: dict[str, AggregateState] = {}
    snapshot: dict[str, AggregateState] = {}
    history: dict[str, list[int]] = {}
    for (actor, event, now), use_stale in zip(sequence, stale, strict=False):
        view = snapshot if use_stale else store
        verdicts = [
            (ref, decide(CATALOGUE, ref, view.get(ref.kv_key), actor, event, now))
            for ref in aggregate_refs(event, CATALOGUE)
        ]
        if not verdicts or not all(isinstance(v, Accepted) for _, v in verdicts):
            continue
        read = {ref.kv_key: view.get(ref.kv_key) for ref, _ in verdicts}
        if any(store.get(key) != state for key, state in read.items()):
            continue  # compare-and-set fails: the version read is gone
        snapshot = dict(store)
        for ref, verdict in verdicts:
            assert isinstance(verdict, Accepted)
            store[ref.kv_key] = verdict.new_state
            history.setdefault(ref.kv_key, []).append(verdict.new_state.version)
    for versions in history.values():
        assert versions == list(range(1, len(versions) + 1))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["housing", "fire"]), st.sampled_from(["housing", "fire", "ecology"]))
def test_a_recheck_is_refused_exactly_when_the_rechecking_agency_handled_the_task(
    owner: str, checker: str
) -> None:
    world = World()
    world.apply(agency("police"), task("task.opened"))
    world.apply(COMMAND, task("task.assigned", owner=owner, deadline=T0 + days(3)))
    assert world.apply(agency(owner), task("task.rectified")) == []
    refusals = world.apply(
        agency(checker), task("task.rechecked", recheck=(RECHECK_PASSED, checker))
    )
    assert bool(refusals) == (checker == owner)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 48), st.integers(0, 72), st.booleans())
def test_an_update_is_accepted_only_for_a_live_warning(
    lifetime_hours: int, at_hours: int, cancelled: bool
) -> None:
    world, weather = World(), agency("weather")
    hours = days(1 / 24)
    world.apply(weather, warning("warning.alert", "A1", expires=T0 + lifetime_hours * hours))
    if cancelled:
        world.apply(weather, warning("warning.cancel", "C1", references=["A1"]))
    refusals = world.apply(
        weather, warning("warning.update", "U1", references=["A1"]), now=T0 + at_hours * hours
    )
    live = not cancelled and at_hours < lifetime_hours
    assert (refusals == []) == live


def test_decide_on_a_state_returns_a_new_state_and_leaves_the_old_one() -> None:
    world = World()
    world.apply(agency("fire"), incident("incident.reported"))
    state = world.state(INC)
    verdict = decide(CATALOGUE, AggregateRef("incident", "actual", "INC-1"), state, COMMAND,
                     incident("incident.verified"), T0)  # fmt: skip
    assert isinstance(verdict, Accepted) and verdict.new_state.version == 2
    assert state is not None and (state.state, state.version) == ("reported", 1)
    refused = decide(CATALOGUE, AggregateRef("incident", "actual", "INC-1"), state, COMMAND,
                     incident("incident.feedback"), T0)  # fmt: skip
    assert isinstance(refused, IllegalTransition)
