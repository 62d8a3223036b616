"""Builders of the linked-duty loop events for the whole-scenario tests (tests/test_loop_scenarios):
each returns an event that carries its catalogue type's required fields and passes the Validator
(`checked` asserts both), plus a few readers of what the gateway stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import nats
from nats.js.errors import NotFoundError

from dutylink.catalogue import load_catalogue
from dutylink.v1 import (
    common_pb2,
    event_pb2,
    incident_pb2,
    inventory_pb2,
    resource_pb2,
    task_pb2,
    warning_pb2,
)
from gateway.core import subjects
from gateway.core.streams import AGGREGATES_BUCKET
from gateway.core.validation import Validator
from gateway.core.workflows import AggregateState, ledger_codec
from gateway.core.workflows.base import AggregateRef
from gateway.core.workflows.ledger_state import ItemKey, ItemLine
from tests.factories import scene

CATALOGUE = load_catalogue()
VALIDATOR = Validator()
ACTUAL, EXERCISE = event_pb2.PLANE_ACTUAL, event_pb2.PLANE_EXERCISE


def checked(event: event_pb2.Event) -> event_pb2.Event:
    """`event`, asserted to carry what its catalogue type requires and to pass the Validator."""
    event_type = CATALOGUE.get(event.type)
    assert event_type is not None, event.type
    assert event_type.missing_fields(event) == [], (event.type, event_type.missing_fields(event))
    assert VALIDATOR.problems(event) == [], (event.type, VALIDATOR.problems(event))
    return event


def now() -> datetime:
    return datetime.now(UTC)


def envelope(event_type: str, plane: event_pb2.Plane.ValueType = ACTUAL) -> event_pb2.Event:
    event = event_pb2.Event(
        id=str(uuid.uuid4()),
        type=event_type,
        jurisdiction=common_pb2.Jurisdiction(division_code="310115"),
        classification=event_pb2.CLASSIFICATION_INTERNAL,
        plane=plane,
        priority=event_pb2.PRIORITY_URGENT,
    )
    event.time.FromDatetime(now())
    return event


# --- incident ----------------------------------------------------------------------------------

_INCIDENT_STATUS = {
    "reported": incident_pb2.INCIDENT_STATUS_REPORTED,
    "verified": incident_pb2.INCIDENT_STATUS_VERIFIED,
    "assigned": incident_pb2.INCIDENT_STATUS_ASSIGNED,
    "handling": incident_pb2.INCIDENT_STATUS_HANDLING,
    "feedback": incident_pb2.INCIDENT_STATUS_FEEDBACK,
    "published": incident_pb2.INCIDENT_STATUS_PUBLISHED,
    "rewarded": incident_pb2.INCIDENT_STATUS_REWARDED,
    "closed": incident_pb2.INCIDENT_STATUS_CLOSED,
    "rejected": incident_pb2.INCIDENT_STATUS_REJECTED,
}


_PHASES = {
    "phase_preparedness": incident_pb2.EMERGENCY_PHASE_PREVENTION_PREPAREDNESS,
    "phase_monitoring": incident_pb2.EMERGENCY_PHASE_MONITORING_WARNING,
    "phase_response": incident_pb2.EMERGENCY_PHASE_RESPONSE_RESCUE,
    "phase_recovery": incident_pb2.EMERGENCY_PHASE_RECOVERY_RECONSTRUCTION,
}


def incident(
    step: str,
    incident_id: str,
    *,
    plane: event_pb2.Plane.ValueType = ACTUAL,
    lead: str = "",
    involved: tuple[str, ...] = (),
    merged_into: str = "",
    category: incident_pb2.IncidentCategory.ValueType = (
        incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS
    ),
) -> event_pb2.Event:
    """`incident.<step>` of incident `incident_id`, with the fields that step requires."""
    event = envelope(f"incident.{step}", plane)
    event.subject = event.correlation_id = incident_id
    payload = event.incident
    payload.incident_id = incident_id
    payload.category = category
    payload.status = _INCIDENT_STATUS.get(step, incident_pb2.INCIDENT_STATUS_REPORTED)
    payload.location.CopyFrom(scene())
    payload.title = "Fire at a solvent store, chemical park"
    payload.reported_at.FromDatetime(now())
    payload.lead_agency = lead
    payload.involved_agencies.extend(involved)
    payload.merged_into = merged_into
    if step == "rejected":
        payload.rejection_reason = incident_pb2.INCIDENT_REJECTION_REASON_FALSE_REPORT
    if step == "feedback":
        payload.feedback = "Hazard removed; the caller was told by phone."
    if step == "published":
        payload.published_summary = "A fallen billboard was removed within two hours."
    if step.startswith("phase_"):
        payload.phase = _PHASES[step]
    if step == "rewarded":
        payload.reward.granted = True
        payload.reward.reason = "Timely and accurate public report"
    return checked(event)


# --- task --------------------------------------------------------------------------------------

_TASK_STATUS = {
    "opened": task_pb2.TASK_STATUS_OPENED,
    "assigned": task_pb2.TASK_STATUS_ASSIGNED,
    "progress": task_pb2.TASK_STATUS_IN_PROGRESS,
    "rectified": task_pb2.TASK_STATUS_RECTIFIED,
    "rechecked": task_pb2.TASK_STATUS_RECHECKED,
    "accountability": task_pb2.TASK_STATUS_ACCOUNTABLE,
    "closed": task_pb2.TASK_STATUS_CLOSED,
}


def task(
    step: str,
    task_id: str,
    *,
    origin_incident: str = "",
    owner: str = "",
    supervisor: str = "",
    recheck_by: str = "",
    failed: bool = False,
) -> event_pb2.Event:
    """`task.<step>` of task `task_id`, with the fields that step requires."""
    event = envelope(f"task.{step}")
    payload = event.task
    payload.task_id = task_id
    payload.title = "Close the road downwind of the chemical park"
    payload.status = _TASK_STATUS.get(step, task_pb2.TASK_STATUS_ASSIGNED)
    if step == "rechecked" and failed:
        payload.status = task_pb2.TASK_STATUS_RECHECK_FAILED
    if origin_incident:
        payload.origin_incident_id = origin_incident
    payload.owner_agency = owner
    payload.supervising_agency = supervisor
    if step == "assigned":
        payload.deadline.FromDatetime(now() + timedelta(hours=4))
    if step in ("progress", "rectified"):
        payload.progress_note = "Barriers up on Huaxia Road; diversion signed."
    if step == "rechecked":
        payload.recheck.result = (
            task_pb2.RECHECK_RESULT_FAILED if failed else task_pb2.RECHECK_RESULT_PASSED
        )
        payload.recheck.agency = recheck_by
    if step == "accountability":
        payload.accountability.agency = owner
        payload.accountability.reason = "The re-check found the road still open to traffic."
    return checked(event)


# --- warning (CAP) -----------------------------------------------------------------------------


def warning(
    msg_type: str, identifier: str, sender: str, *, references: tuple[event_pb2.Event, ...] = ()
) -> event_pb2.Event:
    """A CAP `warning.<msg_type>` (alert, update, cancel) with `references` to earlier ones."""
    event = envelope(f"warning.{msg_type}")
    event.classification = event_pb2.CLASSIFICATION_PUBLIC
    payload = event.warning
    payload.identifier = identifier
    payload.sender = sender
    payload.sent.FromDatetime(now().replace(microsecond=0))
    payload.status = warning_pb2.CAP_STATUS_ACTUAL
    payload.msg_type = {
        "alert": warning_pb2.CAP_MSG_TYPE_ALERT,
        "update": warning_pb2.CAP_MSG_TYPE_UPDATE,
        "cancel": warning_pb2.CAP_MSG_TYPE_CANCEL,
    }[msg_type]
    payload.scope = warning_pb2.CAP_SCOPE_PUBLIC
    for earlier in references:
        reference = payload.references.add(
            sender=earlier.warning.sender, identifier=earlier.warning.identifier
        )
        reference.sent.CopyFrom(earlier.warning.sent)
    info = payload.infos.add(language="zh-CN", event="Air pollution", headline="Toxic smoke")
    info.categories.append(warning_pb2.CAP_CATEGORY_ENV)
    info.response_types.append(warning_pb2.CAP_RESPONSE_TYPE_SHELTER)
    info.urgency = warning_pb2.CAP_URGENCY_IMMEDIATE
    info.severity = warning_pb2.CAP_SEVERITY_SEVERE
    info.certainty = warning_pb2.CAP_CERTAINTY_LIKELY
    info.areas.add(area_desc="Downwind of the chemical park")
    return checked(event)


# --- inventory and resource (EDXL-RM) ----------------------------------------------------------


def declare(item: str, quantity: float, *, kind: str = "ambulance", unit: str = "vehicles",
            threshold: float = 0,
            plane: event_pb2.Plane.ValueType = ACTUAL) -> event_pb2.Event:  # fmt: skip
    event = envelope("inventory.declared", plane)
    event.inventory.declaration.items.add(
        item_id=item, kind=resource_pb2.RESOURCE_KIND_VEHICLE if unit == "vehicles"
        else resource_pb2.RESOURCE_KIND_MATERIAL, type_info=kind, quantity=quantity, unit=unit,
        home=common_pb2.Location(address="depot"),
        status=inventory_pb2.INVENTORY_STATUS_IN_SERVICE, replenishment_threshold=threshold,
    )  # fmt: skip
    return checked(event)


def adjust(item: str, delta: float) -> event_pb2.Event:
    event = envelope("inventory.adjusted")
    event.inventory.adjustment.item_id = item
    event.inventory.adjustment.delta = delta
    event.inventory.adjustment.reason = "restocked"
    return checked(event)


def _resource(event_type: str, thread: str, kind: str, *, preceding: bool = True,
              suffix: str = "", plane: event_pb2.Plane.ValueType = ACTUAL,
              ) -> tuple[event_pb2.Event, resource_pb2.ResourceInfo]:  # fmt: skip
    """An EDXL-RM message of exchange `thread` with one line (element "1") of message kind `kind`."""
    event = envelope(event_type, plane)
    message = event.resource
    message.message_id = thread if not suffix else f"{thread}-{suffix}-{uuid.uuid4().hex[:8]}"
    message.originating_message_id = thread
    if preceding and suffix:
        message.preceding_message_id = thread
    message.contacts.add(description="Duty desk", agency="command")
    line = getattr(message, kind).resource_infos.add(resource_info_element_id="1")
    line.resource.name = "resource"
    return event, line


def request(thread: str, quantity: float, *, unit: str = "vehicles",
            plane: event_pb2.Plane.ValueType = ACTUAL) -> event_pb2.Event:  # fmt: skip
    event, line = _resource("resource.request", thread, "request_resource", plane=plane)
    line.assignment.quantity.value = quantity
    line.assignment.quantity.unit = unit
    return checked(event)


def _answer(line: resource_pb2.ResourceInfo, item: str, owner: str, quantity: float,
            unit: str) -> None:  # fmt: skip
    line.response.preceding_resource_info_element_id = "1"
    line.response.type = resource_pb2.RESPONSE_TYPE_ACCEPT
    line.resource.inventory_item_id = item
    line.resource.responsible_agency = owner
    line.assignment.quantity.value = quantity
    line.assignment.quantity.unit = unit


def respond(thread: str, item: str, owner: str, quantity: float, *, unit: str = "vehicles",
            reserved_until: datetime | None = None) -> event_pb2.Event:  # fmt: skip
    """A ResponseToRequestResource accepting the request: reserves `quantity` of `item`."""
    event, line = _resource(
        "resource.response", thread, "response_to_request_resource", suffix="response"
    )
    _answer(line, item, owner, quantity, unit)
    if reserved_until is not None:
        line.reserved_until.FromDatetime(reserved_until)
    return checked(event)


def requisition(thread: str, quantity: float, *, unit: str = "vehicles") -> event_pb2.Event:
    event, line = _resource("resource.requisition", thread, "requisition_resource", suffix="order")
    line.assignment.quantity.value = quantity
    line.assignment.quantity.unit = unit
    event.resource.funding.add(fund_code="EMERGENCY-2026")
    return checked(event)


def commit(thread: str, item: str, owner: str, quantity: float, *, unit: str = "vehicles",
           plane: event_pb2.Plane.ValueType = ACTUAL) -> event_pb2.Event:  # fmt: skip
    event, line = _resource("resource.commit", thread, "commit_resource", suffix="commit",
                            plane=plane)  # fmt: skip
    _answer(line, item, owner, quantity, unit)
    return checked(event)


def deployed(thread: str) -> event_pb2.Event:
    event, line = _resource(
        "resource.status_report", thread, "report_resource_deployment_status", suffix="status"
    )
    line.resource.status.deployment_status = resource_pb2.DEPLOYMENT_STATUS_ON_SCENE
    line.resource.status.availability = "on scene"
    return checked(event)


def release(thread: str) -> event_pb2.Event:
    event, _ = _resource("resource.release", thread, "release_resource", suffix="release")
    return checked(event)


def recall(thread: str, recalled: event_pb2.Event) -> event_pb2.Event:
    """An EDXL-RM MessageRecall (Cancel) of the message `recalled` of exchange `thread`: its
    body again (the lines it recalls), with the recall."""
    event = envelope("resource.recall")
    message = event.resource
    message.CopyFrom(recalled.resource)
    message.message_id = f"{thread}-recall-{uuid.uuid4().hex[:8]}"
    message.recall.recall_message_id = recalled.resource.message_id
    message.recall.type = resource_pb2.RECALL_TYPE_CANCEL
    return checked(event)


# --- what the gateway stored -------------------------------------------------------------------


async def stored_events(nats_url: str) -> list[event_pb2.Event]:
    """Every event of the events stream, in stream order."""
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(subjects.EVENTS_STREAM)
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                message = await js.get_msg(subjects.EVENTS_STREAM, sequence)
            except NotFoundError:
                continue
            assert message.data is not None
            found.append(event_pb2.Event.FromString(message.data))
        return found
    finally:
        await connection.close()


async def kv_entries(nats_url: str, prefix: str) -> dict[str, bytes]:
    """The aggregates bucket's live entries under `prefix` (ending in "."), or the one key.
    Listed from the bucket stream's subjects: nats-py's key listing (a watch) can end before
    the last key arrives."""
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        bucket = await js.key_value(AGGREGATES_BUCKET)
        pattern = f"$KV.{AGGREGATES_BUCKET}.{prefix}" + (">" if prefix.endswith(".") else "")
        info = await js.stream_info(f"KV_{AGGREGATES_BUCKET}", subjects_filter=pattern)
        found = {}
        for subject in sorted(info.state.subjects or {}):
            key = subject.removeprefix(f"$KV.{AGGREGATES_BUCKET}.")
            try:
                entry = await bucket.get(key)
            except nats.js.errors.KeyNotFoundError:  # deleted: its marker is still listed
                continue
            if entry.value:
                found[key] = entry.value
        return found
    finally:
        await connection.close()


async def aggregate(
    nats_url: str, lifecycle: str, key: str, plane: str = "actual"
) -> AggregateState:
    """The aggregate's state in the key-value bucket (`plane`: actual, exercise or test)."""
    kv_key = AggregateRef(lifecycle, plane, key).kv_key
    entries = await kv_entries(nats_url, kv_key)
    assert kv_key in entries, f"no aggregate {kv_key}"
    return AggregateState.from_bytes(entries[kv_key])


async def item_line(nats_url: str, key: ItemKey) -> ItemLine:
    kv_key = ledger_codec.kv_key(key)
    entries = await kv_entries(nats_url, kv_key)
    assert kv_key in entries, f"no ledger line {kv_key}"
    return ledger_codec.decode(entries[kv_key])
