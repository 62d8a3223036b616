"""Field paths over `Event` and redaction: withholding fields from a copy of an event.

A path names protobuf fields from `Event` down, e.g. "incident.reporter.phone". A path through a
repeated message field ("resource.contacts.phone") means that field in every element; a path
ending on a message field withholds the whole sub-message. Paths are checked against the
descriptors, so a policy cannot name a field the schema does not have.

Some messages keep part of themselves as received beside the parsed fields (fields marked
`(dutylink.v1.verbatim)`, e.g. a warning's CAP XML): withholding any field of such a message, or
below it, withholds those copies too, or the receiver would read there what was withheld.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from dutylink.v1 import event_pb2, options_pb2

EVENT = event_pb2.Event.DESCRIPTOR


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return dict(descriptor.fields_by_name)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def field_path_error(path: str, root: Descriptor = EVENT) -> str | None:
    """Why `path` names no field below `root`; None when it does."""
    descriptor: Descriptor | None = root
    previous: FieldDescriptor | None = None
    for part in path.split("."):
        if descriptor is None:
            assert previous is not None
            kind = "an enum" if previous.enum_type is not None else "a scalar"
            return (
                f"unknown field path '{path}': '{previous.name}' is {kind} field, "
                f"it has no field '{part}'"
            )
        fields = _fields(descriptor)
        field = fields.get(part)
        if field is None:
            hint = difflib.get_close_matches(part, fields, n=1)
            return f"unknown field path '{path}': {descriptor.name} has no field '{part}'" + (
                f" (did you mean '{hint[0]}'?)" if hint else f" (fields: {', '.join(fields)})"
            )
        if _is_map(field):
            return f"field path '{path}': map field '{part}' cannot be redacted into"
        previous, descriptor = field, field.message_type
    return None


@functools.cache
def _checked(path: str) -> tuple[str, ...]:
    if error := field_path_error(path):
        raise ValueError(error)
    return tuple(path.split("."))


@functools.cache
def verbatim_copies(path: str) -> tuple[str, ...]:
    """The fields that keep, as received, a message on the way to `path` (the copies that may
    hold what `path` holds): "warning.cap_xml" for "warning.infos.contact"."""
    parts = _checked(path)
    copies = []
    descriptor: Descriptor | None = EVENT
    for depth, part in enumerate(parts):
        assert descriptor is not None  # _checked: only the last part may be a scalar
        copies += [
            ".".join((*parts[:depth], field.name))
            for field in descriptor.fields
            if field.GetOptions().Extensions[options_pb2.verbatim] and field.name != part
        ]
        descriptor = descriptor.fields_by_name[part].message_type
    return tuple(copies)


def covers(ancestor: str, path: str) -> bool:
    """True when `ancestor` is `path` or a message field that contains it."""
    return path == ancestor or path.startswith(ancestor + ".")


def minimal_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """Sorted, without duplicates and without paths inside another path of the set: withholding
    "incident.reporter" already withholds "incident.reporter.name"."""
    unique = sorted(set(paths))
    return tuple(p for p in unique if not any(covers(a, p) for a in unique if a != p))


def sensitive_fields(root: Descriptor = EVENT) -> Iterator[tuple[str, int]]:
    """Every path below `root` to a field marked `(dutylink.v1.sensitivity)`, with the marking."""

    def walk(
        descriptor: Descriptor, prefix: str, seen: frozenset[str]
    ) -> Iterator[tuple[str, int]]:
        for field in descriptor.fields:
            path = prefix + field.name
            marking = field.GetOptions().Extensions[options_pb2.sensitivity]
            if marking:
                yield path, marking
            nested = field.message_type
            # Only our own messages carry markings; `seen` stops on recursive message types.
            if (
                nested is not None
                and nested.full_name.startswith("dutylink.")
                and nested.full_name not in seen
            ):
                yield from walk(nested, path + ".", seen | {nested.full_name})

    yield from walk(root, "", frozenset({root.full_name}))


def _present(message: Message, field: FieldDescriptor) -> bool:
    value = getattr(message, field.name)
    if field.is_repeated:
        return len(value) > 0
    if field.has_presence:
        return message.HasField(field.name)
    return bool(value != field.default_value)


# A set of paths as a tree of field names, each path ending on None: one walk of a message
# visits only what is set, however many paths there are (sealing names some 70).
_Tree = dict[str, "_Tree | None"]


@functools.lru_cache(maxsize=1024)
def _tree(paths: tuple[str, ...]) -> _Tree:
    """The tree of the minimal set of `paths` (never to be changed: it is shared)."""
    tree: _Tree = {}
    for path in minimal_paths(paths):
        *parents, last = _checked(path)
        node = tree
        for part in parents:
            below = node.setdefault(part, {})
            assert below is not None  # minimal: no path ends where another goes on
            node = below
        node[last] = None
    return tree


def _clear(message: Message, tree: _Tree, prefix: str, withheld: set[str]) -> None:
    """Clear in `message` every field `tree` names (in every element of repeated fields on the
    way), adding to `withheld` the path of each that held something."""
    for name, below in tree.items():
        field = cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[name])
        if below is None:
            if _present(message, field):
                message.ClearField(name)
                withheld.add(prefix + name)
        elif field.is_repeated:
            for element in getattr(message, name):
                _clear(element, below, f"{prefix}{name}.", withheld)
        # Descend only into sub-messages that are set: reading an unset one is harmless, but
        # there is nothing in it to withhold.
        elif message.HasField(name):
            _clear(getattr(message, name), below, f"{prefix}{name}.", withheld)


def redact(event: event_pb2.Event, paths: Sequence[str]) -> tuple[event_pb2.Event, tuple[str, ...]]:
    """A copy of `event` with `paths` cleared (and the verbatim copies that may hold them), and
    the paths that held a value and were withheld (sorted; a path covered by another listed
    path is reported through that one). The input
    is never changed. A path the schema does not have raises ValueError: policies are
    validated on load, so that is a caller's bug."""
    copy = event_pb2.Event()
    copy.CopyFrom(event)
    cleared = _cleared(tuple(paths))
    withheld: set[str] = set()
    _clear(copy, _tree(cleared), "", withheld)
    return copy, tuple(path for path in cleared if path in withheld)


