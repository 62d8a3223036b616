"""The adapter framework: how a department system joins the exchange without being rewritten.

An adapter is made of pure **mappings** (see `dutylink.adapters.records`: records in, events out, and
back) and **transports**: `Source`s that read records (a directory, an HTTP endpoint, a polled
feed) and `Deliver`ers that hand records to the department (files, HTTP POSTs).

This module is the I/O in between. The `Pipeline` is the same for every adapter: it maps
records, publishes their events in batches through the SDK (retries included), keeps every
record it cannot map or the gateway refuses in `rejected/` with a reason file, and counts
everything for the metrics. Nothing is dropped silently.

Idempotency: events are named after the source record (`event_id_for`), so re-reading a file,
re-polling a feed or restarting the adapter publishes nothing twice — the gateway answers
`duplicate` for an id it already stored. A record whose event id is stored with *other*
content (a re-issued CAP alert under the same identifier) is a `conflict`: nothing is stored
for it, and it is kept in rejected/ like a refusal. Advisories in the receipts are logged per
record ("adapter.advisories").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog

from dutylink.adapters.metrics import Metrics
from dutylink.adapters.records import (
    InboundMapping,
    OutboundMapping,
    OutboundRecord,
    Part,
    Parts,
    Record,
    RecordOutcome,
    Rejected,
    RejectedPart,
)
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.adapters.sdk.retry import REFUSAL_CODE_NUMBERS
from dutylink.v1 import event_pb2, gateway_pb2

log = structlog.get_logger("dutylink.adapter")


class PublishUnavailableError(Exception):
    """The gateway could not be reached or refused for now (after the SDK's retries): the
    records were not published; the source keeps them and tries again later."""


class RejectedStore:
    """`rejected/`: every record that could not be mapped or was refused, with why."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keep(
        self,
        direction: str,
        record_id: str,
        body: bytes,
        origin: str,
        reason: str,
        mode: int | None = None,
    ) -> Path:
        """Keep a record and why; both files get `mode` (the source file's permission bits;
        None: owner-only), whatever the umask, since records may hold personal data."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", record_id)[:80] or "record"
        base = f"{stamp}-{direction}-{safe}"
        why = json.dumps(
            {"direction": direction, "record_id": record_id, "origin": origin, "reason": reason},
            ensure_ascii=False,
            indent=2,
        )
        permissions = KEPT_MODE if mode is None else mode & 0o777
        write_new_file(self.directory / f"{base}.record", body, permissions)
        write_new_file(self.directory / f"{base}.reason.json", (why + "\n").encode(), permissions)
        return self.directory / f"{base}.record"

    def keep_part(self, direction: str, record: Record, part: Part, reason: str) -> Path:
        """Keep one rejected part of a record (its own bytes) and why, naming the record (id,
        origin) and the part (label, relation) so it can be traced back to the whole."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", record.record_id)[:80] or "record"
        label = re.sub(r"[^A-Za-z0-9._-]", "_", part.label)[:40] or "part"
        base = f"{stamp}-{direction}-{safe}.{label}"
        why = json.dumps(
            {
                "direction": direction, "record_id": record.record_id, "origin": record.origin,
                "part": part.label, "relation": dict(part.relation), "reason": reason,
            },
            ensure_ascii=False, indent=2,
        )  # fmt: skip
        permissions = KEPT_MODE if record.mode is None else record.mode & 0o777
        write_new_file(self.directory / f"{base}.record", part.body, permissions)
        write_new_file(self.directory / f"{base}.reason.json", (why + "\n").encode(), permissions)
        return self.directory / f"{base}.record"


# Permission bits of a kept record that did not come from a file.
KEPT_MODE = 0o600


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with exactly `mode` (not widened by the umask, never through a symlink)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
        os.fchmod(stream.fileno(), mode)


