"""PublisherService: Publish and PublishBatch, one pipeline (`Publisher._publish`); a Publish is
a batch of one that answers with a status where a batch answers with a result per event, and
an agency's Publish calls that arrive while several of its groups are being written go through
together (group commit, gateway.rpc.group_commit).

Each call authenticates first (the agency comes from the credential only); then each event goes
through the pipeline: the stateful guards' state read, admission (gateway.core.admission), the
stateful guards' commit, the refusals audited, the accepted events audited (fail closed: no
event is stored without its entry), JetStream, the store's answer audited. An event is answered
only after JetStream has acknowledged (and, with `sync_interval: always`, fsynced) it, and after
its audit entry is durable."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

import grpc

from dutylink.policies.engine import Decision
from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.access.auth import Principal
from gateway.audit.log import AuditUnavailableError
from gateway.core.admission import Admitted, Refused, admit_all
from gateway.core.ports import Stored, StoreError
from gateway.core.validation import FieldProblem
from gateway.core.workflows.notices import GATEWAY_AGENCY, GATEWAY_TYPES
from gateway.rpc.calls import (
    MAX_ECHOED_ID_CHARS,
    REFUSAL_CODES,
    abort,
    authenticate,
    shorten,
    status,
)
from gateway.rpc.dependencies import Dependencies, log
from gateway.rpc.fairness import FairScheduler, StoreWindow
from gateway.rpc.group_commit import GroupCommit
from gateway.rpc.publish_outcomes import (
    Outcome,
    Published,
    accepted_entry,
    batch_response,
    count_outcomes,
    failure_entry,
    failure_status,
    fill_receipt,
    never_stored,
    refusal_entry,
    store_answer_entry,
    stored_before,
)

# Who publishes the gateway's own notices (ledger expiries and replenishment notices).
GATEWAY_PRINCIPAL = Principal(GATEWAY_AGENCY)


class TracedEvent(NamedTuple):
    """One Publish call's event with the trace context it is stored with."""

    event: event_pb2.Event
    trace: Mapping[str, str]


class NoticeNotStoredError(Exception):
    """A notice of the gateway's own was not stored (the caller tries again later)."""


def _log_failure(event_id: str, outcome: Refused | AuditUnavailableError | StoreError) -> None:
    event_id = shorten(event_id, MAX_ECHOED_ID_CHARS)
    if isinstance(outcome, Refused):
        code = REFUSAL_CODES[outcome.kind].name
        log.info("publish.refused", event_id=event_id, code=code, reason=outcome.message)
    elif isinstance(outcome, AuditUnavailableError):
        log.error("publish.unaudited", event_id=event_id, reason=str(outcome))
    else:
        log.warning("publish.failed", event_id=event_id, reason=str(outcome))


# Groups of one agency's Publish calls written at once. Measured (dutylink bench, 2 cores,
# medians of 3 single runs each; each event opens an incident): at most 1 group running,
# 631 calls/s with 16 in flight, p50/p99 publish -> delivery at 250/s 18.4/43 ms; 4: 616/s,
# 10.0/38 ms; 8: 599/s, 8.8/19 ms; no grouping: ~565/s, 8.6 ms p50. A warning's latency
# below saturation weighs more than 5 % of the unary rate.
UNARY_GROUPS_RUNNING = 8


