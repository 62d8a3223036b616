"""The file-drop adapter's outbound mapping, pure: an event as a JSON file or a one-row CSV
file (its inbound side is the declarative `dutylink.adapters.mapping.JsonMapping`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from dutylink.adapters.mapping import event_to_json
from dutylink.adapters.records import OutboundMapping, OutboundRecord, outbox_name
from dutylink.v1 import event_pb2


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def outbound_mapping(
    file_format: str, fields: Mapping[str, str], from_agencies: Sequence[str] = ()
) -> OutboundMapping:
    """An event as a JSON file (the whole event, or `fields`) or a one-row CSV file with a
    header (columns = `fields`, in order; absent values are empty cells)."""

    def to_record(event: event_pb2.Event) -> OutboundRecord | None:
        if from_agencies and event.source not in from_agencies:
            return None
        if file_format == "jsonl":
            body = event_to_json(event, fields or None)
            return OutboundRecord(outbox_name(event, ".json"), body, "application/json")
        selected = json.loads(event_to_json(event, fields))
        text = io.StringIO(newline="")
        writer = csv.writer(text, lineterminator="\r\n")  # RFC 4180
        writer.writerow(fields)
        writer.writerow(_cell(selected[key]) if key in selected else "" for key in fields)
        return OutboundRecord(outbox_name(event, ".csv"), text.getvalue().encode(), "text/csv")

    return to_record
