"""Agencies' durable subscriptions on JetStream (gateway.core.ports.Subscriptions): a durable
pull consumer each, acks JetStream confirms, a replicated record of each confirmed ack, and dead
letters."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.core import subjects
from gateway.core.lanes import LANES_FIRST_TO_LAST, Lane
from gateway.core.ports import StoreUnavailableError
from gateway.store.connection import NatsConnection
from gateway.store.dead_letters import dead_letter_headers
from gateway.store.errors import STORE_FAILURES, translate, tries


async def _pulled(pull: JetStreamContext.PullSubscription, count: int, wait: float) -> list[Msg]:
    """Up to `count` messages, waiting at most `wait` seconds; [] when none arrived."""
    try:
        return await pull.fetch(count, timeout=wait)
    except TimeoutError:
        # nats.errors.TimeoutError, or (when its wait ends just as a message is being read)
        # asyncio's own: either way nothing arrived in time. Never a store failure, which
        # would hold the subscription's next fetch back.
        return []
    except nats.js.errors.APIError as error:
        # E.g. 409/503 while the consumer's leader changes: transient, the caller retries.
        reason = error.description or type(error).__name__
        raise StoreUnavailableError(f"pull failed ({error.code}): {reason}") from error
    except STORE_FAILURES as error:
        raise translate(error) from error


class _Lane:
    """A lane's pull consumer, and what was fetched from it but not yet handed out."""

    def __init__(self, pull: JetStreamContext.PullSubscription) -> None:
        self.pull = pull
        self.ready: collections.deque[Msg] = collections.deque()

    def take(self, count: int) -> list[Msg]:
        return [self.ready.popleft() for _ in range(min(count, len(self.ready)))]

    async def close(self) -> None:
        # Fetched but never handed out: back for prompt redelivery (else after the ack wait).
        for message in self.ready:
            with contextlib.suppress(Exception):
                await message.nak()
        self.ready.clear()
        # If the connection is gone, the server forgets the pull requests by itself.
        with contextlib.suppress(*STORE_FAILURES):
            await self.pull.unsubscribe()


