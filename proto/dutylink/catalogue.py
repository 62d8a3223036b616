"""The event-type catalogue as values: every event type, its family, the lifecycle transition it
performs, who may perform it and the fields it must carry.

The data is `catalogue.toml` beside this module (shipped with the package); `load_catalogue()`
reads it, `parse_catalogue(text)` turns any such text into a `Catalogue` and checks it against
the schemas (a family is a field of Event's payload oneof; a required field path names a field).
Errors name the entry at fault. Hand-written; it sits with the generated schemas at the bottom
layer so the gateway, the policies and the SDK can all read it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from dutylink.v1 import event_pb2

# The pseudo-state of an aggregate that does not exist yet: "from none" opens one.
NONE = "none"
# A `to` that leaves the aggregate in the state it is in.
STAYS = "stays"
ROLES = (
    "reporter",
    "assigned",
    "lead",
    "handler",
    "command_centre",
    "supervisor",
    "any_party",
    "any",
)
# Roles an agency holds by standing rather than by its part in one aggregate; the catalogue's
# [standing_roles] table names the policy role (policies/agencies.yaml) that grants each.
STANDING_ROLES = ("command_centre", "supervisor")
_TYPE_KEYS = frozenset(
    {
        "type",
        "family",
        "description",
        "lifecycle",
        "from",
        "to",
        "stays_in",
        "outcomes",
        "opens",
        "roles",
        "not_roles",
        "required",
    }
)
_LIFECYCLE_KEYS = frozenset({"description", "key", "states", "initial", "terminal"})


class CatalogueError(ValueError):
    """The catalogue text is malformed or disagrees with the schemas; the message names the
    entry at fault."""


@dataclass(frozen=True)
class Lifecycle:
    """A state machine per aggregate; `initial` are the states it may be opened in, `terminal`
    those where its loop is finished."""

    name: str
    description: str
    key: str
    states: tuple[str, ...]
    initial: tuple[str, ...]
    terminal: tuple[str, ...]


@dataclass(frozen=True)
class Transition:
    """What a type does to an aggregate: from `from_states` it moves to `to_state` (or to
    `outcomes[outcome]`); in `stays_in` it is accepted without moving; `opens` is the state of
    an aggregate of its own that it also opens."""

    from_states: tuple[str, ...]
    to_state: str | None
    stays_in: tuple[str, ...] = ()
    outcomes: Mapping[str, str] = field(default_factory=dict)
    opens: str | None = None

    def accepts(self, state: str) -> bool:
        return state in self.from_states or state in self.stays_in

    def target(self, state: str, outcome: str | None = None) -> str:
        """The state after this transition from `state` (which it accepts)."""
        if state in self.stays_in or self.to_state is None:
            return state
        if outcome is not None and outcome in self.outcomes:
            return self.outcomes[outcome]
        return self.to_state

    def sources(self) -> tuple[str, ...]:
        """Every state it is accepted in, moving or not."""
        return self.from_states + tuple(s for s in self.stays_in if s not in self.from_states)


@dataclass(frozen=True)
class EventType:
    """One catalogued event type. `lifecycle` and `transition` are None for informational
    types, which move no aggregate."""

    type: str
    family: str
    description: str
    lifecycle: str | None
    transition: Transition | None
    roles: tuple[str, ...]
    not_roles: tuple[str, ...]
    required_fields: tuple[str, ...]

    def missing_fields(self, event: event_pb2.Event) -> list[str]:
        """The required field paths `event` leaves empty."""
        return [path for path in self.required_fields if not field_is_set(event, path)]

    def as_row(self) -> dict[str, Any]:
        """The type as `dutylink catalogue list --json` prints it."""
        transition = self.transition
        return {
            "type": self.type,
            "family": self.family,
            "lifecycle": self.lifecycle,
            "from_states": list(transition.sources()) if transition else [],
            "to_state": (transition.to_state or STAYS) if transition else None,
            "roles": list(self.roles),
            "required_fields": list(self.required_fields),
        }


@dataclass(frozen=True)
class Catalogue:
    """Every lifecycle and event type, in the order the catalogue declares them."""

    version: int
    lifecycles: tuple[Lifecycle, ...]
    types: tuple[EventType, ...]
    # Catalogue standing role -> the policy role that grants it ("command_centre" -> "command").
    standing_roles: Mapping[str, str] = field(default_factory=dict)
    _by_type: dict[str, EventType] = field(init=False, repr=False, compare=False)
    _by_lifecycle: dict[str, Lifecycle] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_type", {t.type: t for t in self.types})
        object.__setattr__(self, "_by_lifecycle", {lc.name: lc for lc in self.lifecycles})

    def get(self, event_type: str) -> EventType | None:
        return self._by_type.get(event_type)

    def lifecycle(self, name: str) -> Lifecycle:
        return self._by_lifecycle[name]

    def types_of(
        self, *, family: str | None = None, lifecycle: str | None = None
    ) -> list[EventType]:
        return [
            t
            for t in self.types
            if (family is None or t.family == family)
            and (lifecycle is None or t.lifecycle == lifecycle)
        ]

    def standing_roles_of(self, policy_roles: frozenset[str]) -> frozenset[str]:
        """The catalogue's standing roles that an agency holding `policy_roles` has."""
        return frozenset(role for role, granted_by in self.standing_roles.items()
                         if granted_by in policy_roles)  # fmt: skip

    def families(self) -> list[str]:
        return list(dict.fromkeys(t.family for t in self.types))


