"""The start-up check of the event stream against this gateway's audit log, before the gateway
accepts anything: every event the log records as stored is in the stream, at its sequence with
the same digest, and no sequence would be reused (the pure comparison is gateway.audit.witness;
here the reads). Bounded: from where the last check ended (its mark in the audit stream), unless
the stream's end or its gaps changed since, which takes a full check.

The check appends nothing itself: it returns the facts it found (how unsettled events, a crash
between store and record, turned out) for the gateway to record through its audit sink, and the
mark to move once they are durable."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext

from dutylink.v1 import audit_pb2
from gateway.audit.note import NoteError
from gateway.audit.witness import Ledger, StreamView, compare, publish_facts, settlement
from gateway.core import subjects
from gateway.core.ports import StoreDamagedError, StoreUnavailableError
from gateway.store.audit_log import AuditLog
from gateway.store.audit_reader import audit_entries_from, parse_stored_checkpoint
from gateway.store.witness import event_digests, events_state, read_witness_mark, write_witness_mark

log = structlog.get_logger("dutylink.gateway")


@dataclass(frozen=True)
class Witnessed:
    """What the check found: the event stream's last sequence; the facts to record before
    anything else (settled events); the mark to write once they are durable (None: keep the
    old one); in read-only mode, what the stream lost ("" when nothing)."""

    events_last: int
    settled: list[audit_pb2.AuditEntry] = field(default_factory=list)
    mark: dict[str, int] | None = None
    fault: str = ""


async def witness_store(
    js: JetStreamContext, audit: AuditLog, *, gateway_id: str, mode: str
) -> Witnessed:
    """Check the event stream against `audit` (started, not yet appended to). On a mismatch:
    StoreDamagedError naming the first missing event, or with `mode` "read-only" a `fault`."""
    try:
        await check_signed_size(js, audit)
        mark = await read_witness_mark(js, gateway_id)
        state = await events_state(js)
        bounded = (
            mark is not None
            and state.last_sequence >= mark.get("events_last_sequence", 0)
            and state.deleted <= mark.get("events_deleted", 0)
        )
        mark = mark if bounded and mark is not None else {}
        entries, following = await audit_entries_from(js, gateway_id, mark.get("audit_sequence", 1))
        ledger = Ledger(high_water=mark.get("high_water", 0)).add(publish_facts(entries))
        read_from = mark.get("events_last_sequence", 0) + 1
        digests = await event_digests(
            js, state, start=read_from, hashing=audit.hashing, wanted=ledger.wanted()
        )
    except (nats.errors.Error, OSError, TimeoutError) as error:
        raise StoreUnavailableError(f"checking the event stream failed: {error}") from error
    max_age = state.max_age
    view = StreamView(
        state.first_sequence,
        state.last_sequence,
        digests,
        read_from,
        retained_since=time.time() - max_age if max_age > 0 else 0.0,
    )
    verdict = compare(ledger, view)
    if not verdict.ok:
        problem = "the event store lost acknowledged events: " + verdict.summary(
            subjects.EVENTS_STREAM, state.last_sequence
        )
        if mode == "refuse":
            raise StoreDamagedError(
                f"{problem}; refusing to serve (restore the stream from a backup, or set "
                'audit.store_mismatch = "read-only" to serve subscribers meanwhile)'
            )
        log.error("audit.store_mismatch", problem=problem, mode=mode)
        return Witnessed(state.last_sequence, fault=problem)
    settled = settlement(verdict)
    if settled:
        log.warning(
            "audit.settled",
            stored=len(verdict.settled),
            unknown=len(verdict.unknown),
            message="accepted events whose store answer the gateway had not recorded",
        )
    high_water = max([ledger.high_water, *(sequence for _, sequence in verdict.settled)])
    log.info(
        "audit.witnessed",
        checked=verdict.checked,
        events_from=read_from,
        events_last=state.last_sequence,
        full=not mark,
    )
    next_mark = {
        "audit_sequence": following,
        "events_last_sequence": state.last_sequence,
        "events_deleted": state.deleted,
        "high_water": high_water,
    }
    return Witnessed(state.last_sequence, list(settled), next_mark)


async def move_mark(js: JetStreamContext, gateway_id: str, witnessed: Witnessed) -> None:
    """Write the check's mark, once its facts are durable (the next start checks from there)."""
    if witnessed.mark is None:
        return
    try:
        await write_witness_mark(js, gateway_id, witnessed.mark)
    except (nats.errors.Error, OSError, TimeoutError) as error:
        # Only the next start's bound is lost: it checks from the older mark.
        log.warning("audit.witness_mark_failed", reason=str(error))


async def check_signed_size(js: JetStreamContext, audit: AuditLog) -> None:
    """A log shorter than its latest signed checkpoint lost entries (its stream was damaged
    or truncated): appending would sign a second history. StoreDamagedError, one line."""
    gateway_id = audit.gateway_id
    try:
        raw = await js.get_last_msg(subjects.AUDIT_STREAM, subjects.audit_checkpoints(gateway_id))
    except nats.js.errors.NotFoundError:
        return
    try:
        signed = parse_stored_checkpoint(gateway_id, raw.data or b"").checkpoint.size
    except NoteError as error:
        raise StoreDamagedError(
            f"audit log {gateway_id} is damaged: its latest checkpoint does not parse "
            f"({error}); run `dutylink audit verify`"
        ) from None
    if signed > audit.size:
        raise StoreDamagedError(
            f"audit log {gateway_id} is damaged: its latest signed checkpoint covers "
            f"{signed} entries, the stream holds {audit.size}; refusing to append a second "
            "history (run `dutylink audit verify`)"
        )