class Pipeline:
    """Records in, events published, outcomes out: the part every inbound adapter shares."""

    def __init__(
        self,
        client: DutyLinkClient,
        mapping: InboundMapping,
        rejected: RejectedStore,
        metrics: Metrics,
        *,
        batch_size: int = 500,
    ) -> None:
        self._client = client
        self._mapping = mapping
        self._rejected = rejected
        self._metrics = metrics
        self._batch_size = batch_size

    def _reject(self, record: Record, reason: str) -> RecordOutcome:
        self._rejected.keep(
            "in", record.record_id, record.body, record.origin, reason, mode=record.mode
        )
        self._metrics.rejected.labels(adapter=self._metrics.adapter, direction="in").inc()
        log.warning(
            "adapter.rejected", record_id=record.record_id, origin=record.origin, reason=reason
        )
        return RecordOutcome(record, rejected=reason)

    def _settle_parts(
        self,
        record: Record,
        receipts: tuple[gateway_pb2.Receipt, ...],
        failed: Sequence[RejectedPart],
    ) -> RecordOutcome:
        """The outcome of a record mapped to Parts: published whole, partially (each failed
        part kept on its own), or, when no part was published, rejected whole with every
        part's reason (the record itself is kept: it holds what the parts share)."""
        if not failed:
            return RecordOutcome(record, receipts=receipts)
        if not receipts:
            return self._reject(record, "; ".join(f"{f.part.label}: {f.reason}" for f in failed))
        for rejected in failed:
            self._rejected.keep_part("in", record, rejected.part, rejected.reason)
            log.warning(
                "adapter.part_rejected", record_id=record.record_id, origin=record.origin,
                part=rejected.part.label, reason=rejected.reason,
            )  # fmt: skip
        self._metrics.parts_rejected.inc(len(failed))
        log.info(
            "adapter.partially_published", record_id=record.record_id, origin=record.origin,
            published=len(receipts), rejected=len(failed),
        )  # fmt: skip
        return RecordOutcome(record, receipts=receipts, rejected_parts=tuple(failed))

    async def publish(self, records: Sequence[Record]) -> list[RecordOutcome]:
        """Map and publish `records`; one outcome per record, in order. Raises
        PublishUnavailableError when the gateway stays unavailable: then nothing of the
        unfinished records is settled and the caller must offer them again (their event ids
        make that safe)."""
        self._metrics.records_in.inc(len(records))
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        events: list[tuple[int, event_pb2.Event]] = []
        part_of: list[Part | None] = []  # the part each event came from (Parts mappings)
        failed_parts: dict[int, list[RejectedPart]] = {}  # records mapped to Parts
        for index, record in enumerate(records):
            if record.problem:
                outcomes[index] = self._reject(record, record.problem)
                continue
            try:
                mapped = self._mapping(record)
            except Rejected as verdict:
                outcomes[index] = self._reject(record, str(verdict))
                continue
            if isinstance(mapped, Parts):
                failed_parts[index] = [RejectedPart(part, why) for part, why in mapped.rejected]
                part_of.extend(part for part, _ in mapped.events)
                mapped = [event for _, event in mapped.events]
            else:
                part_of.extend(None for _ in mapped)
                if not mapped:
                    outcomes[index] = RecordOutcome(record)  # nothing to publish for it
            events.extend((index, event) for event in mapped)
        results: list[gateway_pb2.PublishResult] = []
        for start in range(0, len(events), self._batch_size):
            chunk = [event for _, event in events[start : start + self._batch_size]]
            try:
                results += await self._client.publish_batch(chunk)
            except grpc.aio.AioRpcError as error:
                raise PublishUnavailableError(f"{error.code().name}: {error.details()}") from error
        receipts: dict[int, list[gateway_pb2.Receipt]] = {}
        refusals: dict[int, str] = {}
        for (index, event), part, result in zip(events, part_of, results, strict=True):
            refusal = ""
            if result.HasField("receipt") and result.receipt.conflict:
                refusal = f"conflict: event {event.id} is already stored with other content; this one was not stored, the stored original kept at sequence {result.receipt.stream_sequence}"  # fmt: skip
            elif result.HasField("receipt"):
                receipts.setdefault(index, []).append(result.receipt)
                continue
            elif result.error.code in REFUSAL_CODE_NUMBERS:
                detail = "; ".join(f"{v.field}: {v.description}" for v in result.error.violations)
                refusal = f"event {event.id}: {result.error.message}" + (f" ({detail})" if detail else "")  # fmt: skip
            else:
                raise PublishUnavailableError(f"event {event.id}: {result.error.message}")
            if part is not None:  # only this part of the record is refused
                failed_parts[index].append(RejectedPart(part, refusal))
            else:
                refusals.setdefault(index, refusal)
        for index, record in enumerate(records):
            if outcomes[index] is not None:
                continue
            if index in refusals:
                outcomes[index] = self._reject(record, refusals[index])
            elif index in failed_parts:
                outcomes[index] = self._settle_parts(
                    record, tuple(receipts.get(index, ())), failed_parts[index]
                )
            else:
                outcomes[index] = RecordOutcome(record, receipts=tuple(receipts.get(index, ())))
            if index not in refusals and (
                advised := [a for r in receipts.get(index, ()) for a in r.advisories]
            ):
                log.info(
                    "adapter.advisories",
                    record_id=record.record_id,
                    origin=record.origin,
                    advisories=[f"{a.field}: {a.description} ({a.rule_id})" for a in advised],
                )
        self._metrics.events_published.inc(sum(len(r) for r in receipts.values()))
        return [outcome for outcome in outcomes if outcome is not None]


