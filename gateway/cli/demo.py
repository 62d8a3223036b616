"""`dutylink demo`: a linked-duty scenario played by simulated agencies through a real gateway.

A fire breaks out at a solvent store in a chemical park. Fire & rescue reports it; the
meteorological bureau warns of the wind; ecology warns the downwind districts; the medical
centre requests ambulances; emergency management commits them from the reserve; transport
closes roads; police take charge of the cordon; fire & rescue closes the incident. Every agency
receives what its subscription selects and acks it. A retried publish and an invalid event show
the gateway's idempotency and field-level errors.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rich.console import Console
from rich.table import Table

from adapters.sdk.client import DutyLinkClient, Subscription
from dutylink.v1 import common_pb2, event_pb2, incident_pb2, resource_pb2, warning_pb2
from gateway.config import sample_tokens

INCIDENT_ID = "INC-119-0815-0042"
DIVISION = "310115"
SCENE = (31.2397, 121.4998)
# The agencies playing the scenario, with their sample development tokens.
PLAYERS = ("fire", "police", "health", "emergency", "transport", "ecology", "weather")
# What each simulated agency's duty system subscribes to.
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "police": ("incident", "warning"),
    "fire": ("resource", "warning"),
    "health": ("incident", "resource"),
    "emergency": ("incident", "resource", "warning"),
    "transport": ("incident", "warning"),
    "ecology": ("incident",),
}
STYLE = {"fire": "red", "police": "blue", "health": "green", "emergency": "magenta",
         "transport": "yellow", "ecology": "cyan", "weather": "bright_white"}  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One agency publishing one event, with a line saying what it means."""

    agency: str
    event: event_pb2.Event
    narration: str


def _point(lat: float, lon: float) -> common_pb2.GeoPoint:
    return common_pb2.GeoPoint(latitude=lat, longitude=lon)


def _scene() -> common_pb2.Location:
    return common_pb2.Location(
        point=_point(*SCENE),
        address="Solvent store, 88 Huaxia Road, chemical industry park",
        jurisdiction=common_pb2.Jurisdiction(division_code=DIVISION, street_code="005"),
    )


def _envelope(
    event_type: str, now: datetime, priority: int, classification: int
) -> event_pb2.Event:
    event = event_pb2.Event(
        id=str(uuid.uuid4()),
        type=event_type,
        subject=INCIDENT_ID,
        jurisdiction=common_pb2.Jurisdiction(division_code=DIVISION),
        classification=classification,  # type: ignore[arg-type]
        plane=event_pb2.PLANE_EXERCISE,
        priority=priority,  # type: ignore[arg-type]
        correlation_id=INCIDENT_ID,
    )
    event.time.FromDatetime(now)
    return event


def _incident(
    now: datetime, event_type: str, status: int, narration_casualties: tuple[int, int, int]
) -> event_pb2.Event:
    event = _envelope(
        event_type, now, event_pb2.PRIORITY_FLASH, event_pb2.CLASSIFICATION_RESTRICTED
    )
    incident = event.incident
    incident.incident_id = INCIDENT_ID
    incident.category = incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS
    incident.severity = incident_pb2.INCIDENT_SEVERITY_LARGE
    incident.status = status  # type: ignore[assignment]
    incident.location.CopyFrom(_scene())
    incident.title = "Fire at a solvent store, chemical industry park"
    incident.description = "Toluene drums burning; black smoke drifting south-west."
    incident.casualties.injured, incident.casualties.trapped, incident.casualties.evacuated = (
        narration_casualties
    )
    incident.reporter.name = "Li Wei"
    incident.reporter.phone = "13900000000"
    incident.reporter.channel = incident_pb2.REPORT_CHANNEL_HOTLINE_119
    incident.involved_agencies.extend(["fire", "police", "health", "emergency"])
    incident.reported_at.FromDatetime(now)
    return event


def _warning(
    now: datetime, agency: str, category: int, response: int, event_name: str, headline: str, instruction: str,
    area: common_pb2.Polygon | common_pb2.Circle, area_desc: str,
) -> event_pb2.Event:  # fmt: skip
    event = _envelope(
        "warning.alert", now, event_pb2.PRIORITY_URGENT, event_pb2.CLASSIFICATION_PUBLIC
    )
    warning = event.warning
    warning.identifier = f"{agency.upper()}-{uuid.uuid4()}"
    warning.sender = f"{agency}@dutylink.example"
    warning.sent.FromDatetime(now)
    warning.status = warning_pb2.CAP_STATUS_EXERCISE
    warning.msg_type = warning_pb2.CAP_MSG_TYPE_ALERT
    warning.scope = warning_pb2.CAP_SCOPE_PUBLIC
    warning.incidents.append(INCIDENT_ID)
    info = warning.infos.add(
        language="zh-CN", event=event_name, headline=headline, instruction=instruction
    )
    info.categories.append(category)  # type: ignore[arg-type]
    info.response_types.append(response)  # type: ignore[arg-type]
    info.urgency = warning_pb2.CAP_URGENCY_IMMEDIATE
    info.severity = warning_pb2.CAP_SEVERITY_SEVERE
    info.certainty = warning_pb2.CAP_CERTAINTY_LIKELY
    info.expires.FromDatetime(now + timedelta(hours=6))
    target = info.areas.add(area_desc=area_desc)
    if isinstance(area, common_pb2.Polygon):
        target.polygons.append(area)
    else:
        target.circles.append(area)
    return event


