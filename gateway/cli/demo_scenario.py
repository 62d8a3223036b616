"""The script of `dutylink demo`: a fire at a chemical plant, played as the linked-duty loops.

Fire & rescue reports the fire (a caller on 119) and verifies it on scene; the Joint Command
Centre assigns it (fire leads, five agencies support) and all but transport take the assignment
(签收: business acknowledgements; the gateway tracks who has not); fire takes it on; the meteorological and
ecology bureaus warn; emergency management declares its reserve of ambulances and commits all
four to the medical centre's request, and a second duty desk then commits two of the same
ambulances to fire's request: a double booking the gateway refuses. Transport closes roads;
police report the cordon; fire tells the caller the outcome; ecology lifts its warning;
emergency management releases the ambulances; the command centre publishes the outcome,
rewards the caller and closes the incident.

Every step of `script` is a legal transition of the event-type catalogue
(tests/test_demo_sequence.py replays it through the lifecycle machine and the resource ledger),
except the one marked `refused_by_design`; `scenario` is the script without it. Ids are fresh
on every call, so the demo can be played again on the same store. Pure: builds events, no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.v1 import (
    common_pb2,
    event_pb2,
    incident_pb2,
    inventory_pb2,
    resource_pb2,
    warning_pb2,
)

DIVISION = "310115"
SCENE = (31.2397, 121.4998)
RESERVE_AMBULANCES = 4  # emergency management's declared reserve; all go to the first request


@dataclass(frozen=True)
class Step:
    """One agency publishing one event, with a line saying what it means. `refused_by_design`:
    the gateway must refuse it (the double booking); the demo shows the refusal."""

    agency: str
    event: event_pb2.Event
    narration: str
    refused_by_design: bool = False


def _point(lat: float, lon: float) -> common_pb2.GeoPoint:
    return common_pb2.GeoPoint(latitude=lat, longitude=lon)


def _scene() -> common_pb2.Location:
    return common_pb2.Location(
        point=_point(*SCENE),
        address="Solvent store, 88 Huaxia Road, chemical industry park",
        jurisdiction=common_pb2.Jurisdiction(division_code=DIVISION, street_code="005"),
    )


@dataclass(frozen=True)
class _Run:
    """The time and the fresh ids of one playing of the script."""

    now: datetime
    tag: str

    @property
    def incident_id(self) -> str:
        return f"INC-119-{self.now:%m%d}-{self.tag}"

    @property
    def ambulances(self) -> str:
        """Emergency management's inventory item: its reserve of negative-pressure ambulances."""
        return f"amb-np-reserve-{self.tag.lower()}"

    def rm_id(self, desk: str, number: int) -> str:
        return f"RM-{desk}-{self.tag}-{number:04}"

    def envelope(self, event_type: str, priority: int, classification: int) -> event_pb2.Event:
        event = event_pb2.Event(
            id=str(uuid.uuid4()),
            type=event_type,
            subject=self.incident_id,
            jurisdiction=common_pb2.Jurisdiction(division_code=DIVISION),
            classification=classification,  # type: ignore[arg-type]
            plane=event_pb2.PLANE_EXERCISE,
            priority=priority,  # type: ignore[arg-type]
            correlation_id=self.incident_id,
        )
        event.time.FromDatetime(self.now)
        return event

    def incident(self, event_type: str, status: int, casualties: tuple[int, int, int]) -> event_pb2.Event:  # fmt: skip
        """The incident as it stands; the caller adds what the loop step carries."""
        event = self.envelope(
            event_type, event_pb2.PRIORITY_FLASH, event_pb2.CLASSIFICATION_RESTRICTED
        )
        incident = event.incident
        incident.incident_id = self.incident_id
        incident.category = incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS
        incident.severity = incident_pb2.INCIDENT_SEVERITY_LARGE
        incident.status = status  # type: ignore[assignment]
        incident.location.CopyFrom(_scene())
        incident.title = "Fire at a solvent store, chemical industry park"
        incident.description = "Toluene drums burning; black smoke drifting south-west."
        incident.casualties.injured, incident.casualties.trapped, incident.casualties.evacuated = (
            casualties
        )
        incident.involved_agencies.append("fire")
        incident.reported_at.FromDatetime(self.now)
        return event

    def report(self) -> event_pb2.Event:
        event = self.incident("incident.reported", incident_pb2.INCIDENT_STATUS_REPORTED, (3, 2, 0))
        reporter = event.incident.reporter
        reporter.name, reporter.phone = "Li Wei", "13900000000"
        reporter.channel = incident_pb2.REPORT_CHANNEL_HOTLINE_119
        return event

    def warning(
        self, agency: str, category: int, response: int, event_name: str, headline: str, instruction: str,
        area: common_pb2.Polygon | common_pb2.Circle, area_desc: str,
    ) -> event_pb2.Event:  # fmt: skip
        event = self.envelope(
            "warning.alert", event_pb2.PRIORITY_URGENT, event_pb2.CLASSIFICATION_PUBLIC
        )
        warning = event.warning
        warning.identifier = f"{agency.upper()}-{uuid.uuid4()}"
        warning.sender = f"{agency}@dutylink.example"
        warning.sent.FromDatetime(self.now)
        warning.status = warning_pb2.CAP_STATUS_EXERCISE
        warning.msg_type = warning_pb2.CAP_MSG_TYPE_ALERT
        warning.scope = warning_pb2.CAP_SCOPE_PUBLIC
        warning.incidents.append(self.incident_id)
        info = warning.infos.add(
            language="zh-CN", event=event_name, headline=headline, instruction=instruction
        )
        info.categories.append(category)  # type: ignore[arg-type]
        info.response_types.append(response)  # type: ignore[arg-type]
        info.urgency = warning_pb2.CAP_URGENCY_IMMEDIATE
        info.severity = warning_pb2.CAP_SEVERITY_SEVERE
        info.certainty = warning_pb2.CAP_CERTAINTY_LIKELY
        info.expires.FromDatetime(self.now + timedelta(hours=6))
        target = info.areas.add(area_desc=area_desc)
        if isinstance(area, common_pb2.Polygon):
            target.polygons.append(area)
        else:
            target.circles.append(area)
        return event

    def cancel(self, alert: event_pb2.Event, note: str) -> event_pb2.Event:
        """A CAP Cancel of `alert`, by its sender."""
        event = self.envelope(
            "warning.cancel", event_pb2.PRIORITY_ROUTINE, event_pb2.CLASSIFICATION_PUBLIC
        )
        warning = event.warning
        warning.identifier = f"{alert.warning.identifier}-C"
        warning.sender = alert.warning.sender
        warning.sent.FromDatetime(self.now)
        warning.status, warning.scope = alert.warning.status, alert.warning.scope
        warning.msg_type = warning_pb2.CAP_MSG_TYPE_CANCEL
        warning.note = note
        warning.incidents.append(self.incident_id)
        cancelled = warning.references.add(
            sender=alert.warning.sender, identifier=alert.warning.identifier
        )
        cancelled.sent.CopyFrom(alert.warning.sent)
        return event

    def declaration(self) -> event_pb2.Event:
        """Emergency management's standing reserve (not about the incident)."""
        event = self.envelope(
            "inventory.declared", event_pb2.PRIORITY_ROUTINE, event_pb2.CLASSIFICATION_INTERNAL
        )
        event.subject = event.correlation_id = ""
        item = event.inventory.declaration.items.add(
            item_id=self.ambulances,
            kind=resource_pb2.RESOURCE_KIND_VEHICLE,
            type_info="ambulance (negative-pressure)",
            quantity=RESERVE_AMBULANCES,
            unit="vehicles",
            status=inventory_pb2.INVENTORY_STATUS_IN_SERVICE,
        )
        item.home.address = "Municipal emergency reserve depot, Jinqiao"
        item.home.jurisdiction.division_code = DIVISION
        return event

    def resource(self, event_type: str, message_id: str, exchange: str, agency: str) -> event_pb2.Event:  # fmt: skip
        """An EDXL-RM message of the exchange `exchange` (its first message's id)."""
        event = self.envelope(
            event_type, event_pb2.PRIORITY_FLASH, event_pb2.CLASSIFICATION_INTERNAL
        )
        message = event.resource
        message.message_id = message_id
        message.originating_message_id = exchange
        message.incident_id = self.incident_id
        message.sent_at.FromDatetime(self.now)
        message.contacts.add(description=f"{agency} duty desk", agency=agency)
        return event

    def request(self, exchange: str, agency: str, what: str, count: int) -> event_pb2.Event:
        """`count` ambulances wanted at the staging point within 20 minutes (one line, "1")."""
        event = self.resource("resource.request", exchange, exchange, agency)
        request = event.resource.request_resource
        line = request.resource_infos.add(resource_info_element_id="1")
        line.resource.kind = resource_pb2.RESOURCE_KIND_VEHICLE
        line.resource.type_info = what
        line.assignment.quantity.value, line.assignment.quantity.unit = count, "vehicles"
        request.needed_by.FromDatetime(self.now + timedelta(minutes=20))
        request.deliver_to.CopyFrom(_scene())
        request.deliver_to.address = "Staging point, east gate of the park"
        return event

    def commit(self, message_id: str, exchange: str, count: int) -> event_pb2.Event:
        """Emergency management commits `count` reserve ambulances to line "1" of `exchange`."""
        event = self.resource("resource.commit", message_id, exchange, "emergency")
        event.resource.preceding_message_id = exchange
        event.causation_id = exchange
        line = event.resource.commit_resource.resource_infos.add(resource_info_element_id="1")
        line.response.type = resource_pb2.RESPONSE_TYPE_ACCEPT
        line.response.preceding_resource_info_element_id = "1"
        self._ambulances(line, count)
        return event

    def release(self, message_id: str, exchange: str, count: int) -> event_pb2.Event:
        """Line "1" of `exchange` gives its `count` ambulances back to the reserve."""
        event = self.resource("resource.release", message_id, exchange, "emergency")
        line = event.resource.release_resource.resource_infos.add(resource_info_element_id="1")
        self._ambulances(line, count)
        return event

    def _ambulances(self, line: resource_pb2.ResourceInfo, count: int) -> None:
        line.resource.kind = resource_pb2.RESOURCE_KIND_VEHICLE
        line.resource.type_info = "ambulance (negative-pressure)"
        line.resource.inventory_item_id = self.ambulances
        line.assignment.quantity.value, line.assignment.quantity.unit = count, "vehicles"