class Source(Protocol):
    """A transport that reads department records and hands them to the pipeline."""

    async def run(self, pipeline: Pipeline) -> None:
        """Read until cancelled."""


@dataclass(frozen=True)
class Subscription:
    """What an outbound side subscribes to."""

    name: str
    families: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    jurisdiction_prefixes: tuple[str, ...] = ()
    planes: tuple[event_pb2.Plane.ValueType, ...] = ()  # default: real events only


class Deliver(Protocol):
    """A transport that hands one outbound record to the department system; raises when it
    could not (the event is then redelivered later), or `Rejected` when the department refuses
    it for good (it is then kept in rejected/, like a record the mapping rejects)."""

    async def __call__(self, record: OutboundRecord) -> None: ...


@dataclass
class Outbound:
    subscription: Subscription
    mapping: OutboundMapping
    deliver: Deliver


@dataclass
class AdapterPlan:
    """What an adapter kind builds from its options: sources in, and outbound sides."""

    inbound: InboundMapping | None = None  # what the sources' records become
    sources: list[Source] = field(default_factory=list)
    outbound: list[Outbound] = field(default_factory=list)


@dataclass(frozen=True)
class AdapterKind:
    """A registered adapter: its name, what it is for, and how to build it from options."""

    name: str
    description: str
    build: Callable[[Mapping[str, Any], Path], AdapterPlan]  # (options, state directory)
    # The declared tables of its [options] (dutylink.adapters.options), by TOML name, in file order:
    # `dutylink adapter options NAME` prints them with every key's default and description.
    tables: tuple[tuple[str, type[Any]], ...] = ()


async def deliver_outbound(
    outbound: Outbound, rejected: RejectedStore, metrics: Metrics, delivery: gateway_pb2.Delivery
) -> None:
    """The handler of one delivery on an outbound side (run by the SDK's consume)."""
    event = delivery.event
    try:
        record = outbound.mapping(event)
        if record is None:
            return
        await outbound.deliver(record)  # raises -> nack -> redelivered later
    except Rejected as verdict:
        # It can never become a record, or the department refuses it for good: kept, and
        # acked so it does not come back forever.
        rejected.keep(
            "out", event.id, event.SerializeToString(), f"event {event.type}", str(verdict)
        )
        metrics.rejected.labels(adapter=metrics.adapter, direction="out").inc()
        log.warning("adapter.rejected_out", event_id=event.id, reason=str(verdict))
        return
    metrics.records_out.inc()
    if event.HasField("received_time"):
        age = datetime.now(UTC) - event.received_time.ToDatetime(UTC)
        metrics.lag.labels(adapter=metrics.adapter, direction="out").set(age.total_seconds())
