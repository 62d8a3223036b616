"""The dispatch feeds: golden tests of the pure 110 and 119/120 mappings over the sample files,
what each centre takes back, and one end-to-end run of each adapter against a real gateway."""

from __future__ import annotations

import contextlib
import copy
import json
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from pydantic import SecretStr

from dutylink.adapters.dispatch.adapter import CAD110, DISPATCH119
from dutylink.adapters.dispatch.cad110 import cad110_events, cad110_outbound
from dutylink.adapters.dispatch.dispatch119 import (
    REQUEST_TYPE,
    STATUS_REPORT_TYPE,
    Dispatch119Settings,
    dispatch119_events,
    dispatch119_outbound,
)
from dutylink.adapters.filedrop.adapter import split_utf8_json_lines
from dutylink.adapters.records import Record, Rejected
from dutylink.adapters.runner import AdapterConfig, AdapterConfigError, AdapterRunner
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.adapters.transports import split_csv
from dutylink.policies.engine import Evaluator
from dutylink.policies.loader import load_policy, policy_files
from dutylink.v1 import event_pb2, incident_pb2, resource_pb2
from gateway.core.validation import Validator
from gateway.server import Gateway
from tests.conftest import TOKENS
from tests.factories import incident_event, resource_request_event, warning_event
from tests.test_filedrop_adapter import drop, open_durable, read_events, reasons, running, until

SAMPLES = Path(__file__).parent.parent / "adapters" / "dispatch" / "samples"
CAD_FILE = "cad110-20261123.jsonl"
DISPATCH_FILE = "dispatch119-20261123.csv"
CAD_RECORDS = split_utf8_json_lines(CAD_FILE, (SAMPLES / CAD_FILE).read_bytes())
DISPATCH_RECORDS = split_csv(DISPATCH_FILE, (SAMPLES / DISPATCH_FILE).read_bytes())
REPORTS = Dispatch119Settings(deployment_reports=True)


def line(records: list[Record], number: int) -> Record:
    (found,) = [r for r in records if r.origin.endswith(f":{number}")]
    return found


def as_dict(event: event_pb2.Event) -> dict[str, Any]:
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def mapped(records: list[Record], mapping: Any) -> dict[str, list[event_pb2.Event]]:
    """origin -> events of every record the mapping accepts."""
    found = {}
    for record in records:
        with contextlib.suppress(Rejected):
            found[record.origin] = mapping(record)
    return found


# --- 110 CAD: golden ----------------------------------------------------------------------------


def test_a_new_cad_incident_becomes_incident_reported_with_the_caller_as_reporter() -> None:
    (event,) = cad110_events(line(CAD_RECORDS, 1))
    assert as_dict(event) == {
        "id": "cad110:110-310115-20261123-0042.new",
        "type": "incident.reported",
        "subject": "110-310115-20261123-0042",
        "time": "2026-11-23T06:02:48Z",
        "jurisdiction": {"division_code": "310115"},
        "classification": "CLASSIFICATION_RESTRICTED",
        "plane": "PLANE_ACTUAL",
        "priority": "PRIORITY_FLASH",
        "correlation_id": "110-310115-20261123-0042",
        "incident": {
            "incident_id": "110-310115-20261123-0042",
            "category": "INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS",
            "status": "INCIDENT_STATUS_REPORTED",
            "location": {
                "point": {"latitude": 31.2397, "longitude": 121.4998},
                "address": "浦东新区华夏路88号 化工园区溶剂仓库",
                "jurisdiction": {
                    "division_code": "310115",
                    "street_code": "005",
                    "grid_id": "PD-0312-07",
                },
            },
            "title": "化工园区溶剂仓库起火 伴有爆炸声",
            "description": "Caller at the neighbouring logistics yard: black smoke and two bangs "
            "from the solvent store; workers running out of the east gate.\n"
            "Hazards: toluene drums burning; explosions; toxic smoke drifting south-west",
            "reporter": {
                "name": "王磊",
                "phone": "13912345678",
                "channel": "REPORT_CHANNEL_HOTLINE_110",
                "position": {"latitude": 31.2412, "longitude": 121.5019},
            },
            "involved_agencies": ["police"],
            "reported_at": "2026-11-23T06:02:11Z",
        },
    }


