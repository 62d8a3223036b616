"""Declarative JSON mappings: department records <-> events, configured per department
without code (used by the webhook and file-drop adapters and the dispatch feeds).

In an adapter's config file:

    [options.mapping]
    system = "cad110"                  # prefix of event ids: "<system>:<record id>"
    id = "incident_no"                 # the record's own id (dotted path into the JSON)
    type = "incident.reported"         # the event type, or take it from a field:
    type_from = "status"               #   its value, looked up in [options.mapping.types]
    time = "call_time"                 # the event time (ISO 8601); default: when read

    [options.mapping.types]            # status value -> event type ("" to skip the record)
    NEW = "incident.reported"
    CLOSED = "incident.closed"

    [options.mapping.fields]           # event field path = record path
    "incident.incident_id" = "incident_no"
    "incident.title" = "summary"
    "incident.location.address" = "address"

    [options.mapping.constants]        # event field path = fixed value
    classification = "INTERNAL"
    plane = "ACTUAL"
    "jurisdiction.division_code" = "310115"

    [options.mapping.values."incident.severity"]   # record value -> field value, per field
    "1" = "MINOR"
    "2" = "MAJOR"

Values are converted to the field's type: text, whole and decimal numbers, true/false, enum
values by name (with or without the enum's prefix: "MAJOR" for INCIDENT_SEVERITY_MAJOR),
timestamps from ISO 8601 (an offset is required), repeated scalars from a JSON list or a
comma-separated text. A record that lacks a mapped value, or holds one that does not convert,
is `Rejected` with the field and the reason; the gateway validates the rest.

`event_to_json` is the outbound direction: the event as protobuf JSON, or only the fields an
`[options.outbound.fields]` table names (JSON key = event field path).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from dutylink.adapters.options import OPTIONS, AdapterConfigError, Expect, Table, Text, read
from dutylink.adapters.records import Record, Rejected, event_id_for
from dutylink.v1 import event_pb2


class MappingError(AdapterConfigError):
    """The mapping in the config is wrong (named by its key); found when the adapter starts."""


def _lookup(document: Any, path: str) -> Any:
    """The value at a dotted path ("caller.phone", "units.0.id"), or None if absent."""
    value = document
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def _field_chain(path: str, where: str) -> list[FieldDescriptor]:
    descriptor: Descriptor | None = event_pb2.Event.DESCRIPTOR
    chain: list[FieldDescriptor] = []
    for part in path.split("."):
        if descriptor is None:
            raise MappingError(f"{where}: '{path}': '{chain[-1].name}' has no fields")
        found = descriptor.fields_by_name.get(part)
        if found is None:
            raise MappingError(f"{where}: '{path}': {descriptor.name} has no field '{part}'")
        if found.is_repeated and found.message_type is not None:
            raise MappingError(f"{where}: '{path}': repeated message field '{part}' cannot be mapped by path")  # fmt: skip
        chain.append(found)
        descriptor = found.message_type
    last = chain[-1]
    if last.message_type is not None and last.message_type.full_name != "google.protobuf.Timestamp":
        raise MappingError(f"{where}: '{path}' is a message; map its fields")
    return chain


def _enum_value(target: FieldDescriptor, value: Any) -> int:
    enum = target.enum_type
    assert enum is not None
    text = str(value).strip().upper()
    prefix = "".join(
        ("_" + c if c.isupper() and i else c.upper()) for i, c in enumerate(enum.name)
    ).upper()
    for candidate in (text, f"{prefix}_{text}"):
        if candidate in enum.values_by_name:
            return int(enum.values_by_name[candidate].number)
    names = ", ".join(n.removeprefix(prefix + "_") for n in enum.values_by_name if not n.endswith("_UNSPECIFIED"))  # fmt: skip
    raise ValueError(f"{value!r} is not one of {names}")


def _scalar(target: FieldDescriptor, value: Any) -> Any:
    if target.enum_type is not None:
        return _enum_value(target, value)
    kind = target.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        return str(value)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{value!r} is not true or false")
    if kind in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return float(value)
    return int(str(value).strip())


def _timestamp(value: Any) -> timestamp_pb2.Timestamp:
    moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def set_path(event: event_pb2.Event, chain: Sequence[FieldDescriptor], value: Any) -> None:
    """Set the field at `chain` in `event`, converting `value`; ValueError if it does not fit."""
    message: Message = event
    for step in chain[:-1]:
        message = getattr(message, step.name)
    target = chain[-1]
    if target.message_type is not None:  # a Timestamp
        getattr(message, target.name).CopyFrom(_timestamp(value))
    elif target.is_repeated:
        items = (
            value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
        )
        getattr(message, target.name).extend(_scalar(target, item) for item in items)
    else:
        setattr(message, target.name, _scalar(target, value))


Paths = Annotated[dict[str, str], Expect("a table of strings")]


@pydantic_dataclass(frozen=True, config=OPTIONS)
class MappingOptions:
    """A record (JSON) -> an event, declared."""

    system: Text
    """Prefix of event ids: "<system>:<record id>"."""
    id: Text
    """The record's own id (a dotted path into the JSON): a resent record is a duplicate."""
    type: str = ""
    """The event type; or take it from a field with type_from."""
    type_from: str = ""
    """The record's field whose value is looked up in [options.mapping.types]."""
    types: Paths = Field(default_factory=dict)
    """[options.mapping.types]: record value -> event type ("" skips the record)."""
    time: str = ""
    """The event time (ISO 8601); default: when read."""
    fields: Paths = Field(default_factory=dict)
    """[options.mapping.fields]: event field path = record path."""
    constants: Table = Field(default_factory=dict)
    """[options.mapping.constants]: event field path = fixed value."""
    values: Annotated[dict[str, dict[str, Any]], Expect("a table of tables")] = Field(default_factory=dict)  # fmt: skip
    """[options.mapping.values."<event field path>"]: record value -> field value."""