class Publisher(gateway_pb2_grpc.PublisherServiceServicer):
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps
        # One agency's batches cannot hold the others up: admission goes turn by turn among
        # agencies, and a batch's events go to JetStream a few at a time (gateway.rpc.fairness).
        self._turns = FairScheduler()
        self._store_window = StoreWindow(deps.config.gateway.agency_max_batch_events_storing)
        # An agency's concurrent Publish calls share the batch pipeline (gateway.rpc.group_commit).
        self._unary: GroupCommit[Principal, TracedEvent, Outcome] = GroupCommit(
            self._publish_group, deps.config.gateway.max_batch_events, UNARY_GROUPS_RUNNING
        )

    def _timeout(self, context: grpc.aio.ServicerContext[Any, Any] | None) -> float:
        remaining = context.time_remaining() if context is not None else None
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

    async def _publish(
        self,
        principal: Principal,
        events: Sequence[event_pb2.Event],
        context: grpc.aio.ServicerContext[Any, Any] | None,
        *,
        window: StoreWindow | None,
        decide: Callable[[event_pb2.Event, datetime], Decision] | None = None,
        traces: Sequence[Mapping[str, str]] = (),
    ) -> list[Outcome]:
        """The publish pipeline for Publish (a batch of one) and PublishBatch alike: what
        became of each event, in order. Each step takes the events the step before let through,
        all at once (one audit append each); `window` (a batch's) lets them go to JetStream a
        few at a time. `decide` replaces the policy for the gateway's own notices; `traces`:
        each event's trace context headers, stored with it (gateway.telemetry.tracing)."""
        deps, sink = self._deps, self._deps.sink
        # One request, one moment of receipt: every event is stamped and decided at `now`.
        now = deps.clock()
        if decide is None:
            decide = partial(self._agency_decision, principal)
        sealer = deps.sealing.sealer()
        admitted_or_refused = await self._turns.in_turns(
            principal.agency,
            events,
            lambda piece: admit_all(
                deps.validator,
                lambda stamped: decide(stamped, now),
                principal,
                piece,
                now,
                max_event_bytes=deps.config.gateway.max_message_bytes,
                catalogue=deps.catalogue,
                sealer=sealer,
                hashing=deps.hashing,
            ),
        )
        # The lifecycle and ledger transitions, written with compare-and-set.
        commitment = await deps.stateful.commit(principal, admitted_or_refused)
        judged = commitment.outcomes
        refusals = [
            refusal_entry(principal, event, outcome)
            for event, outcome in zip(events, judged, strict=True)
            if isinstance(outcome, Refused)
        ]
        if refusals:
            await sink.record_best_effort(refusals)
        admitted = [
            dataclasses.replace(a, headers={**a.headers, **trace}) if trace else a
            for a, trace in zip(judged, traces or [{}] * len(judged), strict=True)
            if isinstance(a, Admitted)
        ]
        stored = await self._audit_and_store(principal, admitted, context, window)
        # Transitions that must not stay: those of events the store refused for good, and of
        # retries it already held (judged afresh when their entries had forgotten their ids).
        undone = [
            a for a, o in zip(admitted, stored, strict=True) if never_stored(o) or stored_before(o)
        ]
        if undone:
            await commitment.take_back(undone)
        if commitment.notices:
            await self._publish_notices(commitment.notices)
        # What became of the admitted events, in their order.
        answers = iter(stored)
        outcomes = [next(answers) if isinstance(o, Admitted) else o for o in judged]
        count_outcomes(self._deps.metrics, principal.agency, events, outcomes)
        return outcomes

    async def _publish_group(
        self, principal: Principal, calls: Sequence[TracedEvent]
    ) -> list[Outcome]:
        """One agency's Publish calls that came together, through the pipeline at once (with
        the configured publish timeout: each call's own deadline still ends its wait)."""
        events = [call.event for call in calls]
        traces = [call.trace for call in calls]
        return await self._publish(principal, events, None, window=None, traces=traces)

    def _agency_decision(
        self, principal: Principal, event: event_pb2.Event, now: datetime
    ) -> Decision:
        """The policy's decision; the types only the gateway publishes are refused whatever
        the policy says."""
        if event.type in GATEWAY_TYPES:
            return Decision(False, (), f"only the gateway publishes {event.type}", (),
                            self._deps.authorizer.holder.version)  # fmt: skip
        return self._deps.authorizer.decide(principal, "publish", event, now)

    def _gateway_decision(self, event: event_pb2.Event, now: datetime) -> Decision:
        if event.type in GATEWAY_TYPES:
            return Decision(True, ("gateway-notices",), "the gateway's own notice", (),
                            self._deps.authorizer.holder.version)  # fmt: skip
        return Decision(False, (), f"the gateway publishes no {event.type} of its own", (),
                        self._deps.authorizer.holder.version)  # fmt: skip

    async def publish_own(self, events: Sequence[event_pb2.Event]) -> list[Outcome]:
        """Publish the gateway's own notices (source SYSTEM_AGENCY) through the same pipeline:
        admission (with the notices' fixed decision), lifecycle and ledger, audit, store."""
        return await self._publish(
            GATEWAY_PRINCIPAL, events, None, window=None, decide=self._gateway_decision
        )

    async def publish_own_or_raise(self, events: Sequence[event_pb2.Event]) -> None:
        """`publish_own`, raising unless every event is stored (for the ledger's timer, which
        tries again at its next check)."""
        outcomes = await self.publish_own(events)
        failed = [o for o in outcomes if not isinstance(o, Published)]
        if failed:
            raise NoticeNotStoredError(f"{len(failed)} of {len(events)} notices not stored: "
                                       f"{failed[0]}")  # fmt: skip

    async def _publish_notices(self, notices: Sequence[event_pb2.Event]) -> None:
        """The notices the admitted events raised; a failure is logged, never the caller's."""
        for outcome in await self.publish_own(notices):
            if not isinstance(outcome, Published):
                log.error("publish.notice_failed", reason=str(outcome))

    async def _audit_and_store(
        self,
        principal: Principal,
        admitted: Sequence[Admitted],
        context: grpc.aio.ServicerContext[Any, Any] | None,
        window: StoreWindow | None,
    ) -> list[Outcome]:
        """The admitted events audited (fail closed), stored, and the store's answers audited."""
        deps, sink = self._deps, self._deps.sink
        if not admitted:
            return []
        deps.failpoint("publish.admitted")
        try:
            # Audit first, in one append for all of them: no event stored without its entry.
            await sink.record([accepted_entry(principal, a, deps.hashing) for a in admitted])
        except AuditUnavailableError as error:
            return [error] * len(admitted)
        deps.failpoint("publish.audited")
        stored_all = await self._store(admitted, context, principal, window)
        if any(isinstance(stored, Stored) for stored in stored_all):
            deps.failpoint("publish.stored")
        # Stored entries ride with the next append; failures and duplicates are decisions the
        # log must show before the answer.
        outcomes: list[Outcome] = []
        before_answer: list[audit_pb2.AuditEntry] = []
        for accepted, stored in zip(admitted, stored_all, strict=True):
            if isinstance(stored, StoreError):
                before_answer.append(failure_entry(principal, accepted, stored, deps.hashing))
                outcomes.append(stored)
                continue
            self._observe(principal, accepted, stored)
            outcomes.append(Published(accepted, stored))
            if stored.duplicate:
                before_answer.append(store_answer_entry(principal, accepted, stored, deps.hashing))
            else:
                sink.follow_up(store_answer_entry(principal, accepted, stored, deps.hashing))
        if before_answer:
            await sink.record_best_effort(before_answer)
        return outcomes

    async def _store(
        self,
        admitted: Sequence[Admitted],
        context: grpc.aio.ServicerContext[Any, Any] | None,
        principal: Principal,
        window: StoreWindow | None,
    ) -> list[Stored | StoreError]:
        """JetStream's answer for each event, in order (within `window`, if any)."""

        async def store(piece: Sequence[Admitted]) -> list[Stored | StoreError]:
            messages = [(a.subject, a.data, a.headers) for a in piece]
            try:
                return await self._deps.store.publish_pipelined(messages, self._timeout(context))
            except StoreError as error:  # not connected: nothing of the piece was sent
                return [error] * len(piece)

        if window is None:
            return await store(admitted)
        return await window.in_pieces(principal.agency, admitted, store)

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
        trace = self._deps.tracing.carried(context.invocation_metadata())
        outcome = await self._unary.submit(principal, TracedEvent(request.event, trace))
        if not isinstance(outcome, Published):
            _log_failure(request.event.id, outcome)
            await abort(context, failure_status(outcome, request.event.id))
        admitted, stored = outcome.admitted, outcome.stored
        log.info(
            "publish.stored",
            event_id=admitted.event.id,
            type=admitted.event.type,
            sequence=stored.sequence,
            duplicate=stored.duplicate,
            conflict=stored.conflict,
            rule_ids=admitted.decision.rule_ids,
            policy_version=admitted.decision.policy_version[:12],
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        receipt = gateway_pb2.Receipt()
        fill_receipt(receipt, admitted, stored)
        return gateway_pb2.PublishResponse(receipt=receipt)

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
        trace = self._deps.tracing.carried(context.invocation_metadata())
        outcomes = await self._publish(
            principal,
            request.events,
            context,
            window=self._store_window,
            traces=[trace] * len(request.events) if trace else (),
        )
        response = batch_response(
            request.events, outcomes, self._deps.config.gateway.max_message_bytes
        )
        unaudited = [o for o in outcomes if isinstance(o, AuditUnavailableError)]
        if unaudited:
            log.error("publish_batch.unaudited", events=len(unaudited), reason=str(unaudited[0]))
        published = [o.stored for o in outcomes if isinstance(o, Published)]
        duplicates = sum(stored.duplicate for stored in published)
        log.info(
            "publish_batch.done",
            events=len(request.events),
            stored=len(published) - duplicates,
            duplicates=duplicates,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response