def test_cad_transitions_map_to_types_statuses_and_stable_ids() -> None:
    events = {o: e for o, (e,) in mapped(CAD_RECORDS, cad110_events).items()}
    on_scene, update, closed = (events[f"{CAD_FILE}:{n}"] for n in (5, 14, 27))
    assert (on_scene.id, on_scene.type) == (
        "cad110:110-310115-20261123-0042.on_scene",
        "incident.status_changed",
    )
    assert on_scene.incident.status == incident_pb2.INCIDENT_STATUS_HANDLING
    assert on_scene.incident.casualties.trapped == 2
    assert list(on_scene.incident.involved_agencies) == ["police", "fire", "health"]
    assert "Police units: PD-JQ-101, PD-JQ-102" in on_scene.incident.description
    assert update.id == "cad110:110-310115-20261123-0042.on_scene.r1", "a numbered update"
    assert update.incident.casualties.evacuated == 420
    assert (closed.type, closed.incident.status) == (
        "incident.closed",
        incident_pb2.INCIDENT_STATUS_CLOSED,
    )
    crime = events[f"{CAD_FILE}:23"]
    assert crime.classification == event_pb2.CLASSIFICATION_CONFIDENTIAL, "crimes stay with police"
    assert crime.incident.category == incident_pb2.INCIDENT_CATEGORY_PUBLIC_ORDER
    assert len({e.id for e in events.values()}) == len(events) == 24, "one id per transition"
    again = {o: e for o, (e,) in mapped(CAD_RECORDS, cad110_events).items()}
    assert [e.id for e in again.values()] == [e.id for e in events.values()], "a replay: same ids"


def test_malformed_cad_lines_are_rejected_naming_line_and_field() -> None:
    rejected = {}
    for number in (6, 17, 21):
        with pytest.raises(Rejected) as verdict:
            cad110_events(line(CAD_RECORDS, number))
        rejected[number] = str(verdict.value)
    assert rejected[6] == (
        f"{CAD_FILE}:6: 'status': 'ARRIVED' is not one of NEW, DISPATCHED, ON_SCENE, CLOSED"
    )
    assert rejected[17] == (
        f"{CAD_FILE}:17: 'location.division': '31011' is not a 6-digit division code (GB/T 2260, e.g. 310115)"
    )
    assert rejected[21] == (
        f"{CAD_FILE}:21: not JSON: Unterminated string starting at: line 1 column 77 (char 76)"
    )


def test_the_110_centre_takes_fire_and_ambulance_incidents_and_every_warning() -> None:
    def sent_by(event: event_pb2.Event, source: str) -> event_pb2.Event:
        event.source = source
        return event

    fire, police = sent_by(incident_event(), "fire"), sent_by(incident_event(), "police")
    warning = sent_by(warning_event(), "weather")
    record = cad110_outbound(fire)
    assert record is not None and record.name == f"fire.{fire.id}.json"
    assert json.loads(record.body)["incident"]["incident_id"] == fire.incident.incident_id
    assert cad110_outbound(warning) is not None
    assert cad110_outbound(police) is None, "not its own incidents"
    assert cad110_outbound(sent_by(resource_request_event(), "health")) is None


# --- 119/120 dispatch: golden -------------------------------------------------------------------


def test_a_received_call_becomes_incident_reported() -> None:
    (event,) = dispatch119_events(line(DISPATCH_RECORDS, 2))
    assert as_dict(event) == {
        "id": "dispatch119:119-310115-20261123-0017.received",
        "type": "incident.reported",
        "subject": "119-310115-20261123-0017",
        "time": "2026-11-23T06:02:35Z",
        "jurisdiction": {"division_code": "310115"},
        "classification": "CLASSIFICATION_INTERNAL",
        "plane": "PLANE_ACTUAL",
        "priority": "PRIORITY_URGENT",
        "correlation_id": "119-310115-20261123-0017",
        "incident": {
            "incident_id": "119-310115-20261123-0017",
            "category": "INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS",
            "status": "INCIDENT_STATUS_REPORTED",
            "location": {
                "point": {"latitude": 31.2397, "longitude": 121.4998},
                "address": "浦东新区华夏路88号 化工园区溶剂仓库",
                "jurisdiction": {"division_code": "310115"},
            },
            "title": "化工园区溶剂仓库火灾",
            "description": "Solvent store on fire, explosions heard; 2 workers possibly trapped",
            "reporter": {"channel": "REPORT_CHANNEL_HOTLINE_119"},
            "reported_at": "2026-11-23T06:02:35Z",
        },
    }


