"""SubscriberService: durable subscriptions, policy-filtered and redacted delivery, confirmed acks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import grpc
from nats.aio.msg import Msg

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
from gateway.core import subjects
from gateway.core.envelope import incident_ids
from gateway.core.validation import FieldProblem
from gateway.rpc.calls import (
    abort,
    authenticate,
    status,
    store_code,
)
from gateway.rpc.dependencies import Dependencies, log
from gateway.store.jetstream import (
    DurableSubscription,
    StoreError,
)
from policies.redaction import redact


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
            await self._refuse(context, principal, opening.name, store_code(error), str(error))
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