@functools.lru_cache(maxsize=1024)
def _cleared(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The minimal paths `redact` clears for `paths`: they and the verbatim copies that may
    hold them. Worked out once per set (a policy has a few; sealing has one)."""
    return minimal_paths([*paths, *(c for p in paths for c in verbatim_copies(p))])


def _copy(source: Message, target: Message, tree: _Tree, unset_too: bool) -> None:
    """Copy the values `tree` names from `source` into `target`, element by element through
    repeated fields (positions kept: element i of the source goes into element i of the
    target, added when the target has fewer). `unset_too`: an optional scalar the source
    leaves unset is set to its default in the target."""
    for name, below in tree.items():
        field = cast(FieldDescriptor, source.DESCRIPTOR.fields_by_name[name])
        value = getattr(source, name)
        if below is None:
            if field.is_repeated:
                getattr(target, name).MergeFrom(value)
            elif field.message_type is not None:
                if source.HasField(name):
                    getattr(target, name).CopyFrom(value)
            elif unset_too or not field.has_presence or source.HasField(name):
                setattr(target, name, value)
        elif field.is_repeated:
            elements = getattr(target, name)
            while len(elements) < len(value):
                elements.add()
            for element, into in zip(value, elements, strict=False):
                _copy(element, into, below, unset_too)
        elif source.HasField(name):
            nested = getattr(target, name)
            nested.SetInParent()
            _copy(value, nested, below, unset_too)


def project(
    event: event_pb2.Event, paths: Sequence[str], *, unset_too: bool = False
) -> event_pb2.Event:
    """An Event holding only the values at `paths` of `event` (repeated fields keep their
    element positions): what `redact` would withhold, on its own. `unset_too`: unset optional
    scalars on the paths are set to their defaults (the encoding commitments have always
    used); otherwise presence is kept as it is, so that `graft` restores the event exactly."""
    projection = event_pb2.Event()
    _copy(event, projection, _tree(tuple(paths)), unset_too)
    return projection


def graft(event: event_pb2.Event, projection: event_pb2.Event, paths: Sequence[str]) -> None:
    """Put back into `event` (in place) the values `project` took out at `paths`: the inverse
    of `redact` for the event those values came from."""
    _copy(projection, event, _tree(tuple(paths)), False)
