"""The EDXL-RM resource line: one aggregate per line of an exchange, keyed by the exchange's
OriginatingMessageID and the line's ResourceInfoElementID (a reply's line is the line its
PrecedingResourceInfoElementID names). Pure: no I/O."""

from __future__ import annotations

from dutylink.catalogue import EventType
from dutylink.v1 import event_pb2, resource_pb2
from gateway.core.workflows.base import AggregateRef, Rules, plane_token


def line_key(originating_message_id: str, line: resource_pb2.ResourceInfo) -> str:
    answered = line.response.preceding_resource_info_element_id if line.HasField("response") else ""
    return f"{originating_message_id}/{answered or line.resource_info_element_id}"


def _refs(event: event_pb2.Event, event_type: EventType) -> list[AggregateRef]:
    if not event.HasField("resource") or event_type.lifecycle is None:
        return []
    message = event.resource
    kind = message.WhichOneof("kind")
    if kind is None:
        return []
    refs: dict[str, AggregateRef] = {}
    for line in getattr(message, kind).resource_infos:
        key = line_key(message.originating_message_id, line)
        outcome = None
        if line.HasField("response") and line.response.type:
            outcome = resource_pb2.ResponseType.Name(line.response.type).removeprefix(
                "RESPONSE_TYPE_"
            )
        refs.setdefault(
            key, AggregateRef(event_type.lifecycle, plane_token(event.plane), key, outcome)
        )
    return list(refs.values())


RESOURCE_LINE = Rules(refs=_refs)
