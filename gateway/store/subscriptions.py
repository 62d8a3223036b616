"""Agencies' durable subscriptions on JetStream (gateway.core.ports.Subscriptions): a durable
pull consumer each, acks JetStream confirms, a replicated record of each confirmed ack, and dead
letters."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.core import subjects
from gateway.core.ports import StoreUnavailableError
from gateway.store.connection import NatsConnection
from gateway.store.dead_letters import dead_letter_headers
from gateway.store.errors import STORE_FAILURES, translate, tries


class DurableSubscription:
    """One open session on an agency's durable consumer."""

    def __init__(self, pull: JetStreamContext.PullSubscription, pending: int) -> None:
        self._pull = pull
        self.pending = pending

    async def fetch(self, count: int, wait: float) -> list[Msg]:
        """Up to `count` messages, waiting at most `wait` seconds; [] when none arrived."""
        try:
            return await self._pull.fetch(count, timeout=wait)
        except nats.errors.TimeoutError:
            return []
        except nats.js.errors.APIError as error:
            # E.g. 409/503 while the consumer's leader changes: transient, the caller retries.
            reason = error.description or type(error).__name__
            raise StoreUnavailableError(f"pull failed ({error.code}): {reason}") from error
        except STORE_FAILURES as error:
            raise translate(error) from error

    async def close(self) -> None:
        # If the connection is gone, the server forgets the pull requests by itself.
        with contextlib.suppress(*STORE_FAILURES):
            await self._pull.unsubscribe()


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
        """Create or update the agency's durable consumer, then open a pull session on it."""
        consumer = subjects.consumer_name(agency, name)
        config = api.ConsumerConfig(
            name=consumer,
            durable_name=consumer,
            description=f"subscription '{name}' of agency '{agency}'",
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            # The gateway counts deliveries itself and dead-letters; JetStream never gives up.
            max_deliver=-1,
            max_ack_pending=max(self._max_in_flight, max_in_flight),
            filter_subjects=[*filter_subjects, subjects.redeliver_subject(agency, name)],
            num_replicas=self._replicas,
        )
        js = self._connection.js
        try:
            info = await js.add_consumer(subjects.EVENTS_STREAM, config)
            pull = await js.pull_subscribe_bind(consumer, stream=subjects.EVENTS_STREAM)
        except STORE_FAILURES as error:
            raise translate(error) from error
        return DurableSubscription(pull, (info.num_pending or 0) + (info.num_ack_pending or 0))

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
