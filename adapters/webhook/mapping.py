"""The webhook adapter's outbound mapping, pure: an event as the JSON body of a POST (its
inbound side is the declarative `dutylink.adapters.mapping.JsonMapping`)."""

from __future__ import annotations

from collections.abc import Mapping

from dutylink.adapters.mapping import event_to_json
from dutylink.adapters.records import OutboundMapping, OutboundRecord
from dutylink.v1 import event_pb2

JSON = "application/json"


def outbound_mapping(fields: Mapping[str, str], ignore_sources: frozenset[str]) -> OutboundMapping:
    def to_record(event: event_pb2.Event) -> OutboundRecord | None:
        if event.source in ignore_sources:
            return None
        return OutboundRecord(event.id, event_to_json(event, fields or None), JSON)

    return to_record