def test_a_unit_status_becomes_an_incident_update_naming_the_unit() -> None:
    (dispatched,) = dispatch119_events(line(DISPATCH_RECORDS, 3))
    assert dispatched.id == "dispatch119:119-310115-20261123-0017.JQ-E1.dispatched"
    assert dispatched.type == "incident.status_changed"
    assert dispatched.incident.status == incident_pb2.INCIDENT_STATUS_ASSIGNED
    assert dispatched.incident.description == "fire engine JQ-E1 (金桥消防救援站): DISPATCHED"
    (transporting,) = dispatch119_events(line(DISPATCH_RECORDS, 21))
    assert transporting.incident.status == incident_pb2.INCIDENT_STATUS_HANDLING
    assert transporting.incident.description == (
        "ambulance PD-A07 (浦东急救中心 金桥分站): TRANSPORTING -> 东方医院 浦东院区. "
        "2 rescued workers, burns and smoke inhalation"
    )
    assert dispatch119_events(line(DISPATCH_RECORDS, 28)) == [], "a unit back home: no update"
    (medical,) = dispatch119_events(line(DISPATCH_RECORDS, 19))
    assert medical.incident.reporter.channel == incident_pb2.REPORT_CHANNEL_HOTLINE_120


def test_a_requested_row_becomes_an_edxl_rm_request_resource() -> None:
    (event,) = dispatch119_events(line(DISPATCH_RECORDS, 14))
    assert event.id == "dispatch119:119-310115-20261123-0017.requested.hazmat.20261123T061300Z"
    assert event.type == REQUEST_TYPE
    message = event.resource
    assert message.message_id == message.originating_message_id == event.id
    assert message.incident_id == "119-310115-20261123-0017"
    assert (message.contacts[0].agency, message.contacts[0].role) == (
        "fire",
        resource_pb2.CONTACT_ROLE_REQUESTER,
    )
    (wanted,) = message.request_resource.resource_infos
    assert (wanted.resource.kind, wanted.resource.type_info) == (
        resource_pb2.RESOURCE_KIND_VEHICLE,
        "hazmat unit",
    )
    assert (wanted.assignment.quantity.value, wanted.assignment.quantity.unit) == (2, "vehicles")
    assert message.request_resource.deliver_to.address == "浦东新区华夏路120号 化工园区东门 集结点"


def test_with_deployment_reports_a_unit_status_is_also_an_edxl_rm_status_report() -> None:
    update, report = dispatch119_events(line(DISPATCH_RECORDS, 21), REPORTS)
    assert update.type == "incident.status_changed" and report.type == STATUS_REPORT_TYPE
    (unit,) = report.resource.report_resource_deployment_status.resource_infos
    assert (unit.resource.resource_id, unit.resource.responsible_agency) == ("PD-A07", "health")
    assert unit.resource.status.deployment_status == resource_pb2.DEPLOYMENT_STATUS_ON_SCENE
    assert unit.schedules[0].location.address == "东方医院 浦东院区"
    (home,) = dispatch119_events(line(DISPATCH_RECORDS, 28), REPORTS)
    assert (
        home.resource.report_resource_deployment_status.resource_infos[
            0
        ].resource.status.deployment_status
        == resource_pb2.DEPLOYMENT_STATUS_RELEASED
    )


def test_the_resource_type_names_are_the_edxl_adapters() -> None:
    from dutylink.adapters.edxl.mapping import RM_EVENT_TYPES

    assert RM_EVENT_TYPES["request_resource"] == REQUEST_TYPE
    assert RM_EVENT_TYPES["report_resource_deployment_status"] == STATUS_REPORT_TYPE


