"""Declarative JSON mappings: configured per department, errors named by field."""

from __future__ import annotations

import json

import pytest

from dutylink.adapters.mapping import JsonMapping, MappingError, event_to_json
from dutylink.adapters.records import Record, Rejected
from dutylink.v1 import event_pb2, incident_pb2

OPTIONS = {
    "system": "cad110",
    "id": "incident_no",
    "type_from": "status",
    "types": {"NEW": "incident.reported", "TEST": ""},
    "time": "call_time",
    "fields": {
        "incident.incident_id": "incident_no",
        "incident.title": "summary",
        "incident.location.address": "place.address",
        "incident.severity": "level",
        "incident.involved_agencies": "agencies",
        "incident.reported_at": "call_time",
    },
    "constants": {
        "classification": "INTERNAL",
        "plane": "ACTUAL",
        "jurisdiction.division_code": "310115",
    },
    "values": {"incident.severity": {"1": "MINOR", "2": "MAJOR"}},
}


def record(**fields: object) -> Record:
    document = {
        "incident_no": "CAD-2026-000123", "status": "NEW", "call_time": "2026-08-15T14:02:00+08:00",
        "summary": "Fire at a solvent store", "place": {"address": "88 Huagong Rd"}, "level": "2",
        "agencies": "fire,police",
    }  # fmt: skip
    document.update(fields)
    return Record("calls.jsonl:1", json.dumps(document).encode(), "calls.jsonl:1")


def test_a_record_becomes_an_event_named_after_its_own_id() -> None:
    (event,) = JsonMapping.from_options(OPTIONS).to_events(record())
    assert event.id == "cad110:CAD-2026-000123" and event.type == "incident.reported"
    assert event.incident.severity == incident_pb2.INCIDENT_SEVERITY_MAJOR
    assert event.incident.location.address == "88 Huagong Rd"
    assert list(event.incident.involved_agencies) == ["fire", "police"]
    assert event.classification == event_pb2.CLASSIFICATION_INTERNAL
    assert event.time.ToJsonString() == "2026-08-15T06:02:00Z"
    assert event.subject == "CAD-2026-000123"
    assert JsonMapping.from_options(OPTIONS).to_events(record(status="TEST")) == []


def test_bad_values_are_rejected_naming_every_field() -> None:
    mapping = JsonMapping.from_options(OPTIONS)
    with pytest.raises(Rejected) as rejected:
        mapping.to_events(record(level="9", call_time="yesterday"))
    assert "incident.severity ('level'): '9' is not one of 1, 2" in str(rejected.value)
    assert "time ('call_time')" in str(rejected.value)
    with pytest.raises(Rejected, match="no record id at 'incident_no'"):
        mapping.to_events(record(incident_no=""))
    with pytest.raises(Rejected, match="not JSON"):
        mapping.to_events(Record("x", b"{oops", "x"))


def test_a_wrong_mapping_is_refused_at_start_naming_the_key() -> None:
    with pytest.raises(MappingError, match="Incident has no field 'titel'"):
        JsonMapping.from_options({**OPTIONS, "fields": {"incident.titel": "summary"}})
    with pytest.raises(MappingError, match="give exactly one of 'type' or 'type_from'"):
        JsonMapping.from_options({**OPTIONS, "type": "incident.reported"})


def test_outbound_json_is_the_whole_event_or_the_chosen_fields() -> None:
    (event,) = JsonMapping.from_options(OPTIONS).to_events(record())
    whole = json.loads(event_to_json(event))
    assert whole["incident"]["severity"] == "INCIDENT_SEVERITY_MAJOR"
    chosen = json.loads(event_to_json(event, {"no": "incident.incident_id", "where": "incident.location.address", "absent": "incident.reporter.phone"}))  # fmt: skip
    assert chosen == {"no": "CAD-2026-000123", "where": "88 Huagong Rd"}