def field_is_set(message: Message, path: str) -> bool:
    """Whether the field at dotted `path` holds a non-default value (a repeated field: at least
    one item; a path through a repeated message field: set in any item)."""
    head, _, rest = path.partition(".")
    descriptor = message.DESCRIPTOR.fields_by_name[head]
    if descriptor.is_repeated:
        items = getattr(message, head)
        if not rest:
            return len(items) > 0
        return any(field_is_set(item, rest) for item in items)
    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        if not message.HasField(head):
            return False
        return True if not rest else field_is_set(getattr(message, head), rest)
    if descriptor.containing_oneof is not None or descriptor.has_presence:
        return message.HasField(head)
    return bool(getattr(message, head))


def load_catalogue() -> Catalogue:
    """The catalogue shipped with the package (catalogue.toml beside this module)."""
    return _load_packaged()


@cache
def _load_packaged() -> Catalogue:
    # Beside this module, not resources.files("dutylink"): dutylink is a namespace package (two
    # distributions fill it), which an editable install gives a path that is not a directory.
    text = Path(__file__).with_name("catalogue.toml").read_text(encoding="utf-8")
    return parse_catalogue(text)


def parse_catalogue(text: str, event: Descriptor = event_pb2.Event.DESCRIPTOR) -> Catalogue:
    """Parse and check catalogue TOML text against the `event` message's descriptor."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CatalogueError(f"catalogue: not valid TOML: {error}") from None
    unknown = set(data) - {"version", "standing_roles", "lifecycles", "types"}
    if unknown:
        raise CatalogueError(f"catalogue: unknown top-level keys {sorted(unknown)}")
    version = data.get("version")
    if not isinstance(version, int):
        raise CatalogueError("catalogue: 'version' must be an integer")
    raw_lifecycles = data.get("lifecycles", {})
    if not isinstance(raw_lifecycles, dict):
        raise CatalogueError("catalogue: 'lifecycles' must be a table of lifecycles")
    lifecycles = tuple(_lifecycle(name, body) for name, body in raw_lifecycles.items())
    by_name = {lc.name: lc for lc in lifecycles}
    raw_types = data.get("types", [])
    if not isinstance(raw_types, list):
        raise CatalogueError("catalogue: 'types' must be an array of tables ([[types]])")
    families = [f.name for f in event.oneofs_by_name["payload"].fields]
    types: list[EventType] = []
    seen: set[str] = set()
    for position, body in enumerate(raw_types, start=1):
        entry = _event_type(position, body, by_name, families, event)
        if entry.type in seen:
            raise CatalogueError(f"type '{entry.type}': declared twice")
        seen.add(entry.type)
        types.append(entry)
    standing = _standing_roles(data.get("standing_roles", {}))
    return Catalogue(version=version, lifecycles=lifecycles, types=tuple(types),
                     standing_roles=standing)  # fmt: skip


def _standing_roles(body: object) -> dict[str, str]:
    where = "standing_roles"
    if not isinstance(body, dict):
        raise CatalogueError(f"catalogue: '{where}' must be a table of role = policy role")
    unknown = set(body) - set(STANDING_ROLES)
    if unknown:
        raise CatalogueError(f"catalogue: {where}: {sorted(unknown)} are not standing roles "
                             f"(expected some of {', '.join(STANDING_ROLES)})")  # fmt: skip
    return {role: _text(where, role, granted_by) for role, granted_by in body.items()}


def _strings(where: str, key: str, value: object, *, allow_empty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogueError(f"{where}: '{key}' must be a list of non-empty strings")
    if not allow_empty and not value:
        raise CatalogueError(f"{where}: '{key}' must not be empty")
    if len(set(value)) != len(value):
        raise CatalogueError(f"{where}: '{key}' lists a value twice")
    return tuple(value)


def _text(where: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"{where}: '{key}' must be a non-empty string")
    return value


def _lifecycle(name: str, body: object) -> Lifecycle:
    where = f"lifecycle '{name}'"
    if not isinstance(body, dict):
        raise CatalogueError(f"{where}: must be a table")
    unknown = set(body) - _LIFECYCLE_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    states = _strings(where, "states", body.get("states"), allow_empty=False)
    if NONE in states or STAYS in states:
        raise CatalogueError(f"{where}: '{NONE}' and '{STAYS}' are reserved, not state names")
    initial = _strings(where, "initial", body.get("initial"), allow_empty=False)
    terminal = _strings(where, "terminal", body.get("terminal", []))
    for key, listed in (("initial", initial), ("terminal", terminal)):
        _known_states(where, key, listed, states)
    return Lifecycle(
        name=name,
        description=_text(where, "description", body.get("description")),
        key=_text(where, "key", body.get("key")),
        states=states,
        initial=initial,
        terminal=terminal,
    )


def _known_states(where: str, key: str, listed: Iterable[str], states: Sequence[str]) -> None:
    for state in listed:
        if state not in states:
            raise CatalogueError(
                f"{where}: '{key}' names unknown state '{state}' (states: {', '.join(states)})"
            )


def _event_type(
    position: int,
    body: object,
    lifecycles: Mapping[str, Lifecycle],
    families: Sequence[str],
    event: Descriptor,
) -> EventType:
    if not isinstance(body, dict):
        raise CatalogueError(f"types entry {position}: must be a table")
    name = body.get("type")
    if not isinstance(name, str) or not name:
        raise CatalogueError(f"types entry {position}: 'type' is missing")
    where = f"type '{name}'"
    unknown = set(body) - _TYPE_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    family = _text(where, "family", body.get("family"))
    if family not in families:
        raise CatalogueError(
            f"{where}: family '{family}' is no field of Event's payload oneof "
            f"(one of {', '.join(families)})"
        )
    prefix, dot, rest = name.partition(".")
    if prefix != family or not dot or not rest:
        raise CatalogueError(f"{where}: a type is '<family>.<name>' with family '{family}'")
    roles = _strings(where, "roles", body.get("roles"), allow_empty=False)
    not_roles = _strings(where, "not_roles", body.get("not_roles", []))
    for role in (*roles, *not_roles):
        if role not in ROLES:
            raise CatalogueError(f"{where}: unknown role '{role}' (roles: {', '.join(ROLES)})")
    required = _strings(where, "required", body.get("required", []))
    for path in required:
        problem = _path_error(event, path)
        if problem:
            raise CatalogueError(f"{where}: required field '{path}' {problem}")
    lifecycle_name = body.get("lifecycle")
    transition_keys = {"from", "to", "stays_in", "outcomes", "opens"} & set(body)
    if lifecycle_name is None:
        if transition_keys:
            raise CatalogueError(
                f"{where}: {sorted(transition_keys)} need a 'lifecycle' (informational types have none)"
            )
        transition = None
    else:
        if lifecycle_name not in lifecycles:
            raise CatalogueError(
                f"{where}: unknown lifecycle '{lifecycle_name}' "
                f"(lifecycles: {', '.join(lifecycles)})"
            )
        transition = _transition(where, body, lifecycles[lifecycle_name])
    return EventType(
        type=name,
        family=family,
        description=_text(where, "description", body.get("description")),
        lifecycle=lifecycle_name,
        transition=transition,
        roles=roles,
        not_roles=not_roles,
        required_fields=required,
    )


def _transition(where: str, body: Mapping[str, Any], lifecycle: Lifecycle) -> Transition:
    states = lifecycle.states
    from_states = _strings(where, "from", body.get("from", []))
    stays_in = _strings(where, "stays_in", body.get("stays_in", []))
    _known_states(where, "from", (s for s in from_states if s != NONE), states)
    _known_states(where, "stays_in", stays_in, states)
    to = _text(where, "to", body.get("to"))
    to_state: str | None
    if to == STAYS:
        if from_states:
            raise CatalogueError(f"{where}: 'to = \"stays\"' takes 'stays_in', not 'from'")
        to_state = None
    else:
        _known_states(where, "to", [to], states)
        to_state = to
    if not from_states and not stays_in:
        raise CatalogueError(f"{where}: needs 'from' or 'stays_in' (the states it applies in)")
    if NONE in from_states and to_state is not None and to_state not in lifecycle.initial:
        raise CatalogueError(
            f"{where}: opens an aggregate in '{to_state}', which is not one of lifecycle "
            f"'{lifecycle.name}''s initial states ({', '.join(lifecycle.initial)})"
        )
    overlap = set(from_states) & set(stays_in)
    if overlap:
        raise CatalogueError(f"{where}: {sorted(overlap)} in both 'from' and 'stays_in'")
    outcomes = body.get("outcomes", {})
    if not isinstance(outcomes, dict) or not all(isinstance(v, str) for v in outcomes.values()):
        raise CatalogueError(f"{where}: 'outcomes' must be a table of outcome = state")
    _known_states(where, "outcomes", outcomes.values(), states)
    opens = body.get("opens")
    if opens is not None:
        _known_states(where, "opens", [_text(where, "opens", opens)], lifecycle.initial)
    return Transition(
        from_states=from_states,
        to_state=to_state,
        stays_in=stays_in,
        outcomes=dict(outcomes),
        opens=opens,
    )


def _path_error(message: Descriptor, path: str) -> str | None:
    """Why dotted `path` names no field of `message`; None when it does."""
    current: Descriptor | None = message
    for part in path.split("."):
        if current is None:
            return f"goes below a scalar field at '{part}'"
        found = current.fields_by_name.get(part)
        if found is None:
            return f"names no field: {current.full_name} has no '{part}'"
        current = found.message_type if found.type == FieldDescriptor.TYPE_MESSAGE else None
    return None