def test_malformed_dispatch_rows_are_rejected_naming_line_and_column() -> None:
    rejected = {}
    for number in (17, 25, 30):
        with pytest.raises(Rejected) as verdict:
            dispatch119_events(line(DISPATCH_RECORDS, number))
        rejected[number] = str(verdict.value)
    assert rejected == {
        17: f"{DISPATCH_FILE}:17: 'unit_kind': 'drone' is not one of engine, ladder, hazmat, rescue, command, ambulance",
        25: f"{DISPATCH_FILE}:25: 'time': '2026-11-23 14:55:00' has no UTC offset (e.g. +08:00)",
        30: f"{DISPATCH_FILE}:30: 'quantity': required",
    }


def test_the_119_120_centre_takes_hazardous_police_incidents_and_requests_addressed_to_it() -> None:
    hazmat = incident_event()
    hazmat.source = "police"
    quarrel = copy.deepcopy(hazmat)
    quarrel.incident.category = incident_pb2.INCIDENT_CATEGORY_PUBLIC_ORDER
    quarrel.incident.ClearField("casualties")
    addressed = resource_request_event()
    addressed.source = "emergency"
    addressed.resource.contacts.add(agency="health", role=resource_pb2.CONTACT_ROLE_RESPONDING_ORG)
    unaddressed = resource_request_event()
    unaddressed.source = "emergency"
    own = copy.deepcopy(addressed)
    own.source = "health"
    record = dispatch119_outbound(hazmat)
    assert record is not None and record.name == f"police.{hazmat.id}.json"
    assert dispatch119_outbound(addressed) is not None
    injured = copy.deepcopy(quarrel)
    injured.incident.casualties.injured = 1
    assert dispatch119_outbound(injured) is not None, "people hurt: the ambulances are needed"
    for ignored in (quarrel, unaddressed, own):
        assert dispatch119_outbound(ignored) is None


# --- samples against the schema and the sample policy ------------------------------------------


@pytest.mark.parametrize(
    ("records", "mapping", "agency", "count"),
    [
        (CAD_RECORDS, cad110_events, "police", 24),
        (DISPATCH_RECORDS, dispatch119_events, "fire", 26),
    ],
)
def test_the_sample_events_are_valid_and_the_sample_policy_lets_the_centre_publish_them(
    records: list[Record], mapping: Any, agency: str, count: int
) -> None:
    policy, validator = Evaluator(load_policy(policy_files())), Validator()
    events = [e for found in mapped(records, mapping).values() for e in found]
    assert len(events) == count
    for event in events:
        event.source = agency
        assert validator.problems(event) == [], event.id
        assert policy.decide(agency, frozenset(), "publish", event).allowed, event.id
    reports = [
        e
        for found in mapped(records, lambda r: dispatch119_events(r, REPORTS)).values()
        for e in found
        if e.type == STATUS_REPORT_TYPE
    ]
    for report in reports if agency == "fire" else []:
        assert validator.problems(report) == [], report.id
        assert not policy.decide("fire", frozenset(), "publish", report).allowed, (
            "documented: the sample policy keeps status reports to emergency and command"
        )


def test_bad_options_are_refused_naming_the_key() -> None:
    with pytest.raises(
        AdapterConfigError, match=r"\[options\] deployment_reports: must be true or false"
    ):
        DISPATCH119.build({"deployment_reports": "yes", "inbound": {"directory": "d"}}, Path("s"))
    with pytest.raises(AdapterConfigError, match=r"\[options\] plane: 'REAL' is not one of ACTUAL"):
        CAD110.build({"plane": "REAL", "inbound": {"directory": "d"}}, Path("s"))
    with pytest.raises(AdapterConfigError, match=r"\[options.outbound\] unknown key 'families'"):
        CAD110.build({"outbound": {"directory": "o", "families": ["resource"]}}, Path("s"))


# --- end to end ---------------------------------------------------------------------------------


