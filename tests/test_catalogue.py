"""The event-type catalogue (dutylink.catalogue): the shipped data parses, covers every type the
examples, adapters, demo and tests publish, and agrees with the schemas; broken text is refused
with an error naming the entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from google.protobuf import json_format

from dutylink.adapters.edxl.mapping import RM_EVENT_TYPES
from dutylink.catalogue import (
    NONE,
    CatalogueError,
    field_is_set,
    load_catalogue,
    parse_catalogue,
)
from dutylink.policies.model import FAMILIES
from dutylink.v1 import acknowledgement_pb2, event_pb2, gateway_pb2
from gateway.core.workflows.notices import GATEWAY_TYPES

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "proto" / "examples").glob("*.json"))
CATALOGUE = load_catalogue()

# The types published today by the adapters, the demo, the test kit and the tests.
PUBLISHED_TODAY = (
    "incident.reported",
    "incident.status_changed",
    "incident.updated",
    "incident.closed",
    *RM_EVENT_TYPES.values(),
    "resource.message",
    "warning.alert",
    "warning.update",
    "warning.cancel",
    "warning.ack",
    "warning.error",
)

MINIMAL = """
version = 1
[lifecycles.thing]
description = "A thing."
key = "incident.incident_id"
states = ["open", "done"]
initial = ["open"]
terminal = ["done"]
"""


def _with_type(body: str) -> str:
    return MINIMAL + "\n[[types]]\n" + body


GOOD_TYPE = """
type = "incident.opened"
family = "incident"
description = "Opened."
lifecycle = "thing"
from = ["none"]
to = "open"
roles = ["any"]
required = ["incident.incident_id"]
"""


def test_the_shipped_catalogue_parses_and_names_five_lifecycles() -> None:
    assert [lc.name for lc in CATALOGUE.lifecycles] == [
        "incident",
        "emergency_phase",
        "task",
        "resource_line",
        "warning",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_type_is_catalogued_and_carries_its_required_fields(path: Path) -> None:
    request = json_format.Parse(path.read_text(encoding="utf-8"), gateway_pb2.PublishRequest())
    entry = CATALOGUE.get(request.event.type)
    assert entry is not None, f"{path.name}: type {request.event.type} is not catalogued"
    assert entry.missing_fields(request.event) == []


@pytest.mark.parametrize("name", PUBLISHED_TODAY)
def test_every_type_published_today_is_catalogued(name: str) -> None:
    assert CATALOGUE.get(name) is not None


def test_every_type_quoted_in_the_adapters_and_the_demo_is_catalogued() -> None:
    quoted = re.compile(r"""["']((?:incident|resource|warning|task)\.[a-z][a-z0-9_]*)["']""")
    sources = [*(REPO / "adapters").rglob("*.py"), *(REPO / "gateway" / "cli").glob("demo*.py")]
    sources += list((REPO / "adapters").rglob("*.toml"))
    names = {m for path in sources for m in quoted.findall(path.read_text(encoding="utf-8"))}
    types = {name for name in names if not _is_field_path(name)}
    assert types, "the scan found no types"
    assert sorted(t for t in types if CATALOGUE.get(t) is None) == []


def _is_field_path(name: str) -> bool:
    family, _, rest = name.partition(".")
    fields = event_pb2.Event.DESCRIPTOR.fields_by_name[family].message_type.fields_by_name
    return rest.split(".")[0] in fields


def test_every_family_of_the_schema_has_catalogued_types() -> None:
    assert set(CATALOGUE.families()) <= set(FAMILIES)
    assert {"incident", "resource", "warning", "task"} <= set(CATALOGUE.families())


def test_every_lifecycle_type_names_only_its_lifecycle_states() -> None:
    for entry in CATALOGUE.types:
        if entry.transition is None:
            continue
        states = CATALOGUE.lifecycle(entry.lifecycle or "").states
        for state in entry.transition.sources():
            assert state == NONE or state in states, entry.type


def test_as_row_gives_the_fields_the_cli_prints() -> None:
    row = CATALOGUE.get("task.rechecked").as_row()  # type: ignore[union-attr]
    assert row == {
        "type": "task.rechecked",
        "family": "task",
        "lifecycle": "task",
        "from_states": ["rectified"],
        "to_state": "rechecked",
        "roles": ["any"],
        "required_fields": ["task.task_id", "task.recheck.result", "task.recheck.agency"],
    }
    json.dumps(row)


def test_a_stays_type_lists_its_states_and_stays() -> None:
    row = CATALOGUE.get("incident.updated").as_row()  # type: ignore[union-attr]
    assert row["to_state"] == "stays"
    assert "handling" in row["from_states"]


def test_an_informational_type_has_no_lifecycle() -> None:
    entry = CATALOGUE.get("warning.ack")
    assert entry is not None and entry.lifecycle is None and entry.transition is None


def test_answers_and_escalations_move_no_lifecycle() -> None:
    for family in ("acknowledgement", "escalation"):
        entries = CATALOGUE.types_of(family=family)
        assert entries and all(e.lifecycle is None for e in entries)


def test_every_type_the_gateway_publishes_of_its_own_is_catalogued() -> None:
    assert {"escalation.raised", "escalation.resolved"} <= GATEWAY_TYPES
    assert all(CATALOGUE.get(name) is not None for name in GATEWAY_TYPES)


def test_a_declined_acknowledgement_must_carry_its_reason() -> None:
    event = event_pb2.Event(type="acknowledgement.declined")
    event.acknowledgement.event_id = "CAD-2026-000123"
    event.acknowledgement.event_source = "police"
    event.acknowledgement.decision = acknowledgement_pb2.ACKNOWLEDGEMENT_DECISION_DECLINED
    declined = CATALOGUE.get("acknowledgement.declined")
    acknowledged = CATALOGUE.get("acknowledgement.acknowledged")
    assert declined is not None and acknowledged is not None
    assert declined.missing_fields(event) == ["acknowledgement.reason"]
    assert acknowledged.missing_fields(event) == []


def test_missing_fields_names_the_empty_required_paths() -> None:
    event = event_pb2.Event(type="incident.assigned")
    event.incident.incident_id = "INC-1"
    assert CATALOGUE.get("incident.assigned").missing_fields(event) == [  # type: ignore[union-attr]
        "incident.lead_agency"
    ]


def test_field_is_set_looks_into_repeated_messages_and_oneofs() -> None:
    event = event_pb2.Event()
    assert not field_is_set(event, "resource.commit_resource.resource_infos")
    event.resource.commit_resource.resource_infos.add(resource_info_element_id="1")
    assert field_is_set(event, "resource.commit_resource.resource_infos")
    assert field_is_set(event, "resource.commit_resource.resource_infos.resource_info_element_id")
    assert not field_is_set(event, "task.origin_incident_id")
    event.task.origin_incident_id = "INC-1"
    assert field_is_set(event, "task.origin_incident_id")


def test_a_minimal_catalogue_parses() -> None:
    catalogue = parse_catalogue(_with_type(GOOD_TYPE))
    assert catalogue.get("incident.opened") is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('family = "incident"', 'family = "weather"'), "type 'incident.opened': family 'weather' is no field"),
        (('"incident.incident_id"]', '"incident.nope"]'), "type 'incident.opened': required field 'incident.nope' names no field"),
        (('"incident.incident_id"]', '"incident.title.x"]'), "type 'incident.opened': required field 'incident.title.x' goes below a scalar"),
        (('to = "open"', 'to = "shut"'), "type 'incident.opened': 'to' names unknown state 'shut'"),
        (('to = "open"', 'to = "done"'), "type 'incident.opened': opens an aggregate in 'done'"),
        (('roles = ["any"]', 'roles = ["mayor"]'), "type 'incident.opened': unknown role 'mayor'"),
        (('lifecycle = "thing"', 'lifecycle = "other"'), "type 'incident.opened': unknown lifecycle 'other'"),
        (('type = "incident.opened"', 'type = "resource.opened"'), "type 'resource.opened': a type is '<family>.<name>'"),
        (('roles = ["any"]', 'roles = ["any"]\ncolour = "red"'), "type 'incident.opened': unknown keys ['colour']"),
        (('description = "Opened."\n', ""), "type 'incident.opened': 'description' must be a non-empty string"),
    ],
)  # fmt: skip
def test_a_broken_type_is_refused_naming_the_entry(change: tuple[str, str], message: str) -> None:
    text = _with_type(GOOD_TYPE.replace(*change))
    with pytest.raises(CatalogueError, match=re.escape(message)):
        parse_catalogue(text)


def test_a_type_declared_twice_is_refused() -> None:
    text = _with_type(GOOD_TYPE) + "\n[[types]]\n" + GOOD_TYPE
    with pytest.raises(CatalogueError, match=r"type 'incident\.opened': declared twice"):
        parse_catalogue(text)


def test_a_lifecycle_with_an_unknown_initial_state_is_refused() -> None:
    text = MINIMAL.replace('initial = ["open"]', 'initial = ["new"]')
    with pytest.raises(
        CatalogueError, match=r"lifecycle 'thing': 'initial' names unknown state 'new'"
    ):
        parse_catalogue(text)


def test_a_transition_without_a_lifecycle_is_refused() -> None:
    text = _with_type(GOOD_TYPE.replace('lifecycle = "thing"\n', ""))
    with pytest.raises(
        CatalogueError, match=r"type 'incident.opened': \['from', 'to'\] need a 'lifecycle'"
    ):
        parse_catalogue(text)


def test_text_that_is_no_toml_is_refused() -> None:
    with pytest.raises(CatalogueError, match="not valid TOML"):
        parse_catalogue("version = ")
