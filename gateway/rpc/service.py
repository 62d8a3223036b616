"""gRPC servicers: PublisherService, SubscriberService and BreakGlassService, the I/O edge.

Each RPC authenticates first (the agency comes from the credential only), then hands the event
to the pure admission step, then to JetStream. A publish is answered only after JetStream has
acknowledged (and, with `sync_interval: always`, fsynced) the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

import grpc
import structlog
from nats.aio.msg import Msg

from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.access.auth import Authenticator, Principal
from gateway.access.authorization import Authorizer, GrantBook
from gateway.audit.commitments import commit
from gateway.audit.entries import (
    Delivered,
    delivery_entry,
    gateway_entry,
    publish_entry,
    settled_entry,
    stored_entry,
    withheld_entry,
)
from gateway.audit.log import AuditLog, AuditUnavailableError
from gateway.config import Config
from gateway.core import subjects
from gateway.core.admission import Admitted, Refused, admit, admit_all
from gateway.core.envelope import incident_ids
from gateway.core.validation import FieldProblem, Validator
from gateway.rpc.calls import (
    MAX_ECHOED_ID_CHARS,
    MAX_STATUS_DETAIL_BYTES,
    MAX_STATUS_MESSAGE_CHARS,
    abort,
    authenticate,
    fit_problems,
    shorten,
    status,
)
from gateway.rpc.fairness import FairScheduler, StoreWindow
from gateway.store.jetstream import (
    DurableSubscription,
    EventStore,
    Stored,
    StoreError,
    StoreFullError,
    StoreRejectedError,
    StoreUnavailableError,
)
from gateway.telemetry.metrics import GatewayMetrics
from policies.engine import BreakGlassError, declare_grant
from policies.redaction import redact

log = structlog.get_logger("dutylink.gateway")
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


# Called with the name of each step of the publish path ("publish.admitted", "publish.audited",
# "publish.stored"); crash drills make one of them kill the process (`dutylink serve` with
# DUTYLINK_FAILPOINT). Otherwise it does nothing.
Failpoint = Callable[[str], None]


def no_failpoint(step: str) -> None:
    pass


def _store_code(error: StoreError) -> grpc.StatusCode:
    if isinstance(error, StoreFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, StoreRejectedError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.UNAVAILABLE


def _store_message(error: StoreError) -> str:
    if isinstance(error, StoreUnavailableError):
        return f"{error}; retry with the same event id"
    return str(error)


def _receipt(admitted: Admitted, stored: Stored) -> gateway_pb2.Receipt:
    receipt = gateway_pb2.Receipt()
    _fill_receipt(receipt, admitted, stored)
    return receipt


def _fill_receipt(
    receipt: gateway_pb2.Receipt, admitted: Admitted, stored: Stored, room: int | None = None
) -> None:
    """The receipt of `admitted`; its advisories listed within `room` bytes (None: all), the
    rest counted in a last one (a batch's answer must stay within the message size limit)."""
    receipt.event_id = admitted.event.id
    receipt.stream_sequence = stored.sequence
    receipt.duplicate = stored.duplicate
    receipt.conflict = stored.conflict
    receipt.received_time.CopyFrom(admitted.event.received_time)
    advisories = admitted.advisories
    if room is not None:
        advisories = fit_problems(advisories, room)
    receipt.advisories.extend(
        gateway_pb2.FieldViolation(field=p.field, description=p.description, rule_id=p.rule_id)
        for p in advisories
    )


def _conflict_reason(stored: Stored) -> str:
    return (
        f"event id already stored at sequence {stored.sequence} with other content: not "
        "stored, the stored original is kept (content_digest vs stored_content_digest)"
    )


def _publish_error(
    code: grpc.StatusCode,
    message: str,
    problems: tuple[FieldProblem, ...] = (),
    max_message_chars: int = MAX_STATUS_MESSAGE_CHARS,
) -> gateway_pb2.PublishError:
    return gateway_pb2.PublishError(
        code=cast(int, code.value[0]),
        message=shorten(message, max_message_chars),
        violations=[
            gateway_pb2.FieldViolation(field=p.field, description=p.description, rule_id=p.rule_id)
            for p in problems
        ],
    )


@dataclass
class AuditHolder:
    """The audit log once it is open (it needs NATS, which may come up after the services), and
    the deployment's key for withheld-field commitments."""

    log: AuditLog | None = None
    commitment_key: bytes = b""
    # Facts known after a reply (an event stored at a sequence): they ride with the next
    # append, so the publish path waits for no extra audit round trip (see Dependencies.record).
    follow_ups: list[audit_pb2.AuditEntry] = field(default_factory=list)
    # Set when the start-up check found the event store short of what the log says it stored
    # and audit.store_mismatch = "read-only": every publish is refused with this message.
    store_fault: str = ""


@dataclass(frozen=True)
class Dependencies:
    """What every servicer works with; built once by the gateway."""

    config: Config
    store: EventStore
    authenticator: Authenticator
    validator: Validator
    authorizer: Authorizer
    audit: AuditHolder = field(default_factory=AuditHolder)
    clock: Clock = _utc_now
    failpoint: Failpoint = no_failpoint
    # Set when the gateway begins to shut down: long-lived streams end promptly (subscribers
    # reconnect, to another replica if there is one) instead of holding the shutdown's grace.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)

    async def record(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        """Append to the audit log (fail closed: raises AuditUnavailableError when the log is
        enabled but cannot be appended)."""
        if not self.config.audit.enabled or not (entries or self.audit.follow_ups):
            return
        if self.audit.log is None:
            raise AuditUnavailableError("the audit log is not open yet")
        if not self.store.connected:
            # Fail at once rather than after the append's timeouts: the caller's deadline may
            # be shorter, and "unavailable, retry" is the answer either way.
            raise AuditUnavailableError("NATS is not connected: the audit log cannot be appended")
        pending, self.audit.follow_ups = self.audit.follow_ups, []
        try:
            await self.audit.log.append([*pending, *entries])
        except AuditUnavailableError:
            self.audit.follow_ups[:0] = pending  # kept for the next append
            raise

    def follow_up(self, entry: audit_pb2.AuditEntry) -> None:
        """Record `entry` with the next append (or flush), without waiting for it."""
        if self.config.audit.enabled:
            self.audit.follow_ups.append(entry)

    async def record_best_effort(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        """For facts that happen whether or not they are logged (a refusal is still a refusal)."""
        try:
            await self.record(entries)
        except AuditUnavailableError as error:
            log.error("audit.unrecorded", entries=len(entries), reason=str(error))


def _refusal_entry(
    principal: Principal, event: event_pb2.Event, refused: Refused
) -> audit_pb2.AuditEntry:
    outcome = (
        audit_pb2.AUDIT_OUTCOME_INVALID
        if refused.code == grpc.StatusCode.INVALID_ARGUMENT
        else audit_pb2.AUDIT_OUTCOME_DENIED
    )
    return publish_entry(
        principal.agency, event, outcome, reason=refused.message, decision=refused.decision
    )


def _accepted_entry(principal: Principal, admitted: Admitted) -> audit_pb2.AuditEntry:
    return publish_entry(
        principal.agency,
        admitted.event,
        audit_pb2.AUDIT_OUTCOME_ACCEPTED,
        data=admitted.data,
        decision=admitted.decision,
    )


def _stored_entry(principal: Principal, admitted: Admitted, stored: Stored) -> audit_pb2.AuditEntry:
    entry = stored_entry(
        principal.agency,
        admitted.event,
        admitted.data,
        sequence=stored.sequence,
        duplicate=stored.duplicate,
    )
    if stored.conflict:
        entry.outcome = audit_pb2.AUDIT_OUTCOME_CONFLICT
        entry.reason = _conflict_reason(stored)
        entry.content_digest = stored.content_digest
        entry.stored_content_digest = stored.stored_content_digest
    return entry


def _failure_entry(
    principal: Principal, admitted: Admitted, error: StoreError
) -> audit_pb2.AuditEntry:
    return publish_entry(
        principal.agency,
        admitted.event,
        audit_pb2.AUDIT_OUTCOME_FAILED,
        reason=str(error),
        data=admitted.data,
    )


class Publisher(gateway_pb2_grpc.PublisherServiceServicer):
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps
        # One agency's batches cannot hold the others up: admission goes turn by turn among
        # agencies, and a batch's events go to JetStream a few at a time (gateway.rpc.fairness).
        self._turns = FairScheduler()
        self._store_window = StoreWindow(deps.config.gateway.agency_max_batch_events_storing)

    def _timeout(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        remaining = context.time_remaining()
        limit = self._deps.config.gateway.publish_timeout_seconds
        return limit if remaining is None else max(0.001, min(limit, remaining))

    async def _refuse_if_read_only(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if fault := self._deps.audit.store_fault:
            await abort(
                context,
                status(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the gateway is read-only: {fault}; nothing is accepted until the event "
                    "store is repaired",
                ),
            )

    def _observe(self, principal: Principal, admitted: Admitted, stored: Stored) -> None:
        """Log and count what a receipt says beyond "stored": advisories, a conflict."""
        metrics = self._deps.metrics
        for problem in admitted.advisories:
            metrics.advisories.labels(agency=principal.agency, rule_id=problem.rule_id).inc()
        if admitted.advisories:
            log.info(
                "publish.advisories",
                event_id=admitted.event.id,
                advisories=[f"{p.field}: {p.rule_id}" for p in admitted.advisories],
            )
        if stored.conflict:
            metrics.conflicts.labels(agency=principal.agency).inc()
            log.warning(
                "publish.conflict",
                event_id=admitted.event.id,
                sequence=stored.sequence,
                content_digest=stored.content_digest.hex(),
                stored_content_digest=stored.stored_content_digest.hex(),
            )

    def _admit(self, principal: Principal, event: event_pb2.Event) -> Admitted | Refused:
        now = self._deps.clock()
        return admit(
            self._deps.validator,
            lambda stamped: self._deps.authorizer.decide(principal, "publish", stamped, now),
            principal,
            event,
            now,
            max_event_bytes=self._deps.config.gateway.max_message_bytes,
        )

    async def Publish(
        self, request: gateway_pb2.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.PublishResponse:
        started = time.perf_counter()
        principal = await authenticate(self._deps.authenticator, context, "Publish")
        if not request.HasField("event"):
            problem = FieldProblem("event", "value is required", "required")
            await abort(
                context, status(grpc.StatusCode.INVALID_ARGUMENT, "event is required", (problem,))
            )
        await self._refuse_if_read_only(context)
        async with self._turns.turn(principal.agency):
            outcome = self._admit(principal, request.event)
        if isinstance(outcome, Refused):
            log.info(
                "publish.refused",
                event_id=shorten(request.event.id, MAX_ECHOED_ID_CHARS),
                code=outcome.code.name,
                reason=outcome.message,
            )
            await self._deps.record_best_effort([_refusal_entry(principal, request.event, outcome)])
            await abort(context, status(outcome.code, outcome.message, outcome.problems))
        self._deps.failpoint("publish.admitted")
        try:
            # Audit first: no event is ever stored without its entry (fail closed).
            await self._deps.record([_accepted_entry(principal, outcome)])
        except AuditUnavailableError as error:
            log.error("publish.unaudited", event_id=outcome.event.id, reason=str(error))
            await abort(
                context,
                status(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{error}; not accepted, retry with the same event id",
                ),
            )
        self._deps.failpoint("publish.audited")
        try:
            stored = await self._deps.store.publish(
                outcome.subject, outcome.data, outcome.headers, self._timeout(context)
            )
        except StoreError as error:
            log.warning("publish.failed", event_id=outcome.event.id, reason=str(error))
            await self._deps.record_best_effort([_failure_entry(principal, outcome, error)])
            await abort(context, status(_store_code(error), _store_message(error)))
        self._deps.failpoint("publish.stored")
        self._observe(principal, outcome, stored)
        if stored.duplicate:
            # Rare, and a decision the log must show: recorded before the answer.
            await self._deps.record_best_effort([_stored_entry(principal, outcome, stored)])
        else:
            self._deps.follow_up(_stored_entry(principal, outcome, stored))
        log.info(
            "publish.stored",
            event_id=outcome.event.id,
            type=outcome.event.type,
            sequence=stored.sequence,
            duplicate=stored.duplicate,
            conflict=stored.conflict,
            rule_ids=outcome.decision.rule_ids,
            policy_version=outcome.decision.policy_version[:12],
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return gateway_pb2.PublishResponse(receipt=_receipt(outcome, stored))

    async def PublishBatch(
        self, request: gateway_pb2.PublishBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.PublishBatchResponse:
        started = time.perf_counter()
        principal = await authenticate(self._deps.authenticator, context, "PublishBatch")
        await self._refuse_if_read_only(context)
        limit = self._deps.config.gateway.max_batch_events
        if len(request.events) > limit:
            problem = FieldProblem(
                "events", f"at most {limit} events per batch", "repeated.max_items"
            )
            await abort(
                context,
                status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"batch of {len(request.events)} events; the limit is {limit}",
                    (problem,),
                ),
            )
        response = gateway_pb2.PublishBatchResponse()
        results = response.results
        for index, event in enumerate(request.events):
            results.add(index=index, event_id=shorten(event.id, MAX_ECHOED_ID_CHARS))
        # One request, one moment of receipt: every event is stamped and decided at `now`.
        now = self._deps.clock()
        outcomes = await self._turns.in_turns(
            principal.agency,
            request.events,
            lambda events: admit_all(
                self._deps.validator,
                lambda stamped: self._deps.authorizer.decide(principal, "publish", stamped, now),
                principal,
                events,
                now,
                max_event_bytes=self._deps.config.gateway.max_message_bytes,
            ),
        )
        admitted: list[tuple[int, Admitted]] = []
        refusals: list[audit_pb2.AuditEntry] = []
        # The refusals' text shares half of the response's size limit; past it an error says
        # only its code and how many violations were cut (the receipts must still fit).
        room = self._deps.config.gateway.max_message_bytes // 2
        for index, (event, outcome) in enumerate(zip(request.events, outcomes, strict=True)):
            if isinstance(outcome, Refused):
                refusals.append(_refusal_entry(principal, event, outcome))
                problems = tuple(
                    FieldProblem(
                        f"events[{index}].{p.field}" if p.field else f"events[{index}]",
                        p.description,
                        p.rule_id,
                    )
                    for p in outcome.problems
                )
                error = _publish_error(
                    outcome.code,
                    outcome.message,
                    fit_problems(problems, min(MAX_STATUS_DETAIL_BYTES, room)),
                    MAX_STATUS_MESSAGE_CHARS if room > MAX_STATUS_MESSAGE_CHARS else 64,
                )
                room -= error.ByteSize()
                results[index].error.CopyFrom(error)
            else:
                admitted.append((index, outcome))
        await self._deps.record_best_effort(refusals)
        if admitted:
            self._deps.failpoint("publish.admitted")
        try:
            # Audit first, in one append for the whole batch: no event stored without its entry.
            await self._deps.record([_accepted_entry(principal, a) for _, a in admitted])
        except AuditUnavailableError as error:
            log.error("publish_batch.unaudited", events=len(admitted), reason=str(error))
            for index, _ in admitted:
                results[index].error.CopyFrom(
                    _publish_error(
                        grpc.StatusCode.UNAVAILABLE,
                        f"{error}; not accepted, retry with the same event id",
                    )
                )
            admitted = []
        if admitted:
            self._deps.failpoint("publish.audited")
        stored_all = await self._store_window.in_pieces(
            principal.agency,
            [(a.subject, a.data, a.headers) for _, a in admitted],
            lambda piece: self._deps.store.publish_pipelined(piece, self._timeout(context)),
        )
        if admitted:
            self._deps.failpoint("publish.stored")
        failures: list[audit_pb2.AuditEntry] = []
        duplicates: list[audit_pb2.AuditEntry] = []
        # Advisories share a quarter of the response's size limit (refusals had half).
        advice_room = self._deps.config.gateway.max_message_bytes // 4
        for (index, accepted), stored in zip(admitted, stored_all, strict=True):
            if isinstance(stored, StoreError):
                failures.append(_failure_entry(principal, accepted, stored))
                results[index].error.CopyFrom(
                    _publish_error(_store_code(stored), _store_message(stored))
                )
            else:
                receipt = results[index].receipt
                _fill_receipt(receipt, accepted, stored, max(0, advice_room))
                advice_room -= sum(a.ByteSize() + 3 for a in receipt.advisories)
                self._observe(principal, accepted, stored)
                if stored.duplicate:
                    duplicates.append(_stored_entry(principal, accepted, stored))
                else:
                    self._deps.follow_up(_stored_entry(principal, accepted, stored))
        await self._deps.record_best_effort([*failures, *duplicates])
        log.info(
            "publish_batch.done",
            events=len(request.events),
            stored=len(admitted) - len(failures) - len(duplicates),
            duplicates=len(duplicates),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response


class _Session:
    """The deliveries of one Subscribe stream that await the subscriber's answer (`unacked`),
    and the events whose ack it answered lately.

    JetStream redelivers an event whose ack wait ran out. If the subscriber has not answered
    yet, the redelivery replaces the stale delivery from the moment it is planned (an ack of
    that one is then answered "not confirmed"). If its ack is on the way to JetStream (held up,
    say, by a cut-off consumer leader), the redelivery is not sent: the ack settles the event,
    or if it fails, the ack wait brings the event back. So nothing follows an ack on the
    stream, confirmed or about to be."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.unacked: dict[int, tuple[Msg, Delivered]] = {}
        self._by_sequence: dict[int, int] = {}  # stream sequence → delivery id, of `unacked`
        self._acking: set[int] = set()  # stream sequences whose ack is on its way to JetStream
        # Acked since the current fetch began. Acks confirmed before it are found by their
        # record in the DUTYLINK_ACKED stream instead (see Subscriber._acks_confirmed).
        self.acked_since_fetch: set[int] = set()
        self.room = asyncio.Event()
        self.room.set()
        self._next_id = 0

    def acking(self, sequence: int) -> bool:
        return sequence in self._acking

    def add(self, message: Msg, delivered: Delivered) -> int:
        sequence = message.metadata.sequence.stream
        if (stale := self._by_sequence.pop(sequence, None)) is not None:
            self.unacked.pop(stale, None)
        self._next_id += 1
        self.unacked[self._next_id] = (message, delivered)
        self._by_sequence[sequence] = self._next_id
        if len(self.unacked) >= self.limit:
            self.room.clear()
        return self._next_id

    def take(self, delivery_id: int, *, ack: bool) -> tuple[Msg, Delivered] | None:
        """The delivery the subscriber just acked or nacked; None if unknown or stale."""
        taken = self.unacked.pop(delivery_id, None)
        if taken is not None:
            sequence = taken[0].metadata.sequence.stream
            self._by_sequence.pop(sequence, None)
            if ack:
                self._acking.add(sequence)
        if len(self.unacked) < self.limit:
            self.room.set()
        return taken

    def settled(self, sequence: int, *, acked: bool) -> None:
        self._acking.discard(sequence)
        if acked:
            self.acked_since_fetch.add(sequence)

    @property
    def free(self) -> int:
        return self.limit - len(self.unacked)


@dataclass
class _Planned:
    """What to do with one fetched message, decided before anything is sent, so that its audit
    entry can be made durable first."""

    message: Msg
    entry: audit_pb2.AuditEntry
    delivered: Delivered
    # Set for an event to send; None to withhold it (acked) or dead-letter it.
    delivery: gateway_pb2.Delivery | None = None
    dead_letter: str = ""  # the reason, when dead-lettering
    already_acked: bool = False  # a redelivery of an event whose ack was confirmed


class Subscriber(gateway_pb2_grpc.SubscriberServiceServicer):
    # How long one pull waits for events; also how soon a closed stream is noticed.
    FETCH_WAIT_SECONDS = 0.5

    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        principal: Principal,
        name: str,
        code: grpc.StatusCode,
        message: str,
        problems: tuple[FieldProblem, ...] = (),
    ) -> NoReturn:
        outcome = (
            audit_pb2.AUDIT_OUTCOME_INVALID
            if code == grpc.StatusCode.INVALID_ARGUMENT
            else audit_pb2.AUDIT_OUTCOME_FAILED
        )
        await self._deps.record_best_effort(
            [
                gateway_entry(
                    audit_pb2.AUDIT_ACTION_SUBSCRIBE,
                    outcome,
                    actor=principal.agency,
                    subscription=name,
                    reason=message,
                )
            ]
        )
        await abort(context, status(code, message, problems))

    # Writes with context.write() instead of yielding, so the generated ABC's return type differs.
    async def Subscribe(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[gateway_pb2.SubscribeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        # read()/write() rather than the iterator: acks are read while deliveries are written.
        principal = await authenticate(self._deps.authenticator, context, "Subscribe")
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        request = cast(gateway_pb2.SubscribeRequest, first)
        if not request.HasField("open"):
            problem = FieldProblem(
                "open", "the first message must open a subscription", "subscribe.open_first"
            )
            await self._refuse(
                context,
                principal,
                "",
                grpc.StatusCode.INVALID_ARGUMENT,
                problem.description,
                (problem,),
            )
        opening = request.open
        problems = tuple(self._deps.validator.problems(opening, "open"))
        if problems:
            await self._refuse(
                context,
                principal,
                opening.name,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid subscription",
                problems,
            )
        settings = self._deps.config.subscriptions
        limit = min(opening.max_in_flight or settings.default_in_flight, settings.max_in_flight)
        selection = subjects.Filter(
            families=tuple(opening.filter.families),
            types=tuple(opening.filter.types),
            jurisdiction_prefixes=tuple(opening.filter.jurisdiction_prefixes),
            planes=tuple(opening.filter.planes),
        )
        try:
            filters = subjects.filter_subjects(selection, limit=settings.max_filter_subjects)
        except subjects.FilterTooBroadError as error:
            problem = FieldProblem("open.filter", str(error), "subscribe.filter_size")
            await self._refuse(
                context,
                principal,
                opening.name,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(error),
                (problem,),
            )
        try:
            subscription = await self._deps.store.open_subscription(
                principal.agency, opening.name, filters, limit
            )
        except StoreError as error:
            await self._refuse(context, principal, opening.name, _store_code(error), str(error))
        await self._deps.record_best_effort(
            [
                gateway_entry(
                    audit_pb2.AUDIT_ACTION_SUBSCRIBE,
                    actor=principal.agency,
                    subscription=opening.name,
                    reason=f"{len(filters)} filter subjects, {subscription.pending} pending",
                )
            ]
        )
        log.info(
            "subscribe.opened",
            subscription=opening.name,
            filters=len(filters),
            pending=subscription.pending,
        )
        session = _Session(limit)
        writing = asyncio.Lock()

        async def send(response: gateway_pb2.SubscribeResponse) -> None:
            # One write at a time: deliveries and ack confirmations share the stream.
            async with writing:
                await context.write(response)

        acks: set[asyncio.Task[None]] = set()
        confirm = send if opening.confirm_acks else None
        reader = asyncio.create_task(self._read_acks(context, session, acks, confirm))
        try:
            await send(
                gateway_pb2.SubscribeResponse(
                    ready=gateway_pb2.SubscriptionReady(
                        name=opening.name, pending=subscription.pending, max_in_flight=limit
                    )
                )
            )
            await self._deliver(send, principal, opening.name, subscription, session, reader)
            if self._deps.stopping.is_set():
                await abort(
                    context,
                    status(
                        grpc.StatusCode.UNAVAILABLE,
                        "the gateway is shutting down: reopen the subscription (it resumes)",
                    ),
                )
        finally:
            reader.cancel()
            if acks:
                await asyncio.wait(acks)
            # Whatever the subscriber did not ack goes back for prompt redelivery.
            for message, _ in session.unacked.values():
                try:
                    await message.nak()
                except Exception:  # the connection is gone: the ack wait redelivers them anyway
                    break
            await subscription.close()
            log.info("subscribe.closed", subscription=opening.name, unacked=len(session.unacked))

    def _plan(
        self, principal: Principal, name: str, message: Msg, *, ack_confirmed: bool = False
    ) -> _Planned:
        """Decide what one fetched message becomes: a delivery (redacted as the policy says),
        a withheld event, a dead letter, or (`ack_confirmed`: a redelivery of an event whose
        ack a replica confirmed) an ack again; with its audit entry. No I/O."""
        max_deliveries = self._deps.config.subscriptions.max_deliveries
        attempt = message.metadata.num_delivered
        headers = message.headers or {}
        delivered = Delivered(
            recipient=principal.agency,
            subscription=name,
            event_id=headers.get("ce-id", ""),
            event_type=headers.get("ce-type", ""),
            stream_sequence=message.metadata.sequence.stream,
            attempt=attempt,
        )
        if ack_confirmed:
            reason = "redelivered although its ack was confirmed: acked again, not sent"
            entry = settled_entry(delivered, audit_pb2.AUDIT_ACTION_ACK, reason)
            return _Planned(message, entry, delivered, already_acked=True)
        event: event_pb2.Event | None = None
        if attempt > max_deliveries:
            reason = f"not acknowledged after {max_deliveries} deliveries"
        else:
            try:
                event = event_pb2.Event.FromString(message.data)
            except Exception:  # any undecodable payload is poison, not a crash
                reason = "undecodable event"
        if event is None:
            return _Planned(
                message,
                settled_entry(delivered, audit_pb2.AUDIT_ACTION_DEAD_LETTER, reason),
                delivered,
                dead_letter=reason,
            )
        delivered = dataclasses.replace(
            delivered,
            event_id=event.id,
            event_type=event.type,
            incident_ids=tuple(incident_ids(event)),
        )
        decision = self._deps.authorizer.decide(principal, "receive", event, self._deps.clock())
        if not decision.allowed:
            # Never sent, not even in part; acked so it does not come back to this agency.
            return _Planned(message, withheld_entry(delivered, decision), delivered)
        sent, withheld = redact(event, decision.redacted_fields)
        commitments = commit(self._deps.audit.commitment_key, event, principal.agency, withheld)
        delivery = gateway_pb2.Delivery(
            event=sent,
            stream_sequence=delivered.stream_sequence,
            attempt=attempt,
            withheld_fields=withheld,
            policy_version=decision.policy_version,
            rule_ids=decision.rule_ids,
        )
        entry = delivery_entry(
            delivered, data=sent.SerializeToString(), decision=decision, commitments=commitments
        )
        return _Planned(message, entry, delivered, delivery=delivery)

    async def _deliver(
        self,
        send: Callable[[gateway_pb2.SubscribeResponse], Awaitable[None]],
        principal: Principal,
        name: str,
        subscription: DurableSubscription,
        session: _Session,
        reader: asyncio.Task[None],
    ) -> None:
        stopping = self._deps.stopping
        while not reader.done() and not stopping.is_set():
            if not session.room.is_set():
                room = asyncio.ensure_future(session.room.wait())
                stop = asyncio.ensure_future(stopping.wait())
                await asyncio.wait({room, stop, reader}, return_when=asyncio.FIRST_COMPLETED)
                room.cancel()
                stop.cancel()
                continue
            session.acked_since_fetch.clear()
            try:
                messages = await subscription.fetch(session.free, self.FETCH_WAIT_SECONDS)
            except StoreError as error:
                log.warning("subscribe.fetch_failed", subscription=name, reason=str(error))
                await asyncio.sleep(self.FETCH_WAIT_SECONDS)
                continue
            confirmed = await self._acks_confirmed(
                subjects.consumer_name(principal.agency, name), messages
            )
            confirmed |= session.acked_since_fetch
            plans = []
            for message in messages:
                sequence = message.metadata.sequence.stream
                if session.acking(sequence):
                    # Redelivered while the subscriber's ack is on its way: see _Session.
                    log.info(
                        "subscribe.redelivery_while_acking", subscription=name, sequence=sequence
                    )
                    continue
                plan = self._plan(principal, name, message, ack_confirmed=sequence in confirmed)
                if plan.delivery is not None:
                    # In the session now, before the audit append: an ack of a delivery this
                    # one supersedes that comes meanwhile is then not confirmed.
                    plan.delivery.delivery_id = session.add(plan.message, plan.delivered)
                plans.append(plan)
            if not plans:
                continue
            try:
                # Audit first, one append for the whole fetch: nothing leaves unrecorded.
                await self._deps.record([plan.entry for plan in plans])
            except AuditUnavailableError as error:
                log.error("subscribe.unaudited", subscription=name, reason=str(error))
                for plan in plans:
                    if plan.delivery is not None:
                        session.take(plan.delivery.delivery_id, ack=False)  # never sent
                    with contextlib.suppress(Exception):
                        await plan.message.nak(delay=self.FETCH_WAIT_SECONDS)
                await asyncio.sleep(self.FETCH_WAIT_SECONDS)
                continue
            for plan in plans:
                if plan.dead_letter:
                    await self._dead_letter(plan, principal.agency, name)
                elif plan.already_acked:
                    log.warning(
                        "subscribe.acked_again",
                        subscription=name,
                        sequence=plan.delivered.stream_sequence,
                    )
                    with contextlib.suppress(StoreError):  # if lost, it comes back: same again
                        await self._deps.store.ack(plan.message)
                elif plan.delivery is None:
                    log.info(
                        "subscribe.not_allowed",
                        subscription=name,
                        event_id=plan.delivered.event_id,
                        policy_version=plan.entry.policy_version[:12],
                    )
                    await plan.message.ack()
                else:
                    await send(gateway_pb2.SubscribeResponse(delivery=plan.delivery))
        if reader.done():
            reader.result()  # surface a reader failure

    async def _acks_confirmed(self, consumer: str, messages: Sequence[Msg]) -> set[int]:
        """The stream sequences among the redeliveries in `messages` whose ack some replica
        confirmed. JetStream answers an ack before it is replicated, so when a consumer's leader
        is cut off just then, its successor redelivers (after the ack wait) an event whose ack
        was confirmed; such a redelivery is acked again, never sent. A lookup that fails counts
        as not confirmed: the event is sent (at least once still holds)."""
        redelivered = [m.metadata.sequence.stream for m in messages if m.metadata.num_delivered > 1]
        if not redelivered:
            return set()
        found = await asyncio.gather(
            *(self._deps.store.ack_confirmed(consumer, sequence) for sequence in redelivered),
            return_exceptions=True,
        )
        for answer in found:
            if isinstance(answer, BaseException):
                log.warning("subscribe.ack_record_unreadable", reason=str(answer))
        return {
            sequence for sequence, answer in zip(redelivered, found, strict=True) if answer is True
        }

    async def _dead_letter(self, plan: _Planned, agency: str, name: str) -> None:
        max_deliveries = self._deps.config.subscriptions.max_deliveries
        deliveries = min(plan.delivered.attempt - 1, max_deliveries)
        try:
            await self._deps.store.dead_letter(
                plan.message, agency, name, deliveries=deliveries, reason=plan.dead_letter
            )
        except StoreError as error:
            # Not acked, so JetStream offers it again and the next attempt retries the move.
            log.warning("subscribe.dead_letter_failed", subscription=name, reason=str(error))
            return
        log.warning(
            "subscribe.dead_lettered",
            subscription=name,
            sequence=plan.delivered.stream_sequence,
            reason=plan.dead_letter,
        )

    async def _settle(
        self,
        session: _Session,
        delivery_id: int,
        message: Msg,
        delivered: Delivered,
        nack_delay: float | None,
        confirm: Callable[[gateway_pb2.SubscribeResponse], Awaitable[None]] | None,
    ) -> None:
        """Record the subscriber's ack or nack, then pass it to JetStream, then (if asked)
        confirm an ack to the subscriber. Recorded first: if the gateway dies in between, or the
        log cannot be appended, JetStream redelivers the event after the ack wait, and the log
        shows that redelivery. Confirmed last: a confirmed ack is never followed by a redelivery."""
        action = audit_pb2.AUDIT_ACTION_ACK if nack_delay is None else audit_pb2.AUDIT_ACTION_NACK
        acked = False
        try:
            await self._deps.record([settled_entry(delivered, action)])
            if nack_delay is not None:
                await message.nak(delay=nack_delay or None)
            elif confirm is None:
                await self._deps.store.ack(message)  # double ack: JetStream has recorded it
                acked = True
            else:
                # The ack, and the record that lets every replica recognise a redelivery of it
                # (see _acks_confirmed), both durable before the subscriber hears "confirmed".
                consumer = subjects.consumer_name(delivered.recipient, delivered.subscription)
                await asyncio.gather(
                    self._deps.store.ack(message),
                    self._deps.store.record_confirmed_ack(consumer, delivered.stream_sequence),
                )
                acked = True
                confirmed = gateway_pb2.AckConfirmed(delivery_id=delivery_id)
                await confirm(gateway_pb2.SubscribeResponse(ack_confirmed=confirmed))
        except Exception as error:  # a lost ack is redelivered; it must not end the stream
            reason = f"{type(error).__name__}: {error}"
            log.warning(
                "subscribe.settle_failed",
                subscription=delivered.subscription,
                event_id=delivered.event_id,
                reason=reason,
            )
            if confirm is not None and nack_delay is None and not acked:
                with contextlib.suppress(Exception):  # the stream itself may be gone
                    await confirm(_not_confirmed(delivery_id, f"not recorded: {reason}"))
        finally:
            session.settled(delivered.stream_sequence, acked=acked)

    async def _read_acks(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        session: _Session,
        acks: set[asyncio.Task[None]],
        confirm: Callable[[gateway_pb2.SubscribeResponse], Awaitable[None]] | None,
    ) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            action = cast(gateway_pb2.SubscribeRequest, request)
            if action.HasField("nack") and (problems := self._deps.validator.problems(action)):
                # A delay past the schema's hour, or past what any Duration can hold, would
                # otherwise reach JetStream or fail its conversion in this task. (Acks need no
                # check: an unknown delivery id is answered as such.)
                fields = ", ".join(sorted({p.field or p.rule_id for p in problems}))
                await abort(
                    context,
                    status(grpc.StatusCode.INVALID_ARGUMENT, f"invalid {fields}", tuple(problems)),
                )
            if action.HasField("ack"):
                delivery_id, delay = action.ack.delivery_id, None
            elif action.HasField("nack"):
                delivery_id = action.nack.delivery_id
                delay = action.nack.delay.ToTimedelta().total_seconds()
            else:
                continue
            if (taken := session.take(delivery_id, ack=delay is None)) is not None:
                # Settled concurrently (at most the session's window at once), so the audit
                # log's group commit and JetStream's acks are shared among them.
                task = asyncio.create_task(
                    self._settle(session, delivery_id, *taken, delay, confirm)
                )
                acks.add(task)
                task.add_done_callback(acks.discard)
            elif confirm is not None and delay is None:
                reason = "not awaited: superseded by a redelivery (ack that one), or answered"
                await confirm(_not_confirmed(delivery_id, reason))


def _not_confirmed(delivery_id: int, reason: str) -> gateway_pb2.SubscribeResponse:
    """The answer to an ack that did not count, so that the subscriber need not wait it out."""
    answer = gateway_pb2.AckNotConfirmed(delivery_id=delivery_id, reason=reason)
    return gateway_pb2.SubscribeResponse(ack_not_confirmed=answer)


class BreakGlass(gateway_pb2_grpc.BreakGlassServiceServicer):
    """Break-glass declarations: checked against the policy, recorded durably, then in force."""

    def __init__(self, deps: Dependencies, grants: GrantBook) -> None:
        self._deps = deps
        self._grants = grants

    async def DeclareEmergency(
        self,
        request: gateway_pb2.DeclareEmergencyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.DeclareEmergencyResponse:
        principal = await authenticate(self._deps.authenticator, context, "DeclareEmergency")
        problems = tuple(self._deps.validator.problems(request))
        if problems:
            await abort(
                context, status(grpc.StatusCode.INVALID_ARGUMENT, "invalid declaration", problems)
            )
        policy = self._deps.authorizer.policy
        profile = policy.agency(principal.agency)

        def fact(
            outcome: audit_pb2.AuditOutcome.ValueType,
            reason: str,
            grant_id: str = "",
            data: bytes = b"",
        ) -> list[audit_pb2.AuditEntry]:
            return [
                gateway_entry(
                    audit_pb2.AUDIT_ACTION_BREAK_GLASS,
                    outcome,
                    actor=principal.agency,
                    reason=reason,
                    policy_version=policy.version,
                    grant_id=grant_id,
                    data=data,
                )
            ]

        if profile is None or not (policy.break_glass.roles & principal.roles & profile.roles):
            refusal = (
                f"{principal.agency} holds no break-glass role "
                f"({', '.join(sorted(policy.break_glass.roles)) or 'none in the policy'})"
            )
            await self._deps.record_best_effort(fact(audit_pb2.AUDIT_OUTCOME_DENIED, refusal))
            await abort(context, status(grpc.StatusCode.PERMISSION_DENIED, refusal))
        now = self._deps.clock()
        grant_id = f"bg-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
        try:
            grant = declare_grant(
                policy,
                grant_id=grant_id,
                agency=principal.agency,
                roles=principal.roles,
                reason=request.reason,
                now=now,
                duration=request.duration.ToTimedelta(),
                incident_id=request.incident_id,
                jurisdiction=request.jurisdiction_prefix,
                agencies=request.agencies,
                unredact=tuple(request.fields),
                receive_types=tuple(request.receive_types),
            )
        except BreakGlassError as error:
            await self._deps.record_best_effort(fact(audit_pb2.AUDIT_OUTCOME_INVALID, str(error)))
            await abort(context, status(grpc.StatusCode.INVALID_ARGUMENT, str(error)))
        record = gateway_pb2.EmergencyGrant(
            id=grant.id, declared_by=grant.declared_by, scope=request
        )
        record.declared_at.FromDatetime(grant.declared_at)
        record.not_after.FromDatetime(grant.not_after)
        data = record.SerializeToString()
        # The entry names the grant and the digest of its record (which holds the free-text
        # reason; the log holds no free text from people).
        summary = (
            f"incident {request.incident_id or '-'}, fields {', '.join(request.fields) or '-'}, "
            f"until {grant.not_after.isoformat()}"
        )
        try:
            await self._deps.record(fact(audit_pb2.AUDIT_OUTCOME_ACCEPTED, summary, grant.id, data))
        except AuditUnavailableError as error:
            await abort(
                context, status(grpc.StatusCode.UNAVAILABLE, f"{error}; not declared, retry")
            )
        try:
            await self._deps.store.record_grant(grant.id, data)
        except StoreError as error:
            # Not recorded means not in force: an elevation nobody can review must not exist.
            await self._deps.record_best_effort(
                fact(audit_pb2.AUDIT_OUTCOME_FAILED, str(error), grant.id, data)
            )
            await abort(context, status(_store_code(error), _store_message(error)))
        self._grants.add(record)
        log.warning(
            "breakglass.declared",
            grant_id=grant.id,
            incident_id=request.incident_id,
            jurisdiction=request.jurisdiction_prefix,
            fields=list(request.fields),
            not_after=grant.not_after.isoformat(),
            reason=request.reason,
        )
        return gateway_pb2.DeclareEmergencyResponse(grant=record)

    async def ListEmergencies(
        self,
        request: gateway_pb2.ListEmergenciesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ListEmergenciesResponse:
        await authenticate(self._deps.authenticator, context, "ListEmergencies")
        return gateway_pb2.ListEmergenciesResponse(grants=self._grants.records())