def sample_config(name: str, tmp_path: Path, gateway: Gateway, agency: str) -> AdapterConfig:
    options = copy.deepcopy(tomllib.loads((SAMPLES / f"{name}.toml").read_text())["options"])
    options["inbound"].update(directory=str(tmp_path / "drop"), poll_seconds=0.05)
    options["outbound"]["directory"] = str(tmp_path / "outbox")
    return AdapterConfig(
        file=tmp_path / f"{name}.toml",
        gateway=gateway.address,
        token=SecretStr(TOKENS[agency]),
        state_dir=tmp_path / "state",
        options=options,
    )


async def test_the_110_cad_feed_end_to_end(gateway: Gateway, tmp_path: Path) -> None:
    cad = AdapterRunner(CAD110, sample_config("cad-110", tmp_path, gateway, "police"))
    await open_durable(gateway, "police", CAD110, cad.config.options)
    from_fire, warning = incident_event(), warning_event()
    async with (
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        DutyLinkClient(gateway.address, token=TOKENS["weather"]) as weather,
        fire.subscribe("reader", families=["incident"]) as subscription,
        running(cad),
    ):
        drop(tmp_path / "drop", CAD_FILE, (SAMPLES / CAD_FILE).read_bytes())
        events = await read_events(subscription, 24)
        await fire.publish(from_fire)
        await weather.publish(warning)
        outbox = tmp_path / "outbox"
        expected = {f"fire.{from_fire.id}.json", f"weather.{warning.id}.json"}
        await until(lambda: {p.name for p in outbox.glob("*.json")} == expected)
        await until(lambda: (tmp_path / "state" / "drop" / "done" / CAD_FILE).exists())
    cad_events = [e for e in events if e.source == "police"]
    assert Counter(e.id for e in cad_events) == Counter(
        e.id for found in mapped(CAD_RECORDS, cad110_events).values() for e in found
    ), "every good line once"
    assert set(reasons(tmp_path / "state")) == {f"{CAD_FILE}:{n}" for n in (6, 17, 21)}
    assert (
        json.loads((outbox / f"weather.{warning.id}.json").read_bytes())["warning"]["identifier"]
        == warning.warning.identifier
    )


async def test_the_119_120_dispatch_feed_end_to_end(gateway: Gateway, tmp_path: Path) -> None:
    dispatch = AdapterRunner(
        DISPATCH119, sample_config("dispatch-119-120", tmp_path, gateway, "fire")
    )
    await open_durable(gateway, "fire", DISPATCH119, dispatch.config.options)
    hazard, quarrel = incident_event(), incident_event()
    quarrel.incident.category = incident_pb2.INCIDENT_CATEGORY_PUBLIC_ORDER
    quarrel.incident.ClearField("casualties")
    request = resource_request_event()
    request.resource.request_resource.resource_infos[0].resource.responsible_agency = "fire"
    async with (
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        DutyLinkClient(gateway.address, token=TOKENS["emergency"]) as emergency,
        police.subscribe("reader", families=["incident", "resource"]) as subscription,
        running(dispatch),
    ):
        drop(tmp_path / "drop", DISPATCH_FILE, (SAMPLES / DISPATCH_FILE).read_bytes())
        events = await read_events(subscription, 26)
        await police.publish_batch([quarrel, hazard])
        await emergency.publish(request)
        outbox = tmp_path / "outbox"
        expected = {f"police.{hazard.id}.json", f"emergency.{request.id}.json"}
        await until(lambda: {p.name for p in outbox.glob("*.json")} == expected)
        await until(lambda: (tmp_path / "state" / "drop" / "done" / DISPATCH_FILE).exists())
    feed_events = [e for e in events if e.source == "fire"]
    assert Counter(e.id for e in feed_events) == Counter(
        e.id for found in mapped(DISPATCH_RECORDS, dispatch119_events).values() for e in found
    ), "every good row once"
    assert Counter(e.type for e in feed_events)[REQUEST_TYPE] == 2
    assert set(reasons(tmp_path / "state")) == {f"{DISPATCH_FILE}:{n}" for n in (17, 25, 30)}
