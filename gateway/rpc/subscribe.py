"""SubscriberService: durable subscriptions, policy-filtered and redacted delivery, confirmed acks.

The I/O edge around the delivery state machine (gateway.core.delivery): fetch, plan, audit
append, stream to the subscriber, settle. Over ~400 lines because opening a subscription,
delivering and settling share one stream's state; each step is one short method.
Every ack goes through the store's double ack (EventStore.ack), never the message's own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import grpc
from nats.aio.msg import Msg

from dutylink.policies.redaction import redact
from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.access.auth import Principal
from gateway.audit.commitments import commit
from gateway.audit.entries import (
    Delivered,
    delivery_entry,
    gateway_entry,
    settled_entry,
    withheld_entry,
)
from gateway.audit.log import AuditUnavailableError
from gateway.core import delivery, subjects
from gateway.core.envelope import incident_ids
from gateway.core.ports import StoreError
from gateway.core.sealing import SEALED_HEADER, SealingError, open_sealed
from gateway.core.validation import FieldProblem
from gateway.rpc.calls import (
    abort,
    authenticate,
    refusal_outcome,
    status,
    store_code,
)
from gateway.rpc.dependencies import Dependencies, log
from gateway.store.subscriptions import DurableSubscription


@dataclass(frozen=True)
class _Sent:
    """What the edge keeps of an awaited delivery (the core's opaque handle): the message that
    settles it and the facts its ack or nack is recorded with."""

    message: Msg
    delivered: Delivered


@dataclass
class _Planned:
    """What to do with one fetched message, decided before anything is sent, so that its audit
    entry can be made durable first."""

    message: Msg
    entry: audit_pb2.AuditEntry
    delivered: Delivered
    outcome: delivery.Plan  # the delivery state machine's decision
    delivery: gateway_pb2.Delivery | None = None  # set for a send


@dataclass
class _Stream:
    """One open Subscribe stream as the edge sees it: who and what, its delivery state, and how
    to write to it."""

    principal: Principal
    name: str
    session: delivery.Session[_Sent]
    send: Callable[[gateway_pb2.SubscribeResponse], Awaitable[None]]
    # Set when the subscriber asked for ack confirmations.
    confirm: Callable[[gateway_pb2.SubscribeResponse], Awaitable[None]] | None
    # The subscriber asked for deliveries (and confirmations) in batches.
    batched: bool = False
    # Set when an answer frees a place in the window.
    room: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def consumer(self) -> str:
        return subjects.consumer_name(self.principal.agency, self.name)


# A `deliveries` message holds at most this much (a larger event travels alone): well under the
# 4 MiB that gRPC clients accept by default.
MAX_BATCH_BYTES = 1024 * 1024


class Subscriber(gateway_pb2_grpc.SubscriberServiceServicer):
    # How long one pull waits for events; also how soon a closed stream is noticed.
    FETCH_WAIT_SECONDS = 0.5

    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps
        self._recording: set[asyncio.Task[None]] = set()  # delivery records under way

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        principal: Principal,
        name: str,
        code: grpc.StatusCode,
        message: str,
        problems: tuple[FieldProblem, ...] = (),
    ) -> NoReturn:
        await self._deps.record_best_effort(
            [
                gateway_entry(
                    audit_pb2.AUDIT_ACTION_SUBSCRIBE,
                    refusal_outcome(code),
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
            await self._refuse(context, principal, opening.name, store_code(error), str(error))
        await self._deps.record_best_effort(
            [
                gateway_entry(
                    audit_pb2.AUDIT_ACTION_SUBSCRIBE,
                    actor=principal.agency,
                    subscription=opening.name,
                    reason=principal.noted(
                        f"{len(filters)} filter subjects, {subscription.pending} pending"
                    ),
                )
            ]
        )
        log.info(
            "subscribe.opened",
            subscription=opening.name,
            filters=len(filters),
            pending=subscription.pending,
        )
        writing = asyncio.Lock()

        async def send(response: gateway_pb2.SubscribeResponse) -> None:
            # One write at a time: deliveries and ack confirmations share the stream.
            async with writing:
                await context.write(response)

        stream = _Stream(
            principal,
            opening.name,
            delivery.Session(limit, settings.max_deliveries),
            send,
            confirm=send if opening.confirm_acks else None,
            batched=opening.batch_deliveries,
        )
        acks: set[asyncio.Task[None]] = set()
        reader = asyncio.create_task(self._read_acks(context, stream, acks))
        try:
            await send(
                gateway_pb2.SubscribeResponse(
                    ready=gateway_pb2.SubscriptionReady(
                        name=opening.name, pending=subscription.pending, max_in_flight=limit
                    )
                )
            )
            await self._deliver(stream, subscription, reader)
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
            # Closed first, so that no fetch still out takes back what is given back now.
            await subscription.close()
            # Whatever the subscriber did not ack goes back for prompt redelivery.
            unanswered = stream.session.awaited()
            for sent in unanswered:
                try:
                    await sent.message.nak()
                except Exception:  # the connection is gone: the ack wait redelivers them anyway
                    break
            log.info("subscribe.closed", subscription=opening.name, unacked=len(unanswered))
            with contextlib.suppress(KeyError):  # its lag is no longer this replica's to tell
                self._deps.metrics.subscription_pending.remove(principal.agency, opening.name)

    async def _deliver(
        self, stream: _Stream, subscription: DurableSubscription, reader: asyncio.Task[None]
    ) -> None:
        """Fetch, plan, record, then carry out, until the subscriber goes or the gateway stops."""
        stopping = self._deps.stopping
        while not reader.done() and not stopping.is_set():
            if stream.session.free <= 0:
                await self._await_room(stream, reader)
                continue
            messages = await self._fetch(stream, subscription)
            plans = await self._plan_all(stream, messages)
            if plans and await self._record(stream, plans):
                await self._send_all(stream, plans)
                for plan in plans:
                    await self._carry_out(stream, plan)
        if reader.done():
            reader.result()  # surface a reader failure

    async def _await_room(self, stream: _Stream, reader: asyncio.Task[None]) -> None:
        """Until an answer frees a place in the window, the gateway stops, or the reader ends."""
        stream.room.clear()
        room = asyncio.ensure_future(stream.room.wait())
        stop = asyncio.ensure_future(self._deps.stopping.wait())
        await asyncio.wait({room, stop, reader}, return_when=asyncio.FIRST_COMPLETED)
        room.cancel()
        stop.cancel()

    async def _fetch(self, stream: _Stream, subscription: DurableSubscription) -> list[Msg]:
        """As many messages as the window has room for; none (after a pause) if the store fails."""
        stream.session.begin_fetch()
        try:
            return await subscription.fetch(stream.session.free, self.FETCH_WAIT_SECONDS)
        except StoreError as error:
            log.warning("subscribe.fetch_failed", subscription=stream.name, reason=str(error))
            await asyncio.sleep(self.FETCH_WAIT_SECONDS)
            return []

    async def _plan_all(self, stream: _Stream, messages: Sequence[Msg]) -> list[_Planned]:
        """The plan of every fetched message but those held back; sends enter the window now,
        before the audit append (an ack of a delivery one supersedes is then not confirmed)."""
        confirmed = await self._acks_confirmed(stream.consumer, messages)
        plans = []
        for message in messages:
            sequence = message.metadata.sequence.stream
            screened = stream.session.screen(
                sequence, message.metadata.num_delivered, ack_confirmed=sequence in confirmed
            )
            if screened.fate is delivery.Fate.HOLD_BACK:
                log.info(
                    "subscribe.redelivery_while_acking", subscription=stream.name, sequence=sequence
                )
                continue
            plans.append(self._plan(stream, message, screened))
        return plans

    def _plan(self, stream: _Stream, message: Msg, screened: delivery.Plan) -> _Planned:
        """What one screened message becomes, with its audit entry: a delivery (redacted as the
        policy says), a withheld event, a dead letter, or an ack again. No I/O."""
        headers = message.headers or {}
        delivered = Delivered(
            recipient=stream.principal.agency,
            subscription=stream.name,
            event_id=headers.get("ce-id", ""),
            event_type=headers.get("ce-type", ""),
            stream_sequence=message.metadata.sequence.stream,
            attempt=message.metadata.num_delivered,
        )
        if screened.fate is not delivery.Fate.READ:
            return _settled_plan(message, delivered, screened)
        try:
            # The stored event: its personal fields are sealed apart (gateway.core.sealing).
            event = event_pb2.Event.FromString(message.data)
        except Exception:  # any undecodable payload is poison, not a crash
            judged = stream.session.judge(
                delivered.stream_sequence, _Sent(message, delivered), readable=False, allowed=False
            )
            return _settled_plan(message, delivered, judged)
        delivered = dataclasses.replace(
            delivered,
            event_id=event.id,
            event_type=event.type,
            incident_ids=tuple(incident_ids(event)),
        )
        principal = stream.principal
        # No rule looks at a personal field: the decision on the stored event is the same.
        decision = self._deps.authorizer.decide(principal, "receive", event, self._deps.clock())
        if decision.allowed and (sealed := headers.get(SEALED_HEADER)):
            # Opened only for a recipient the policy lets have the event (its redaction
            # and the commitments to what it withholds need the values).
            try:
                open_sealed(message.data, sealed, self._deps.sealing.keyring, parsed=event)
            except SealingError as error:  # kept as a dead letter until the key is back
                log.error("subscribe.unopenable", subscription=stream.name, reason=str(error))
                unopenable = delivery.Plan(delivery.Fate.DEAD_LETTER, f"unopenable: {error}")
                return _settled_plan(message, delivered, unopenable)
        judged = stream.session.judge(
            delivered.stream_sequence,
            _Sent(message, delivered),
            readable=True,
            allowed=decision.allowed,
        )
        if judged.fate is delivery.Fate.WITHHOLD:
            # Never sent, not even in part; acked so it does not come back to this agency.
            return _Planned(message, withheld_entry(delivered, decision), delivered, judged)
        sent, withheld = redact(event, decision.redacted_fields)
        hashing = self._deps.hashing
        commitments = commit(
            self._deps.audit.commitment_key, event, principal.agency, withheld, hashing
        )
        entry = delivery_entry(
            delivered,
            digest=hashing.digest(sent.SerializeToString()),
            decision=decision,
            commitments=commitments,
        )
        to_send = gateway_pb2.Delivery(
            event=sent,
            stream_sequence=delivered.stream_sequence,
            attempt=delivered.attempt,
            withheld_fields=withheld,
            policy_version=decision.policy_version,
            rule_ids=decision.rule_ids,
            delivery_id=judged.delivery_id,
            # Carries on the trace its publisher began (gateway.telemetry.tracing).
            **self._deps.tracing.delivered(headers, principal.agency, stream.name),
        )
        return _Planned(message, entry, delivered, judged, to_send)

    async def _record(self, stream: _Stream, plans: Sequence[_Planned]) -> bool:
        """Audit first, one append for the whole fetch: nothing leaves unrecorded. If the log
        cannot take it, nothing is sent and every message goes back to JetStream."""
        try:
            await self._deps.record([plan.entry for plan in plans])
        except AuditUnavailableError as error:
            log.error("subscribe.unaudited", subscription=stream.name, reason=str(error))
            for plan in plans:
                if plan.outcome.fate is delivery.Fate.SEND:
                    stream.session.take(plan.outcome.delivery_id, ack=False)  # never sent
                with contextlib.suppress(Exception):
                    await plan.message.nak(delay=self.FETCH_WAIT_SECONDS)
            await asyncio.sleep(self.FETCH_WAIT_SECONDS)
            return False
        return True

    def _record_delivery(self, event: event_pb2.Event, agency: str) -> None:
        """Tell the tracker, without holding up the stream (a lost record is the tracker's
        "pending", never a lost delivery)."""

        async def record() -> None:
            try:
                await self._deps.deliveries.delivered(event, agency)
            except Exception as error:
                log.warning("subscribe.delivery_unrecorded", event_id=event.id, agency=agency,
                            error=repr(error))  # fmt: skip

        task = asyncio.create_task(record())
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _send_all(self, stream: _Stream, plans: Sequence[_Planned]) -> None:
        """Send the recorded deliveries of one fetch, in stream order: one message each, or as
        few `deliveries` messages as the size bound allows when the subscriber asked for that."""
        sends = [plan.delivery for plan in plans if plan.delivery is not None]
        if not stream.batched:
            for one in sends:
                await stream.send(gateway_pb2.SubscribeResponse(delivery=one))
            return
        for batch in delivery_batches(sends, MAX_BATCH_BYTES):
            await stream.send(
                gateway_pb2.SubscribeResponse(
                    deliveries=gateway_pb2.DeliveryBatch(deliveries=batch)
                )
            )

    async def _carry_out(self, stream: _Stream, plan: _Planned) -> None:
        """Do what a recorded plan says (sends are sent already: tell the tracker)."""
        fate, name, agency = plan.outcome.fate, stream.name, stream.principal.agency
        metrics = self._deps.metrics
        metrics.subscription_pending.labels(agency, name).set(plan.message.metadata.num_pending)
        if fate is delivery.Fate.SEND:
            metrics.deliveries.labels(agency, str(plan.delivered.attempt > 1).lower()).inc()
            if plan.delivery is not None and self._deps.deliveries.tracks(plan.delivery.event):
                self._record_delivery(plan.delivery.event, agency)
        elif fate is delivery.Fate.DEAD_LETTER:
            await self._dead_letter(plan, agency, name)
        elif fate is delivery.Fate.ACK_AGAIN:
            log.warning(
                "subscribe.acked_again", subscription=name, sequence=plan.delivered.stream_sequence
            )
            with contextlib.suppress(StoreError):  # if lost, it comes back: same again
                await self._deps.store.ack(plan.message)
        elif fate is delivery.Fate.WITHHOLD:
            log.info(
                "subscribe.not_allowed",
                subscription=name,
                event_id=plan.delivered.event_id,
                policy_version=plan.entry.policy_version[:12],
            )
            with contextlib.suppress(StoreError):  # if lost, it comes back: withheld again
                await self._deps.store.ack(plan.message)

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
        try:
            await self._deps.store.dead_letter(
                plan.message,
                agency,
                name,
                deliveries=delivery.deliveries_made(plan.delivered.attempt, max_deliveries),
                reason=plan.outcome.reason,
            )
        except StoreError as error:
            # Not acked, so JetStream offers it again and the next attempt retries the move.
            log.warning("subscribe.dead_letter_failed", subscription=name, reason=str(error))
            return
        self._deps.metrics.dead_letters.labels(agency).inc()
        log.warning(
            "subscribe.dead_lettered",
            subscription=name,
            sequence=plan.delivered.stream_sequence,
            reason=plan.outcome.reason,
        )

    async def _settle(
        self,
        stream: _Stream,
        takens: Sequence[delivery.Taken[_Sent]],
        nack_delay: float | None,
    ) -> None:
        """Record the subscriber's acks (or nack), then pass them to JetStream, then (if asked)
        confirm the acks to the subscriber. Recorded first, in one append: if the gateway dies
        in between, or the log cannot be appended, JetStream redelivers each event after the ack
        wait, and the log shows that redelivery. Confirmed last: a confirmed ack is never
        followed by a redelivery."""
        action = audit_pb2.AUDIT_ACTION_ACK if nack_delay is None else audit_pb2.AUDIT_ACTION_NACK
        acked: set[int] = set()  # sequences JetStream has recorded as acked
        try:
            await self._deps.record(
                [settled_entry(taken.handle.delivered, action) for taken in takens]
            )
            outcomes = await asyncio.gather(
                *(self._pass_on(stream, taken, nack_delay) for taken in takens),
                return_exceptions=True,
            )
        except Exception as error:  # unrecorded: nothing passed on; each comes again
            outcomes = [error] * len(takens)
        failed = []
        for taken, outcome in zip(takens, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed.append((taken, f"{type(outcome).__name__}: {outcome}"))
            elif nack_delay is None:
                acked.add(taken.sequence)
        try:
            if stream.confirm is not None and nack_delay is None:
                await self._confirm(stream, [t for t in takens if t.sequence in acked], failed)
        except Exception:  # the stream itself may be gone: its acks stand all the same
            pass
        finally:
            for taken in takens:
                stream.session.settled(taken.sequence, acked=taken.sequence in acked)
        for taken, reason in failed:  # a lost ack is redelivered; it must not end the stream
            delivered = taken.handle.delivered
            log.warning(
                "subscribe.settle_failed",
                subscription=delivered.subscription,
                event_id=delivered.event_id,
                reason=reason,
            )

    async def _pass_on(
        self, stream: _Stream, taken: delivery.Taken[_Sent], nack_delay: float | None
    ) -> None:
        message = taken.handle.message
        if nack_delay is not None:
            await message.nak(delay=nack_delay or None)
        elif stream.confirm is None:
            await self._deps.store.ack(message)  # double ack: JetStream has recorded it
        else:
            # The ack, and the record that lets every replica recognise a redelivery of it
            # (see _acks_confirmed), both durable before the subscriber hears "confirmed".
            await asyncio.gather(
                self._deps.store.ack(message),
                self._deps.store.record_confirmed_ack(stream.consumer, taken.sequence),
            )

    async def _confirm(
        self,
        stream: _Stream,
        confirmed: Sequence[delivery.Taken[_Sent]],
        failed: Sequence[tuple[delivery.Taken[_Sent], str]],
    ) -> None:
        assert stream.confirm is not None
        ids = [taken.delivery_id for taken in confirmed]
        if stream.batched and ids:
            answer = gateway_pb2.AcksConfirmed(delivery_ids=ids)
            await stream.confirm(gateway_pb2.SubscribeResponse(acks_confirmed=answer))
        else:
            for delivery_id in ids:
                one = gateway_pb2.AckConfirmed(delivery_id=delivery_id)
                await stream.confirm(gateway_pb2.SubscribeResponse(ack_confirmed=one))
        for taken, reason in failed:
            await stream.confirm(_not_confirmed(taken.delivery_id, f"not recorded: {reason}"))

    async def _read_acks(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        stream: _Stream,
        acks: set[asyncio.Task[None]],
    ) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            action = cast(gateway_pb2.SubscribeRequest, request)
            kind = action.WhichOneof("action")
            if kind in ("nack", "acks") and (problems := self._deps.validator.problems(action)):
                # A delay past the schema's hour, or past what any Duration can hold, would
                # otherwise reach JetStream or fail its conversion in this task; a batch is
                # bounded. (A single ack needs no check: an unknown delivery id is answered as
                # such.)
                fields = ", ".join(sorted({p.field or p.rule_id for p in problems}))
                await abort(
                    context,
                    status(grpc.StatusCode.INVALID_ARGUMENT, f"invalid {fields}", tuple(problems)),
                )
            delay: float | None = None
            if kind == "ack":
                delivery_ids: Sequence[int] = (action.ack.delivery_id,)
            elif kind == "acks":
                delivery_ids = action.acks.delivery_ids
            elif kind == "nack":
                delivery_ids = (action.nack.delivery_id,)
                delay = action.nack.delay.ToTimedelta().total_seconds()
            else:
                continue
            takens = []
            for delivery_id in delivery_ids:
                taken = stream.session.take(delivery_id, ack=delay is None)
                if isinstance(taken, delivery.Taken):
                    takens.append(taken)
                elif stream.confirm is not None and delay is None:
                    await stream.confirm(_not_confirmed(delivery_id, taken.reason))
            if stream.session.free > 0:
                stream.room.set()
            if takens:
                # Settled concurrently (at most the session's window at once), so the audit
                # log's group commit and JetStream's acks are shared among them.
                task = asyncio.create_task(self._settle(stream, takens, delay))
                acks.add(task)
                task.add_done_callback(acks.discard)


def delivery_batches(
    deliveries: Sequence[gateway_pb2.Delivery], max_bytes: int
) -> list[list[gateway_pb2.Delivery]]:
    """`deliveries` in order, cut into batches of at most `max_bytes` serialised (a larger
    delivery travels alone), so that no message outgrows what a client accepts."""
    batches: list[list[gateway_pb2.Delivery]] = []
    size = 0
    for one in deliveries:
        bytes_ = one.ByteSize()
        if not batches or size + bytes_ > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(one)
        size += bytes_
    return batches


def _settled_plan(message: Msg, delivered: Delivered, plan: delivery.Plan) -> _Planned:
    """The plan of a message that is acked again or dead-lettered, never sent."""
    action = (
        audit_pb2.AUDIT_ACTION_ACK
        if plan.fate is delivery.Fate.ACK_AGAIN
        else audit_pb2.AUDIT_ACTION_DEAD_LETTER
    )
    return _Planned(message, settled_entry(delivered, action, plan.reason), delivered, plan)


def _not_confirmed(delivery_id: int, reason: str) -> gateway_pb2.SubscribeResponse:
    """The answer to an ack that did not count, so that the subscriber need not wait it out."""
    answer = gateway_pb2.AckNotConfirmed(delivery_id=delivery_id, reason=reason)
    return gateway_pb2.SubscribeResponse(ack_not_confirmed=answer)