class DurableSubscription:
    """One open session on an agency's durable subscription: a consumer per lane
    (gateway.core.lanes). The urgent lane is fetched ahead all the time, up to `limit` (the
    session's window), so an urgent event is at hand the moment the window has room; the routine
    lane is fetched when asked, and a fetch of it is never cancelled (a cancelled pull request
    still delivers, into no one's hands until the ack wait runs out)."""

    URGENT_PULL_SECONDS = 2.0  # how long each urgent pull request waits on the server

    def __init__(self, urgent: _Lane, routine: _Lane, pending: int, limit: int) -> None:
        self._urgent, self._routine = urgent, routine
        self.pending = pending
        self._limit = limit
        self._urgent_arrived = asyncio.Event()
        self._urgent_room = asyncio.Event()
        self._urgent_failure: StoreUnavailableError | None = None
        self._routine_fetch: asyncio.Task[list[Msg]] | None = None
        self._ahead = asyncio.create_task(self._fetch_urgent_ahead())

    async def _fetch_urgent_ahead(self) -> None:
        lane = self._urgent
        while True:
            room = self._limit - len(lane.ready)
            if room <= 0:
                self._urgent_room.clear()
                await self._urgent_room.wait()
                continue
            try:
                fetched = await _pulled(lane.pull, room, self.URGENT_PULL_SECONDS)
            except StoreUnavailableError as error:
                self._urgent_failure = error
                await asyncio.sleep(self.URGENT_PULL_SECONDS)
                continue
            if fetched:
                lane.ready.extend(fetched)
                self._urgent_arrived.set()

    def _take_urgent(self, count: int) -> list[Msg]:
        if self._urgent_failure is not None:
            failure, self._urgent_failure = self._urgent_failure, None
            raise failure
        taken = self._urgent.take(count)
        if not self._urgent.ready:
            self._urgent_arrived.clear()
        self._urgent_room.set()
        return taken

    def _collect_routine(self) -> None:
        """Keep what a finished routine fetch brought; raise its failure (before anything is
        taken from the lanes, so a failure never strands messages already handed over)."""
        fetching = self._routine_fetch
        if fetching is not None and fetching.done():
            self._routine_fetch = None
            self._routine.ready.extend(fetching.result())

    async def fetch(self, count: int, wait: float) -> list[Msg]:
        """Up to `count` messages, urgent ones first, waiting at most `wait` seconds for either
        lane; [] when none arrived. StoreUnavailableError if a lane could not be read."""
        routine = self._routine
        self._collect_routine()
        taken = self._take_urgent(count)
        if not taken and not routine.ready:
            if self._routine_fetch is None:
                self._routine_fetch = asyncio.ensure_future(_pulled(routine.pull, count, wait))
            urgent = asyncio.ensure_future(self._urgent_arrived.wait())
            await asyncio.wait(
                {self._routine_fetch, urgent}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            urgent.cancel()
            self._collect_routine()
            taken = self._take_urgent(count)
        return taken + routine.take(count - len(taken))

    async def close(self) -> None:
        # A routine fetch that finished but was not collected holds messages: keep them, so
        # that the lane gives them back. One still out is cancelled; what it brings comes
        # back after the ack wait.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self._collect_routine()
        self._ahead.cancel()
        for task in (self._ahead, self._routine_fetch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._urgent.close()
        await self._routine.close()


class JetStreamSubscriptions:
    """`ack_wait_seconds`, `max_in_flight`: the subscriptions' settings; `replicas`: each
    consumer's (nats.stream_replicas)."""

    def __init__(
        self,
        connection: NatsConnection,
        *,
        ack_wait_seconds: float,
        max_in_flight: int,
        replicas: int,
    ) -> None:
        self._connection = connection
        self._ack_wait = ack_wait_seconds
        self._max_in_flight = max_in_flight
        self._replicas = replicas

    async def open_subscription(
        self, agency: str, name: str, filter_subjects: Sequence[str], max_in_flight: int
    ) -> DurableSubscription:
        """Create or update the agency's durable consumers, one per lane, then open a pull
        session on each. Dead letters are replayed into the routine lane."""
        js = self._connection.js
        lanes: dict[Lane, _Lane] = {}
        pending = 0
        for lane in LANES_FIRST_TO_LAST:
            consumer = subjects.consumer_name(agency, name, lane)
            selected = subjects.lane_filters(filter_subjects, lane)
            if lane is Lane.ROUTINE:
                selected.append(subjects.redeliver_subject(agency, name))
            config = api.ConsumerConfig(
                name=consumer,
                durable_name=consumer,
                description=f"subscription '{name}' of agency '{agency}', {lane.value} lane",
                deliver_policy=api.DeliverPolicy.NEW,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                # The gateway counts deliveries itself and dead-letters; JetStream never gives up.
                max_deliver=-1,
                max_ack_pending=max(self._max_in_flight, max_in_flight),
                filter_subjects=selected,
                num_replicas=self._replicas,
            )
            try:
                info = await js.add_consumer(subjects.EVENTS_STREAM, config)
                pull = await js.pull_subscribe_bind(consumer, stream=subjects.EVENTS_STREAM)
            except STORE_FAILURES as error:
                for opened in lanes.values():
                    await opened.close()
                raise translate(error) from error
            lanes[lane] = _Lane(pull)
            pending += (info.num_pending or 0) + (info.num_ack_pending or 0)
        return DurableSubscription(lanes[Lane.URGENT], lanes[Lane.ROUTINE], pending, max_in_flight)

    async def ack(self, message: Msg, *, attempts: int = 3, timeout: float = 2.0) -> None:
        """Ack `message` and wait until JetStream answers (a double ack). An ack is idempotent
        and JetStream answers a repeated one too, so an ack whose answer was lost (a timeout
        while the consumer's leader changes) is sent again: the answer, not the first send,
        tells whether the event can come back. Raises StoreUnavailableError if none came."""
        client = self._connection.client
        await tries(lambda: client.request(message.reply, b"+ACK", timeout=timeout), attempts)

    async def record_confirmed_ack(self, consumer: str, stream_sequence: int) -> None:
        """Remember, for every replica, that the ack of this event on `consumer` was confirmed
        to the subscriber (JetStream answers an ack before replicating it: see `ack_confirmed`)."""
        try:
            await self._connection.js.publish(
                subjects.acked_subject(consumer, stream_sequence), b"", stream=subjects.ACKED_STREAM
            )
        except STORE_FAILURES as error:
            raise translate(error) from error

    async def ack_confirmed(self, consumer: str, stream_sequence: int, attempts: int = 5) -> bool:
        """Whether any replica confirmed an ack of this event on `consumer` (within
        `subscriptions.ack_record_seconds`). Asked of the stream's leader, not a direct get from
        a replica that may lag: the record was acknowledged by a quorum before the confirmation.
        Tried again while the stream elects a leader (the redeliveries that need this answer
        come just after a leader change); StoreError if it never answers."""
        subject = subjects.acked_subject(consumer, stream_sequence)
        js = self._connection.js

        async def look_up() -> bool:
            try:
                await js.get_last_msg(subjects.ACKED_STREAM, subject)
            except nats.js.errors.NotFoundError:
                return False
            return True

        return await tries(look_up, attempts)

    async def dead_letter(
        self, message: Msg, agency: str, name: str, *, deliveries: int, reason: str
    ) -> None:
        """Keep `message` on the subscription's dead-letter subject, then stop its delivery.
        `deliveries` is how often the subscriber was given it."""
        sequence = message.metadata.sequence.stream
        headers = dead_letter_headers(
            agency,
            name,
            subject=message.subject,
            sequence=sequence,
            headers=message.headers or {},
            deliveries=deliveries,
            reason=reason,
        )
        try:
            await self._connection.js.publish(
                subjects.deadletter_subject(agency, name),
                message.data,
                stream=subjects.DEADLETTER_STREAM,
                headers=headers,
            )
            await message.term()
        except STORE_FAILURES as error:
            raise translate(error) from error