def _resource_message(
    now: datetime, event_type: str, message_id: str, agency: str
) -> event_pb2.Event:
    event = _envelope(event_type, now, event_pb2.PRIORITY_FLASH, event_pb2.CLASSIFICATION_INTERNAL)
    message = event.resource
    message.message_id = message_id
    message.originating_message_id = "RM-120-0815-0007"
    message.incident_id = INCIDENT_ID
    message.sent_at.FromDatetime(now)
    message.contacts.add(description=f"{agency} duty desk", agency=agency)
    return event


def scenario(now: datetime) -> list[Step]:
    """The scripted steps, in order. Ids are fresh on every call."""
    downwind = common_pb2.Polygon(
        points=[
            _point(31.2397, 121.4998),
            _point(31.2200, 121.4700),
            _point(31.2050, 121.4900),
            _point(31.2397, 121.4998),
        ]
    )
    request = _resource_message(now, "resource.request", "RM-120-0815-0007", "health")
    line = request.resource.request_resource.resource_infos.add(resource_info_element_id="1")
    line.resource.kind = resource_pb2.RESOURCE_KIND_VEHICLE
    line.resource.type_info = "ambulance (negative-pressure)"
    line.assignment.quantity.value, line.assignment.quantity.unit = 6, "vehicles"
    request.resource.request_resource.needed_by.FromDatetime(now + timedelta(minutes=20))
    request.resource.request_resource.deliver_to.CopyFrom(_scene())
    request.resource.request_resource.deliver_to.address = "Staging point, east gate of the park"

    commit = _resource_message(now, "resource.commit", "RM-EMB-0815-0011", "emergency")
    commit.resource.preceding_message_id = "RM-120-0815-0007"
    for element_id, kind, what, quantity, unit in (
        ("1", resource_pb2.RESOURCE_KIND_VEHICLE, "ambulance (municipal reserve)", 4, "vehicles"),
        ("2", resource_pb2.RESOURCE_KIND_MATERIAL, "foam concentrate", 12, "t"),
    ):
        committed = commit.resource.commit_resource.resource_infos.add(
            resource_info_element_id=element_id
        )
        committed.response.type = resource_pb2.RESPONSE_TYPE_ACCEPT
        committed.response.preceding_resource_info_element_id = element_id
        committed.resource.kind = kind
        committed.resource.type_info = what
        committed.assignment.quantity.value, committed.assignment.quantity.unit = quantity, unit

    return [
        Step("fire", _incident(now, "incident.reported", incident_pb2.INCIDENT_STATUS_REPORTED, (3, 2, 0)),
             "reports a hazardous-chemicals fire: 3 injured, 2 trapped"),
        Step("weather", _warning(now, "weather", warning_pb2.CAP_CATEGORY_MET, warning_pb2.CAP_RESPONSE_TYPE_MONITOR,
                                 "Wind", "North-easterly wind 5 m/s over the park for 6 hours",
                                 "Plan for smoke drifting south-west.", common_pb2.Circle(center=_point(*SCENE), radius_km=10),
                                 "10 km around the chemical park"),
             "warns of a north-easterly wind carrying the smoke south-west"),
        Step("ecology", _warning(now, "ecology", warning_pb2.CAP_CATEGORY_ENV, warning_pb2.CAP_RESPONSE_TYPE_SHELTER,
                                 "Air pollution", "Toxic smoke: stay indoors, close windows",
                                 "Residents downwind stay indoors with windows closed.", downwind,
                                 "Residential districts south-west of the park"),
             "issues an air-quality warning for the downwind districts"),
        Step("health", request, "requests 6 ambulances to the east-gate staging point within 20 min"),
        Step("emergency", commit, "commits 4 reserve ambulances and 12 t of foam concentrate"),
        Step("transport", _warning(now, "transport", warning_pb2.CAP_CATEGORY_TRANSPORT, warning_pb2.CAP_RESPONSE_TYPE_AVOID,
                                   "Road closure", "Huaxia Road closed between Chuansha Rd and Jinhai Rd",
                                   "Follow the signed detour via Jinhai Road.", common_pb2.Circle(center=_point(*SCENE), radius_km=1.5),
                                   "1.5 km around the scene"),
             "closes the roads around the scene"),
        Step("police", _incident(now, "incident.status_changed", incident_pb2.INCIDENT_STATUS_HANDLING, (3, 0, 420)),
             "takes the cordon: trapped workers rescued, 420 evacuated"),
        Step("fire", _incident(now, "incident.status_changed", incident_pb2.INCIDENT_STATUS_CLOSED, (3, 0, 420)),
             "reports the fire out and closes the incident"),
    ]  # fmt: skip


