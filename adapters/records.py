"""The values an adapter's mappings work on, and nothing else: a department record, the
events or the verdict a mapping answers with, and an outbound record. Pure (no gRPC, no metrics,
no SDK, no I/O), so a mapping can be written, tested and reused without a gateway.

An **inbound mapping** (`InboundMapping`) takes one `Record` to events, or raises `Rejected`;
a record made of parts, like an envelope of alerts, maps to `Parts`: each good part's event and
each bad part's reason, so one bad part does not cost the others. An **outbound mapping**
(`OutboundMapping`) takes one event to an `OutboundRecord`, None when the department does not
take it, or raises `Rejected`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dutylink.v1 import event_pb2, gateway_pb2

_ID_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,95}$")


def event_id_for(system: str, record_id: str, part: str = "") -> str:
    """The event id of a source record (and of one of its parts, when a record yields several
    events): stable across re-reads and restarts, within the gateway's id syntax."""
    local = f"{record_id}.{part}" if part else record_id
    if _ID_SAFE.match(local):
        return f"{system}:{local}"
    digest = hashlib.sha256(local.encode("utf-8")).hexdigest()[:40]
    return f"{system}:h-{digest}"


@dataclass(frozen=True)
class Record:
    """One department record as a transport read it."""

    record_id: str  # the source system's own id for it
    body: bytes
    origin: str  # where it came from, for people: "drop/calls.csv:12", "POST /events"
    content_type: str = "application/octet-stream"
    problem: str = ""  # set by a transport that could not read it whole: rejected unmapped
    # Permission bits of the file it came from: a kept copy is never more readable than the
    # original (None: not from a file, kept owner-only).
    mode: int | None = None


class Rejected(Exception):
    """A mapping's verdict that a record cannot become events (or an event a record)."""


@dataclass(frozen=True)
class OutboundRecord:
    """What a sink hands to the department for one event."""

    name: str  # unique per event: a file name, an idempotency key for HTTP
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Part:
    """One part of a record that becomes one event or is rejected on its own, e.g. one content
    object of an EDXL-DE envelope: the other parts of the record are published all the same."""

    label: str  # names the part within its record, for people: "content 2"
    body: bytes  # what is kept in rejected/ when the part is rejected
    # How the part relates to its record (e.g. the envelope's distribution id and the
    # content's position); written to the reason file.
    relation: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class Parts:
    """A mapping's answer for a record made of parts: each good part with its event, each bad
    part with why. A mapping that returns a plain event list instead stands or falls whole."""

    events: Sequence[tuple[Part, event_pb2.Event]] = ()
    rejected: Sequence[tuple[Part, str]] = ()


@dataclass(frozen=True)
class RejectedPart:
    """A part kept in rejected/ while the rest of its record was published."""

    part: Part
    reason: str


InboundMapping = Callable[[Record], Sequence[event_pb2.Event] | Parts]


def events_of(mapped: Sequence[event_pb2.Event] | Parts) -> list[event_pb2.Event]:
    """The events of a mapping's answer, in either form."""
    if isinstance(mapped, Parts):
        return [event for _, event in mapped.events]
    return list(mapped)


OutboundMapping = Callable[[event_pb2.Event], OutboundRecord | None]


@dataclass(frozen=True)
class RecordOutcome:
    """What became of one record: published (receipts), or rejected (reason)."""

    record: Record
    receipts: tuple[gateway_pb2.Receipt, ...] = ()
    rejected: str = ""  # the whole record was rejected
    rejected_parts: tuple[RejectedPart, ...] = ()  # published, but these parts were not

    @property
    def ok(self) -> bool:
        """Settled without being rejected whole (a partially published record is ok)."""
        return not self.rejected

    @property
    def status(self) -> str:
        """ "published", "partially published" or "rejected"."""
        if self.rejected:
            return "rejected"
        return "partially published" if self.rejected_parts else "published"


def outbox_name(event: event_pb2.Event, suffix: str) -> str:
    """`<source>.<event id><suffix>`: ids are unique per publishing agency only, so the source
    is part of the name. ':' (in every adapter id) becomes '~', which no id contains: the name
    stays unique and valid on Windows shares too."""
    return f"{event.source or 'unknown'}.{event.id.replace(':', '~')}{suffix}"
