"""PublisherService: Publish and PublishBatch.

Each call authenticates first (the agency comes from the credential only), then hands the events
to the pure admission step, then to JetStream. A publish is answered only after JetStream has
acknowledged (and, with `sync_interval: always`, fsynced) the event, and after its audit entry
is durable."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import grpc

from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.access.auth import Principal
from gateway.audit.entries import (
    publish_entry,
    stored_entry,
)
from gateway.audit.log import AuditUnavailableError
from gateway.core.admission import Admitted, Refused, admit_all
from gateway.core.ports import Stored, StoreError
from gateway.core.validation import FieldProblem
from gateway.rpc.calls import (
    MAX_ECHOED_ID_CHARS,
    MAX_STATUS_DETAIL_BYTES,
    MAX_STATUS_MESSAGE_CHARS,
    REFUSAL_CODES,
    REFUSAL_OUTCOMES,
    abort,
    authenticate,
    fit_problems,
    shorten,
    status,
    store_code,
    store_message,
)
from gateway.rpc.dependencies import Dependencies, log
from gateway.rpc.fairness import FairScheduler, StoreWindow


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


def _refusal_entry(
    principal: Principal, event: event_pb2.Event, refused: Refused
) -> audit_pb2.AuditEntry:
    return publish_entry(
        principal.agency,
        event,
        REFUSAL_OUTCOMES[refused.kind],
        reason=refused.message,
        decision=refused.decision,
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

    def _admit_all(
        self, principal: Principal, events: Sequence[event_pb2.Event], now: datetime
    ) -> list[Admitted | Refused]:
        """The admission pipeline for Publish (a batch of one) and PublishBatch alike."""
        return admit_all(
            self._deps.validator,
            lambda stamped: self._deps.authorizer.decide(principal, "publish", stamped, now),
            principal,
            events,
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
            (outcome,) = self._admit_all(principal, (request.event,), self._deps.clock())
        if isinstance(outcome, Refused):
            log.info(
                "publish.refused",
                event_id=shorten(request.event.id, MAX_ECHOED_ID_CHARS),
                code=REFUSAL_CODES[outcome.kind].name,
                reason=outcome.message,
            )
            await self._deps.record_best_effort([_refusal_entry(principal, request.event, outcome)])
            await abort(
                context, status(REFUSAL_CODES[outcome.kind], outcome.message, outcome.problems)
            )
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
            await abort(context, status(store_code(error), store_message(error)))
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
            lambda events: self._admit_all(principal, events, now),
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
                    REFUSAL_CODES[outcome.kind],
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
                    _publish_error(store_code(stored), store_message(stored))
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
