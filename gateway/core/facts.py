"""The one interface everything that records a fact speaks to: `AuditSink`. Pure (a Protocol
and an in-memory sink for tests); the real sink, over the JetStream audit log, is the edge's
(gateway.rpc.dependencies.Dependencies).

Three ways to record, by what the fact guards:
- `record`: fail closed. Raises AuditUnavailableError when the log cannot take the entries; the
  caller must not act (store, grant, answer) on a fact that is not durable.
- `follow_up`: a fact known after the answer (an event stored at a sequence); it rides with the
  next append, so no request waits for an extra round trip.
- `record_best_effort`: a fact that happens whether or not it is logged (a refusal is still a
  refusal); a failure is logged, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dutylink.v1 import audit_pb2


class AuditSink(Protocol):
    async def record(self, entries: Sequence[audit_pb2.AuditEntry]) -> None: ...

    def follow_up(self, entry: audit_pb2.AuditEntry) -> None: ...

    async def record_best_effort(self, entries: Sequence[audit_pb2.AuditEntry]) -> None: ...


class SinkUnavailableError(Exception):
    """The in-memory sink's stand-in for an audit log that cannot be appended."""


@dataclass
class MemoryAuditSink:
    """An `AuditSink` in a list, for tests of code that records facts. Set `available` False to
    see what fails closed."""

    entries: list[audit_pb2.AuditEntry] = field(default_factory=list)
    follow_ups: list[audit_pb2.AuditEntry] = field(default_factory=list)
    unrecorded: list[audit_pb2.AuditEntry] = field(default_factory=list)
    available: bool = True

    async def record(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        if not self.available:
            raise SinkUnavailableError("the audit sink is unavailable")
        pending, self.follow_ups = self.follow_ups, []
        self.entries.extend([*pending, *entries])

    def follow_up(self, entry: audit_pb2.AuditEntry) -> None:
        self.follow_ups.append(entry)

    async def record_best_effort(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        try:
            await self.record(entries)
        except SinkUnavailableError:
            self.unrecorded.extend(entries)