@dataclass
class DemoReport:
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected_fields: list[str] = field(default_factory=list)
    withheld: dict[str, set[str]] = field(default_factory=dict)


def _tag(agency: str) -> str:
    return f"[bold {STYLE.get(agency, 'white')}]{agency:>9}[/]"


async def _receive(
    agency: str, subscription: Subscription, expected: int, report: DemoReport, console: Console
) -> None:
    while report.received[agency] < expected:
        delivery = await subscription.next()
        if delivery is None:
            return
        event = delivery.event
        if event.source != agency:
            report.received[agency] += 1
            report.withheld.setdefault(agency, set()).update(delivery.withheld_fields)
            withheld = (
                f" [yellow]withheld by policy: {', '.join(delivery.withheld_fields)}[/]"
                if delivery.withheld_fields
                else ""
            )
            console.print(
                f"          {_tag(agency)} [dim]◀ {event.type:<24} from {event.source} (seq {delivery.stream_sequence})[/]{withheld}"
            )
        await subscription.ack(delivery)


async def run_demo(
    address: str,
    console: Console,
    *,
    pause: float = 0.4,
    clock: Callable[[], datetime] | None = None,
) -> DemoReport:
    """Play the scenario against the gateway at `address`; returns what was sent and received."""
    now = (clock or (lambda: datetime.now(UTC)))()
    steps = scenario(now)
    report = DemoReport()
    tokens = sample_tokens()
    clients = {agency: DutyLinkClient(address, token=tokens[agency]) for agency in PLAYERS}
    subscriptions: dict[str, Subscription] = {}
    try:
        for agency, families in SUBSCRIPTIONS.items():
            subscription = clients[agency].subscribe(f"demo-{uuid.uuid4().hex[:8]}", families=families,
                                                     planes=[event_pb2.PLANE_EXERCISE])  # fmt: skip
            await subscription.open()
            subscriptions[agency] = subscription
        console.rule("[bold]DutyLink demo: fire at a chemical park (EXERCISE plane)")
        console.print(
            "Subscriptions: " + "; ".join(f"{a} ← {', '.join(f)}" for a, f in SUBSCRIPTIONS.items())
        )
        receivers = [
            asyncio.create_task(
                _receive(agency, subscriptions[agency],
                         sum(1 for s in steps if s.agency != agency and s.event.WhichOneof("payload") in families),
                         report, console)
            )
            for agency, families in SUBSCRIPTIONS.items()
        ]  # fmt: skip
        for step in steps:
            receipt = await clients[step.agency].publish(step.event)
            report.sent[step.agency] += 1
            console.print(
                f"{_tag(step.agency)} ▶ [bold]{step.event.type:<24}[/] {step.narration}  [dim](seq {receipt.stream_sequence})[/]"
            )
            await asyncio.sleep(pause)
        retry = await clients["fire"].publish(steps[0].event)
        report.duplicates += int(retry.duplicate)
        console.print(
            f"{_tag('fire')} ↻ retries its first report after a timeout: stored once, receipt says duplicate={retry.duplicate}"
        )
        broken = _envelope(
            "warning.alert", now, event_pb2.PRIORITY_URGENT, event_pb2.CLASSIFICATION_PUBLIC
        )
        broken.warning.identifier = "no-area"
        broken.jurisdiction.division_code = "31011"
        try:
            await clients["transport"].publish(broken)
        except grpc.aio.AioRpcError as error:
            status = rpc_status.from_call(error)
            for detail in status.details if status else ():
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                report.rejected_fields.extend(v.field for v in bad.field_violations)
            console.print(
                f"{_tag('transport')} ✗ sends a malformed warning: {error.code().name}, fields: {', '.join(sorted(set(report.rejected_fields)))}"
            )
        await asyncio.wait_for(asyncio.gather(*receivers), timeout=30)
    finally:
        for subscription in subscriptions.values():
            await subscription.close()
        for client in clients.values():
            await client.close()
    table = Table(title="Exchange summary")
    table.add_column("agency")
    table.add_column("sent", justify="right")
    table.add_column("received (acked)", justify="right")
    for agency in PLAYERS:
        table.add_row(agency, str(report.sent[agency]), str(report.received[agency]))
    console.print(table)
    return report
