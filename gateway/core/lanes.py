"""Priority lanes: which events overtake routine traffic in every subscriber's queue.

An event is urgent when its sender marks it Flash, when a warning carries CAP urgency
Immediate or severity Extreme in any of its infos, or when an incident is graded level I
(特别重大). Urgent events are stored under their subject with an `urgent` token appended
(gateway.core.subjects), so each subscription reads them through a second consumer of its own
and the gateway fetches that one first: a backlog of sensor readings never delays an
evacuation warning, while each lane keeps its order and its at-least-once delivery. Pure.
"""

from __future__ import annotations

import enum

from dutylink.v1 import event_pb2, incident_pb2, warning_pb2


class Lane(enum.Enum):
    ROUTINE = "routine"
    URGENT = "urgent"


# Fetched first: the order in which a subscription's lanes are read.
LANES_FIRST_TO_LAST = (Lane.URGENT, Lane.ROUTINE)


def lane_of(event: event_pb2.Event) -> Lane:
    """The lane `event` travels in (see the module docstring for the rule)."""
    if event.priority == event_pb2.PRIORITY_FLASH:
        return Lane.URGENT
    payload = event.WhichOneof("payload")
    if payload == "warning" and any(
        info.urgency == warning_pb2.CAP_URGENCY_IMMEDIATE
        or info.severity == warning_pb2.CAP_SEVERITY_EXTREME
        for info in event.warning.infos
    ):
        return Lane.URGENT
    if (
        payload == "incident"
        and event.incident.severity == incident_pb2.INCIDENT_SEVERITY_EXTRAORDINARY
    ):
        return Lane.URGENT
    return Lane.ROUTINE
