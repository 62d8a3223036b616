"""The demo's script stays legal as the catalogue changes: replayed through the lifecycle
machine and the resource ledger (no gateway), as the gateway's guards judge it, every step is
accepted except the deliberate double booking, which the ledger refuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from dutylink.v1 import event_pb2
from gateway.cli.demo_scenario import RESERVE_AMBULANCES, Step, scenario, script
from gateway.core.workflows import Actor
from gateway.core.workflows.ledger import apply as fold_ledger
from gateway.core.workflows.ledger_state import Ledger
from tests.workflow_support import CATALOGUE, World

NOW = datetime(2026, 8, 15, 6, tzinfo=UTC)
# The catalogue roles the policy's standing roles give: the Joint Command Centre ("command")
# is the command centre; emergency management supervises.
STANDING_ROLES = {
    "command": frozenset({"command_centre"}),
    "emergency": frozenset({"supervisor"}),
}
LOOP = ["incident.reported", "incident.verified", "incident.assigned", "incident.handling",
        "incident.progress", "incident.feedback", "incident.published", "incident.rewarded",
        "incident.closed"]  # fmt: skip


@dataclass
class Exchange:
    """The gateway's stateful guards over one store: an event is stored only if the ledger and
    every lifecycle it touches accept it, and then both move."""

    world: World = field(default_factory=World)
    ledger: Ledger = field(default_factory=Ledger)

    def publish(self, step: Step, now: datetime = NOW) -> list[str]:
        """Why the gateway would refuse `step` (nothing: stored)."""
        stamped = event_pb2.Event()
        stamped.CopyFrom(step.event)
        stamped.source = step.agency
        applied = fold_ledger(self.ledger, stamped)
        if not applied.accepted:
            return [str(refusal) for refusal in applied.refusals]
        actor = Actor(step.agency, STANDING_ROLES.get(step.agency, frozenset()))
        refused = self.world.apply(actor, stamped, now)
        if refused:
            return [str(illegal) for illegal in refused]
        self.ledger = applied.ledger
        return []


def test_every_step_is_a_catalogued_type_carrying_the_fields_it_requires() -> None:
    for step in script(NOW):
        event_type = CATALOGUE.get(step.event.type)
        assert event_type is not None, step.event.type
        assert event_type.missing_fields(step.event) == [], step.narration


def test_every_step_is_accepted_except_the_double_booking_which_the_ledger_refuses() -> None:
    exchange = Exchange()
    steps = script(NOW)
    (double_booking,) = [s for s in steps if s.refused_by_design]
    assert double_booking.event.type == "resource.commit"
    for number, step in enumerate(steps):
        refusals = exchange.publish(step)
        if step.refused_by_design:
            assert len(refusals) == 1 and "commitment beyond what is available" in refusals[0]
            assert refusals[0].endswith("requested 2, available 0"), refusals
        else:
            assert refusals == [], f"step {number} ({step.agency} {step.event.type}): {refusals}"


def test_the_incident_goes_round_the_whole_public_report_loop_to_closed() -> None:
    exchange = Exchange()
    steps = script(NOW)
    for step in steps:
        exchange.publish(step)
    loop = [(kind, new.state) for kind, ref, _, new in exchange.world.log if ref.lifecycle == "incident"]  # fmt: skip
    assert [kind for kind, _ in loop] == LOOP
    assert loop[-1] == ("incident.closed", "closed")
    incident = steps[0].event.incident.incident_id
    (closed,) = [s for s in exchange.world.states.values() if s.key == incident]
    assert closed.opened_by == "fire" and closed.lead == "fire"
    assert set(closed.parties) == {"fire", "command", "police"}
    assert len({s.agency for s in steps}) >= 6, "several agencies take part"


def test_the_lines_and_the_warnings_end_where_the_story_leaves_them() -> None:
    exchange = Exchange()
    steps = script(NOW)
    for step in steps:
        exchange.publish(step)
    ends = {(s.lifecycle, s.key.rsplit("-", 1)[-1]): s.state for s in exchange.world.states.values()}  # fmt: skip
    assert ends[("resource_line", "0007/1")] == "released", "the medical centre's ambulances"
    assert ends[("resource_line", "0009/1")] == "requested", "the double booking moved nothing"
    warnings = sorted(s.state for s in exchange.world.states.values() if s.lifecycle == "warning")
    assert warnings == ["active", "active", "cancelled"]
    (reserve,) = exchange.ledger.items.values()
    assert reserve.key.agency == "emergency" and reserve.key.plane == event_pb2.PLANE_EXERCISE
    assert reserve.available == RESERVE_AMBULANCES, "released back to the reserve"


def test_the_demo_can_be_played_again_on_the_same_store() -> None:
    exchange = Exchange()
    for _ in range(2):
        for step in script(NOW):
            assert bool(exchange.publish(step)) == step.refused_by_design, step.narration
    assert len(exchange.ledger.items) == 2, "each playing declares a reserve of its own"


def test_the_scenario_others_start_from_is_the_script_without_the_double_booking() -> None:
    exchange = Exchange()
    steps = scenario(NOW)
    assert steps[0].event.type == "incident.reported"
    assert [s.event.type for s in steps] == [
        s.event.type for s in script(NOW) if not s.refused_by_design
    ]
    assert all(exchange.publish(step) == [] for step in steps)