@dataclass(frozen=True)
class JsonMapping:
    system: str
    id_path: str
    event_type: str = ""
    type_from: str = ""
    types: Mapping[str, str] = field(default_factory=dict)
    time_path: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)  # event path -> record path
    constants: Mapping[str, Any] = field(default_factory=dict)  # event path -> value
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per event path

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str = "[options.mapping]") -> JsonMapping:  # fmt: skip
        """The mapping of an [options.mapping] table, checked against the event's fields."""
        try:
            declared = read(MappingOptions, options, where)
        except AdapterConfigError as error:
            raise MappingError(str(error)) from None
        if bool(declared.type) == bool(declared.type_from):
            raise MappingError(f"{where}: give exactly one of 'type' or 'type_from' (with [types])")
        mapping = cls(
            system=declared.system,
            id_path=declared.id,
            event_type=declared.type,
            type_from=declared.type_from,
            types=declared.types,
            time_path=declared.time,
            fields=declared.fields,
            constants=declared.constants,
            values=declared.values,
        )
        for path in (*mapping.fields, *mapping.constants):
            _field_chain(path, where)
        for path in mapping.values:
            if path not in mapping.fields:
                raise MappingError(f"{where}: values.\"{path}\": no [fields] entry maps '{path}'")
        return mapping

    def to_events(self, record: Record) -> list[event_pb2.Event]:
        """The record's event (none when its type maps to ""); Rejected names what is wrong."""
        try:
            document = json.loads(record.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise Rejected(f"not JSON: {error}") from None
        if not isinstance(document, dict):
            raise Rejected("not a JSON object")
        record_id = _lookup(document, self.id_path)
        if record_id in (None, ""):
            raise Rejected(f"no record id at '{self.id_path}'")
        event_type = self.event_type
        if self.type_from:
            status = _lookup(document, self.type_from)
            if str(status) not in self.types:
                raise Rejected(f"'{self.type_from}' is {status!r}: not one of {', '.join(self.types)}")  # fmt: skip
            event_type = self.types[str(status)]
            if not event_type:
                return []
        event = event_pb2.Event(id=event_id_for(self.system, str(record_id)), type=event_type)
        problems = []
        moment = _lookup(document, self.time_path) if self.time_path else None
        try:
            event.time.CopyFrom(_timestamp(moment) if moment is not None else _now())
        except ValueError as error:
            problems.append(f"time ('{self.time_path}'): {error}")
        assignments: list[tuple[str, Any]] = list(self.constants.items())
        for target, source in self.fields.items():
            value = _lookup(document, source)
            if value is None or value == "":
                continue  # absent values stay unset; required ones are refused by the gateway
            translate = self.values.get(target)
            if translate is not None:
                if str(value) not in translate:
                    problems.append(f"{target} ('{source}'): {value!r} is not one of {', '.join(translate)}")  # fmt: skip
                    continue
                value = translate[str(value)]
            assignments.append((target, value))
        for target, value in assignments:
            try:
                set_path(event, _field_chain(target, "mapping"), value)
            except (ValueError, TypeError) as error:
                problems.append(f"{target}: {error}")
        if problems:
            raise Rejected("; ".join(problems))
        if not event.subject:
            event.subject = str(record_id)
        return [event]


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def event_to_json(event: event_pb2.Event, fields: Mapping[str, str] | None = None) -> bytes:
    """The event as protobuf JSON (camelCase names, enums by name), or only `fields`
    (output key -> event field path; absent fields are left out)."""
    whole = json_format.MessageToDict(event, preserving_proto_field_name=True)
    if not fields:
        return json.dumps(whole, ensure_ascii=False).encode()
    selected = {}
    for key, path in fields.items():
        value = _lookup(whole, path)
        if value is not None:
            selected[key] = value
    return json.dumps(selected, ensure_ascii=False).encode()