def scenario(now: datetime) -> list[Step]:
    """The steps a gateway stores, in order: the script without the double booking (valid,
    legal events of every agency, for benchmarks and the fuzzer to start from). The first is
    the incident report. Ids are fresh on every call."""
    return [step for step in script(now) if not step.refused_by_design]


def script(now: datetime) -> list[Step]:
    """Every step the demo plays, in order, the double booking included. Ids are fresh on
    every call."""
    run = _Run(now, uuid.uuid4().hex[:6].upper())
    incident = run.incident
    downwind = common_pb2.Polygon(
        points=[
            _point(31.2397, 121.4998),
            _point(31.2200, 121.4700),
            _point(31.2050, 121.4900),
            _point(31.2397, 121.4998),
        ]
    )
    air_quality = run.warning("ecology", warning_pb2.CAP_CATEGORY_ENV, warning_pb2.CAP_RESPONSE_TYPE_SHELTER,
                              "Air pollution", "Toxic smoke: stay indoors, close windows",
                              "Residents downwind stay indoors with windows closed.", downwind,
                              "Residential districts south-west of the park")  # fmt: skip
    assigned = incident("incident.assigned", incident_pb2.INCIDENT_STATUS_ASSIGNED, (3, 2, 0))
    assigned.source = "command"  # its acknowledgements name the message by source and id
    assigned.incident.lead_agency = "fire"
    assigned.incident.involved_agencies.extend(["police", "health", "emergency", "transport", "ecology"])  # fmt: skip
    progress = incident("incident.progress", incident_pb2.INCIDENT_STATUS_HANDLING, (3, 0, 420))
    progress.incident.description = "Cordon of 500 m held; the 2 trapped workers rescued; 420 residents evacuated."  # fmt: skip
    feedback = incident("incident.feedback", incident_pb2.INCIDENT_STATUS_FEEDBACK, (3, 0, 420))
    feedback.incident.feedback = "The fire you reported is out; everyone is accounted for. Thank you for calling 119."  # fmt: skip
    published = incident("incident.published", incident_pb2.INCIDENT_STATUS_PUBLISHED, (3, 0, 420))
    published.incident.published_summary = "Solvent store fire in the chemical park put out in 2 hours; 3 injured, no deaths; air quality back to normal."  # fmt: skip
    rewarded = incident("incident.rewarded", incident_pb2.INCIDENT_STATUS_REWARDED, (3, 0, 420))
    rewarded.incident.reward.granted = True
    rewarded.incident.reward.reason = "Early, accurate report of a hazardous-chemicals fire (municipal reward scheme, art. 5)"  # fmt: skip
    rewarded.incident.reward.award = "CNY 500"
    medical, standby = run.rm_id("120", 7), run.rm_id("119", 9)

    return [
        Step("fire", run.report(), "reports a hazardous-chemicals fire from a 119 call: 3 injured, 2 trapped"),
        Step("fire", incident("incident.verified", incident_pb2.INCIDENT_STATUS_VERIFIED, (3, 2, 0)),
             "verifies it: the first engine on scene confirms burning toluene drums"),
        Step("command", assigned, "assigns the incident: fire leads; police, health, emergency, transport and ecology support"),
        *(Step(agency, acknowledgement_of(assigned, by=f"{agency} duty officer", now=now),
               "takes the assignment (签收)")
          for agency in ("fire", "police", "health", "emergency", "ecology")),
        Step("weather", run.warning("weather", warning_pb2.CAP_CATEGORY_MET, warning_pb2.CAP_RESPONSE_TYPE_MONITOR,
                                    "Wind", "North-easterly wind 5 m/s over the park for 6 hours",
                                    "Plan for smoke drifting south-west.", common_pb2.Circle(center=_point(*SCENE), radius_km=10),
                                    "10 km around the chemical park"),
             "warns of a north-easterly wind carrying the smoke south-west"),
        Step("ecology", air_quality, "issues an air-quality warning for the downwind districts"),
        Step("fire", incident("incident.handling", incident_pb2.INCIDENT_STATUS_HANDLING, (3, 2, 0)),
             "takes the lead on scene: 6 engines and a hazmat team"),
        Step("emergency", run.declaration(), f"declares its reserve: {RESERVE_AMBULANCES} negative-pressure ambulances ({run.ambulances})"),
        Step("health", run.request(medical, "health", "ambulance (negative-pressure)", 6),
             "requests 6 ambulances to the east-gate staging point within 20 min"),
        Step("emergency", run.commit(run.rm_id("EMB", 11), medical, RESERVE_AMBULANCES),
             f"commits all {RESERVE_AMBULANCES} reserve ambulances to the medical centre's request"),
        Step("fire", run.request(standby, "fire", "ambulance (standby for firefighters)", 2),
             "requests 2 ambulances on standby for its crews"),
        Step("emergency", run.commit(run.rm_id("EMB", 12), standby, 2),
             "a second duty desk commits 2 of the same reserve ambulances to fire: a double booking",
             refused_by_design=True),
        Step("transport", run.warning("transport", warning_pb2.CAP_CATEGORY_TRANSPORT, warning_pb2.CAP_RESPONSE_TYPE_AVOID,
                                      "Road closure", "Huaxia Road closed between Chuansha Rd and Jinhai Rd",
                                      "Follow the signed detour via Jinhai Road.", common_pb2.Circle(center=_point(*SCENE), radius_km=1.5),
                                      "1.5 km around the scene"),
             "closes the roads around the scene"),
        Step("police", progress, "reports the cordon: trapped workers rescued, 420 evacuated"),
        Step("fire", feedback, "reports the fire out and tells the caller the outcome"),
        Step("ecology", run.cancel(air_quality, "Air quality downwind is back to normal."),
             "lifts its air-quality warning (CAP Cancel)"),
        Step("emergency", run.release(run.rm_id("EMB", 13), medical, RESERVE_AMBULANCES),
             "releases the ambulances back to the reserve"),
        Step("command", published, "publishes the outcome"),
        Step("command", rewarded, "rewards the caller: CNY 500"),
        Step("command", incident("incident.closed", incident_pb2.INCIDENT_STATUS_CLOSED, (3, 0, 420)),
             "closes the incident: the loop is complete"),
    ]  # fmt: skip
