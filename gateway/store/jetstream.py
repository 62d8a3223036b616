"""The gateway's store on JetStream: one NATS connection and the parts that use it, as the one
object the servicers are given (gateway.rpc.dependencies). Each part implements one small
interface of gateway.core.ports and lives in its own module:

    events          gateway.store.events          EventLog: pipelined publishing, conflicts
    subscriptions   gateway.store.subscriptions   Subscriptions: durable consumers, acks
    dead letters    gateway.store.dead_letters    DeadLetters: list, look up, replay
    grants          gateway.store.grants          Grants: break-glass declarations
and the streams (gateway.store.streams, from the registry in gateway.core.streams), the
durability check (gateway.store.durability) and NATS errors as store errors
(gateway.store.errors). Code that needs one part takes that port, not the whole store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.core import streams as stream_registry
from gateway.core import subjects
from gateway.core.ports import (
    DeadLetter,
    DeadLetters,
    EventLog,
    Grants,
    Outgoing,
    Stored,
    StoreError,
    Subscriptions,
)
from gateway.core.settings import Config
from gateway.core.streams import AGGREGATES_BUCKET, BucketSpec
from gateway.store.connection import Callback, NatsConnection
from gateway.store.dead_letters import JetStreamDeadLetters
from gateway.store.durability import DurabilityFinding, check_durability
from gateway.store.errors import STORE_FAILURES, translate
from gateway.store.events import JetStreamEvents
from gateway.store.grants import JetStreamGrants
from gateway.store.kv import ConnectedBucket
from gateway.store.streams import ensure_stream, stream_config
from gateway.store.subscriptions import DurableSubscription, JetStreamSubscriptions


class EventStore:
    """Connects to NATS, keeps the streams in shape, and moves events in and out.

    Built before it connects, so the gRPC services can be registered up front; until
    `connect` succeeds every operation fails as unavailable."""

    def __init__(
        self,
        config: Config,
        *,
        on_disconnected: Callback | None = None,
        on_reconnected: Callback | None = None,
    ) -> None:
        self._config = config
        self.connection = NatsConnection(
            name=f"dutylink-gateway-{config.gateway.gateway_id}",
            connect_timeout=config.nats.connect_timeout_seconds,
            on_disconnected=on_disconnected,
            on_reconnected=on_reconnected,
        )
        self.events = JetStreamEvents(self.connection)
        self.subscriptions = JetStreamSubscriptions(
            self.connection,
            ack_wait_seconds=config.subscriptions.ack_wait_seconds,
            max_in_flight=config.subscriptions.max_in_flight,
            replicas=config.nats.stream_replicas,
        )
        self.dead_letter_store = JetStreamDeadLetters(self.connection)
        self.grants = JetStreamGrants(self.connection)
        # The linked-duty workflows' aggregate state (lifecycles, ledger), compare-and-set.
        self.aggregates = ConnectedBucket(
            self.connection,
            BucketSpec(
                AGGREGATES_BUCKET,
                description="DutyLink lifecycle and ledger state, one key per aggregate",
                history=4,
                replicas=config.nats.stream_replicas,
            ),
        )

    async def connect(self, url: str, *, give_up_after: float | None = None) -> None:
        """See NatsConnection.connect."""
        await self.connection.connect(url, give_up_after=give_up_after)
        await self.events.start()

    @property
    def client(self) -> NatsClient:
        """The NATS connection, for the other JetStream users of this gateway (the audit log)."""
        return self.connection.client

    @property
    def connected(self) -> bool:
        return self.connection.connected

    async def close(self) -> None:
        """Drain: let in-flight publishes and acks finish, then close."""
        await self.grants.stop_following()
        await self.connection.close()

    async def ensure_streams(self) -> None:
        """Create the streams, or bring their settings up to date: safe at every start."""
        nats_settings = self._config.nats
        limits = stream_registry.StreamLimits(
            replicas=nats_settings.stream_replicas,
            events_max_age_days=nats_settings.events_max_age_days,
            events_max_bytes=nats_settings.events_max_bytes,
            deadletter_max_age_days=nats_settings.deadletter_max_age_days,
            ack_record_seconds=self._config.subscriptions.ack_record_seconds,
            duplicate_window_seconds=nats_settings.duplicate_window_seconds,
            max_msg_size=self._config.gateway.max_message_bytes,
        )
        for spec in stream_registry.event_stream_specs(limits):
            try:
                await ensure_stream(self.connection.js, stream_config(spec))
            except STORE_FAILURES as error:
                raise translate(error) from error
        await self.aggregates.open()

    async def check_durability(self, *, sync_configured: bool = False) -> list[DurabilityFinding]:
        """gateway.store.durability.check_durability with `nats.durability` and
        `nats.stream_replicas`, after `ensure_streams`."""
        return await check_durability(
            self.connection,
            mode=self._config.nats.durability,
            replicas=self._config.nats.stream_replicas,
            sync_configured=sync_configured,
        )

    # The ports, for the servicers that hold the whole store (each part documents its own).

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> Stored:
        return await self.events.publish(subject, data, headers, timeout)

    async def publish_pipelined(
        self, messages: Sequence[Outgoing], timeout: float, *, stream: str = subjects.EVENTS_STREAM
    ) -> list[Stored | StoreError]:
        return await self.events.publish_pipelined(messages, timeout, stream=stream)

    async def open_subscription(
        self, agency: str, name: str, filter_subjects: Sequence[str], max_in_flight: int
    ) -> DurableSubscription:
        return await self.subscriptions.open_subscription(
            agency, name, filter_subjects, max_in_flight
        )

    async def ack(self, message: Msg, *, attempts: int = 3, timeout: float = 2.0) -> None:
        await self.subscriptions.ack(message, attempts=attempts, timeout=timeout)

    async def record_confirmed_ack(self, consumer: str, stream_sequence: int) -> None:
        await self.subscriptions.record_confirmed_ack(consumer, stream_sequence)

    async def ack_confirmed(self, consumer: str, stream_sequence: int, attempts: int = 5) -> bool:
        return await self.subscriptions.ack_confirmed(consumer, stream_sequence, attempts)

    async def dead_letter(
        self, message: Msg, agency: str, name: str, *, deliveries: int, reason: str
    ) -> None:
        await self.subscriptions.dead_letter(
            message, agency, name, deliveries=deliveries, reason=reason
        )

    async def dead_letters(self, agency: str = "*", subscription: str = "*") -> list[DeadLetter]:
        return await self.dead_letter_store.dead_letters(agency, subscription)

    async def dead_letter_at(self, sequence: int) -> DeadLetter:
        return await self.dead_letter_store.dead_letter_at(sequence)

    async def replay_dead_letter(self, sequence: int) -> tuple[DeadLetter, Stored]:
        return await self.dead_letter_store.replay_dead_letter(sequence)

    async def record_grant(self, grant_id: str, data: bytes) -> Stored:
        return await self.grants.record_grant(grant_id, data)

    async def follow_grants(self, on_grant: Callable[[bytes], None]) -> None:
        await self.grants.follow_grants(on_grant)


def as_ports(store: EventStore) -> tuple[EventLog, Subscriptions[Msg], DeadLetters, Grants]:
    """The store as each port (and mypy's check that it implements them)."""
    return store, store, store, store
