"""What the schema docs read from a FileDescriptorSet: an index of its messages, enums and
comments, and options flattened to `path = value` lines.

The set is built by protoc with `--include_imports --include_source_info` (tools/gen_proto.py
builds it), so comments come from the .proto sources and every option is read from the
descriptors: protovalidate rules, `(dutylink.v1.sensitivity)` and any other extension, printed
generically so a new option shows up without a change here. Options are re-parsed in a pool
built from the set itself, so extensions the running process has not imported (a new one in the
schemas being rendered) are still decoded. Shared by the Markdown reference
(gateway.cli.schema_reference) and the AsyncAPI document (gateway.cli.asyncapi).

Pure: values in, values out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

EVENT_MESSAGE = "dutylink.v1.Event"

SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}
# SourceCodeInfo path components (descriptor.proto field numbers).
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE, FILE_EXTENSION, FILE_SYNTAX = 4, 5, 6, 7, 12
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE, SERVICE_METHOD = 2, 2

SourcePath = tuple[int, ...]  # a SourceCodeInfo location path


# --- option rendering ------------------------------------------------------------------------


def _scalar(descriptor: FieldDescriptor, value: Any) -> str:
    if descriptor.type == FieldDescriptor.TYPE_ENUM and descriptor.enum_type is not None:
        enum_value = descriptor.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return json.dumps(value.hex())
    return str(value)


def _name(descriptor: FieldDescriptor) -> str:
    return f"({descriptor.full_name})" if descriptor.is_extension else descriptor.name


def flatten(message: Message, prefix: str = "") -> list[str]:
    """Every set field of an options message as `path = value` lines, in field-number order
    (extensions by full name in parentheses). Repeated messages print one line each."""
    lines: list[str] = []
    for descriptor, value in sorted(message.ListFields(), key=lambda item: item[0].number):
        path = f"{prefix}.{_name(descriptor)}" if prefix else _name(descriptor)
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            items = list(value) if descriptor.is_repeated else [value]
            for item in items:
                if descriptor.is_repeated:
                    lines.append(f"{path} = {{{_inline(item)}}}")
                else:
                    lines.extend(flatten(item, path) or [f"{path} = {{}}"])
        elif descriptor.is_repeated:
            lines.append(f"{path} = [{', '.join(_scalar(descriptor, v) for v in value)}]")
        else:
            lines.append(f"{path} = {_scalar(descriptor, value)}")
    return lines


def _inline(message: Message) -> str:
    """`id: "x", expression: "..."`: a message on one line, strings JSON-quoted."""
    parts = []
    for descriptor, value in sorted(message.ListFields(), key=lambda item: item[0].number):
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            items = list(value) if descriptor.is_repeated else [value]
            text = ", ".join(f"{{{_inline(v)}}}" for v in items)
        else:
            items = list(value) if descriptor.is_repeated else [value]
            text = ", ".join(_scalar(descriptor, v) for v in items)
        parts.append(f"{_name(descriptor)}: {f'[{text}]' if descriptor.is_repeated else text}")
    return ", ".join(parts)


class OptionsParser:
    """Options messages of the set's own pool, so every extension in the set is decoded."""

    def __init__(self, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
        pool = descriptor_pool.DescriptorPool()
        for file in files:
            pool.Add(file)
        self._classes = message_factory.GetMessageClassesForFiles([f.name for f in files], pool)

    def parse(self, options: Message) -> Message:
        cls = self._classes[options.DESCRIPTOR.full_name]
        parsed: Message = cls.FromString(options.SerializeToString())
        return parsed


# --- the schema model ------------------------------------------------------------------------


@dataclass
class SchemaIndex:
    """What the renderer looks up by full name: messages, enums and where they are defined."""

    messages: dict[str, tuple[str, descriptor_pb2.DescriptorProto]] = field(default_factory=dict)
    enums: dict[str, tuple[str, descriptor_pb2.EnumDescriptorProto]] = field(default_factory=dict)
    comments: dict[tuple[str, SourcePath], str] = field(default_factory=dict)
    detached: dict[tuple[str, SourcePath], list[str]] = field(default_factory=dict)


def walk_messages(
    package: str, messages: Sequence[descriptor_pb2.DescriptorProto], path: SourcePath
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto, SourcePath]]:
    for i, message in enumerate(messages):
        name = f"{package}.{message.name}"
        here = (*path, i)
        yield name, message, here
        yield from walk_messages(name, message.nested_type, (*here, MESSAGE_NESTED))


def build_index(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> SchemaIndex:
    index = SchemaIndex()
    for file in files:
        for location in file.source_code_info.location:
            key = (file.name, tuple(location.path))
            if location.leading_comments:
                index.comments[key] = location.leading_comments
            if location.leading_detached_comments:
                index.detached[key] = list(location.leading_detached_comments)
        for enum in file.enum_type:
            index.enums[f"{file.package}.{enum.name}"] = (file.name, enum)
        for name, message, _ in walk_messages(file.package, file.message_type, (FILE_MESSAGE,)):
            index.messages[name] = (file.name, message)
            for enum in message.enum_type:
                index.enums[f"{name}.{enum.name}"] = (file.name, enum)
    return index


def is_map(index: SchemaIndex, type_name: str) -> bool:
    found = index.messages.get(type_name)
    return found is not None and found[1].options.map_entry


# --- comments --------------------------------------------------------------------------------


def paragraphs(comment: str) -> str:
    blocks = re.split(r"\n\s*\n", comment.strip("\n"))
    return "\n\n".join(" ".join(line.strip() for line in b.splitlines()) for b in blocks if b)
