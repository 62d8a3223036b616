"""The values the lifecycle folds pass around: which aggregate an event touches, the aggregate's
state (as a key-value store holds it), who acts, and the verdict. Pure: no I/O."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from dutylink.catalogue import NONE, EventType
from dutylink.v1 import event_pb2

# The KV key of an aggregate: "lifecycle.<lifecycle>.<plane>.<key>", the key's characters that a
# KV key cannot hold written as "=XX" (hex of each UTF-8 byte).
KEY_PREFIX = "lifecycle"
# Compact JSON; AggregateState.to_bytes names its fields in sorted order itself.
_JSON = json.JSONEncoder(separators=(",", ":"))
_KEY_SAFE = frozenset("-_/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


# Worked out once: every event's keys name their plane.
_PLANE_TOKENS: dict[int, str] = {
    int(number): name.removeprefix("PLANE_").lower() for name, number in event_pb2.Plane.items()
}


def plane_token(plane: int) -> str:
    """ "actual", "exercise" or "test": planes are separate aggregates."""
    token = _PLANE_TOKENS.get(plane)
    if token is None:  # not a plane: the enum's own ValueError
        return event_pb2.Plane.Name(plane).removeprefix("PLANE_").lower()  # type: ignore[arg-type]
    return token


def encode_key_token(text: str) -> str:
    if _KEY_SAFE.issuperset(text):  # the usual key: nothing to escape
        return text
    return "".join(
        char if char in _KEY_SAFE else "".join(f"={byte:02X}" for byte in char.encode())
        for char in text
    )


@dataclass(frozen=True)
class AggregateRef:
    """One aggregate an event touches. `outcome` picks a type's alternative target (e.g. a
    line's DECLINE); `opens` marks the aggregate the event opens of its own (a CAP Update)."""

    lifecycle: str
    plane: str
    key: str
    outcome: str | None = None
    opens: bool = False

    @property
    def kv_key(self) -> str:
        return f"{KEY_PREFIX}.{self.lifecycle}.{self.plane}.{encode_key_token(self.key)}"

    def __str__(self) -> str:
        return f"{self.lifecycle} {self.key!r} ({self.plane})"


@dataclass(frozen=True)
class Actor:
    """Who publishes: the authenticated agency and its standing roles ("command_centre",
    "supervisor"). Roles that come from the aggregate (reporter, lead, ...) are worked out from
    its state."""

    agency: str
    roles: frozenset[str] = frozenset()


# How many event ids an entry remembers; a retry older than that is judged anew.
RECENT_EVENTS = 16


def remember(recent: tuple[str, ...], event_id: str) -> tuple[str, ...]:
    """`recent` with `event_id` last, the oldest dropped beyond RECENT_EVENTS."""
    return (*recent, event_id)[-RECENT_EVENTS:]


@dataclass(frozen=True)
class AggregateState:
    """An aggregate's state as a KV value. `version` counts accepted transitions (1 after the
    event that opened it). The party fields say who may act next."""

    lifecycle: str
    plane: str
    key: str
    state: str
    version: int
    opened_by: str
    lead: str = ""
    assigned: tuple[str, ...] = ()
    supervisor: str = ""
    handlers: tuple[str, ...] = ()
    parties: tuple[str, ...] = ()
    deadline: datetime | None = None
    expires: datetime | None = None
    merged_into: str = ""
    last_event_id: str = ""
    last_type: str = ""
    # The ids of the last events that moved it (newest last, at most RECENT_EVENTS): a retry of
    # one of them is recognised as done, not judged again (gateway.core.workflows.judge).
    recent: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        """Compact JSON, keys sorted: the bytes `json.dumps(asdict(self), sort_keys=True)` gave,
        written out field by field (asdict's deep copy cost more than the encoding)."""
        return _JSON.encode(
            {
                "assigned": self.assigned,
                "deadline": _iso(self.deadline),
                "expires": _iso(self.expires),
                "handlers": self.handlers,
                "key": self.key,
                "last_event_id": self.last_event_id,
                "last_type": self.last_type,
                "lead": self.lead,
                "lifecycle": self.lifecycle,
                "merged_into": self.merged_into,
                "opened_by": self.opened_by,
                "parties": self.parties,
                "plane": self.plane,
                "recent": self.recent,
                "state": self.state,
                "supervisor": self.supervisor,
                "version": self.version,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> AggregateState:
        data: dict[str, Any] = json.loads(raw)
        for name in ("assigned", "handlers", "parties", "recent"):
            data[name] = tuple(data.get(name, ()))
        for name in ("deadline", "expires"):
            if data[name] is not None:
                data[name] = datetime.fromisoformat(data[name])
        return cls(**data)

    def moved(self, **changes: Any) -> AggregateState:
        return replace(self, **changes)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True)
class Accepted:
    """The transition is legal: `new_state` is what to write (compare-and-set on the version read)."""

    new_state: AggregateState


@dataclass(frozen=True)
class IllegalTransition:
    """The event does not fit the aggregate: its current state (NONE when it does not exist) and
    version, and the transitions the catalogue allows from there ("type → state")."""

    aggregate: AggregateRef
    current_state: str
    version: int
    allowed: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        allowed = ", ".join(self.allowed) or "none"
        return (
            f"{self.aggregate} is '{self.current_state}' (version {self.version}): "
            f"{self.reason}; allowed from there: {allowed}"
        )


Verdict = Accepted | IllegalTransition


@dataclass(frozen=True)
class Facts:
    """What an event says about an aggregate's parties and times; unset fields change nothing."""

    lead: str = ""
    assigned: tuple[str, ...] = ()
    supervisor: str = ""
    deadline: datetime | None = None
    expires: datetime | None = None
    merged_into: str = ""


@dataclass(frozen=True)
class Context:
    """Everything a lifecycle's own check may look at."""

    ref: AggregateRef
    state: AggregateState | None
    event_type: EventType
    event: event_pb2.Event
    actor: Actor
    now: datetime


@dataclass(frozen=True)
class Precondition:
    """An aggregate an event reads but does not move, and the states it must not be in (NONE:
    it must exist) for the event to pass; `reason` says why, from that aggregate's side."""

    ref: AggregateRef
    refused_in: frozenset[str]
    reason: str


@dataclass(frozen=True)
class Rules:
    """What one lifecycle adds to the generic machine: which aggregates an event touches
    (`refs`), what it says about their parties and times (`facts`), any rule the catalogue's
    data cannot state (`check`: a reason to refuse, or None), and the state other aggregates
    must be in (`preconditions`: e.g. a merge's survivor must exist)."""

    refs: Callable[[event_pb2.Event, EventType], list[AggregateRef]]
    facts: Callable[[event_pb2.Event, AggregateRef], Facts] = field(
        default=lambda event, ref: Facts()
    )
    check: Callable[[Context], str | None] = field(default=lambda context: None)
    preconditions: Callable[[event_pb2.Event, EventType], list[Precondition]] = field(
        default=lambda event, event_type: []
    )


def current(state: AggregateState | None) -> str:
    return state.state if state is not None else NONE
