"""What the duty board puts on the console's map (gateway.core.projections.board_map), pure: the
scene's point and the areas of the warnings in force, only as far as the viewer's policy lets it
see them."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2
from gateway.access.authorization import Authorizer, GrantBook, PolicyHolder
from gateway.core.projections.board import IncidentKey, IncidentView, Visible, incident_view
from gateway.core.projections.board_wire import board_incident
from tests.test_board import CATALOGUE, NOW, as_agency, everything, folded, stored_story

# Transport closes roads around the warning areas; in this policy it is kept from the scene.
WITHHOLD_SCENE = """
  - id: scene-withheld-from-transport
    description: A test redaction - the incident's location.
    fields: [incident.location]
    for_agencies: [transport]
"""


def authorizer_for(directory: Path, extra_redactions: str = "") -> Authorizer:
    shutil.copytree(SAMPLE_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    rules = directory / "rules.yaml"
    text = rules.read_text(encoding="utf-8")
    assert "\nredactions:\n" in text
    rules.write_text(text.replace("\nredactions:\n", "\nredactions:\n" + extra_redactions, 1))
    return Authorizer(PolicyHolder(directory), GrantBook())


def demo_view(visible: Visible = everything, now: datetime = NOW) -> IncidentView:
    events = stored_story()
    key = IncidentKey(event_pb2.PLANE_EXERCISE, events[0].incident.incident_id)
    view = incident_view(CATALOGUE, folded(events), key, visible, now)
    assert view is not None
    return view


def test_the_scene_is_the_point_of_the_incident_report() -> None:
    view = demo_view()
    report = next(e.event for e in view.timeline if e.event.type == "incident.reported")
    assert view.location == report.incident.location.point
    assert view.location is not None and view.location.latitude != 0


def test_the_areas_shown_are_those_of_the_warnings_in_force_not_a_cancelled_one() -> None:
    view = demo_view()
    warnings = {line.key: line.state for line in view.lines if line.lifecycle == "warning"}
    in_force = {key for key, state in warnings.items() if state == "active"}
    assert in_force and in_force != set(warnings)  # the demo cancels its air-quality warning
    assert {area.warning for area in view.warning_areas} == in_force
    assert all(area.polygons or area.circles for area in view.warning_areas)
    assert all(area.area_desc and area.headline for area in view.warning_areas)


def test_a_warning_past_its_expiry_is_no_longer_drawn() -> None:
    assert demo_view(now=NOW + timedelta(days=2)).warning_areas == ()


def test_an_update_replaces_the_areas_of_the_warning_it_supersedes() -> None:
    events = stored_story()
    alert = next(e for e in events if e.type == "warning.alert" and e.warning.infos[0].areas)
    update = event_pb2.Event()
    update.CopyFrom(alert)
    update.id, update.type = "update-1", "warning.update"
    update.warning.identifier = alert.warning.identifier + "-U"
    update.warning.msg_type = 2  # CAP Update
    update.warning.references.add(sender=alert.warning.sender, identifier=alert.warning.identifier)
    update.warning.infos[0].areas[0].area_desc = "Widened area"
    update.received_time.FromDatetime(NOW + timedelta(hours=1))
    board = folded([*events, update])
    key = IncidentKey(event_pb2.PLANE_EXERCISE, events[0].incident.incident_id)
    view = incident_view(CATALOGUE, board, key, everything, NOW + timedelta(hours=1))
    assert view is not None
    senders = [area for area in view.warning_areas if area.warning.startswith(alert.warning.sender)]
    assert [area.area_desc for area in senders] == ["Widened area"]


def test_a_policy_that_withholds_the_location_keeps_the_scene_off_that_agencys_map(
    tmp_path: Path,
) -> None:
    sample = authorizer_for(tmp_path / "sample")
    withholding = authorizer_for(tmp_path / "withholding", WITHHOLD_SCENE)
    assert demo_view(as_agency(sample, "transport")).location is not None
    withheld = demo_view(as_agency(withholding, "transport"))
    assert withheld.location is None
    assert withheld.timeline  # it still sees the incident, only not where it is
    assert demo_view(as_agency(withholding, "fire")).location is not None


def test_a_policy_that_withholds_warning_areas_keeps_them_off_the_map(tmp_path: Path) -> None:
    withhold_areas = (
        WITHHOLD_SCENE.replace("incident.location", "warning.infos.areas")
        .replace("scene-withheld-from-transport", "areas-withheld-from-police")
        .replace("[transport]", "[police]")
    )
    sample = authorizer_for(tmp_path / "sample")
    withholding = authorizer_for(tmp_path / "withholding", withhold_areas)
    assert demo_view(as_agency(sample, "police")).warning_areas != ()
    police = demo_view(as_agency(withholding, "police"))
    assert police.warning_areas == ()
    assert police.location is not None
    assert demo_view(as_agency(withholding, "fire")).warning_areas != ()


def test_the_wire_carries_the_point_and_the_areas() -> None:
    view = demo_view()
    wire = board_incident(view, NOW, with_timeline=False)
    assert wire.location == view.location
    assert [area.warning for area in wire.warning_areas] == [
        area.warning for area in view.warning_areas
    ]
    circle = next(area for area in wire.warning_areas if area.circles).circles[0]
    assert circle.radius_km > 0
