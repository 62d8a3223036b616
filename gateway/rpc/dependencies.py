"""What every servicer works with: configuration, the store, identities, the policy, the event-type
catalogue, the audit log, the clock; built once by the gateway (server.py)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from dutylink.catalogue import Catalogue, load_catalogue
from dutylink.v1 import audit_pb2, event_pb2
from gateway.access.auth import Authenticator
from gateway.access.authorization import Authorizer
from gateway.audit.log import AuditUnavailableError
from gateway.core.admission import NoStatefulGuards, StatefulGuards
from gateway.core.crypto import HashSuite, crypto_profile
from gateway.core.facts import AuditSink
from gateway.core.sealing import Keyring, Sealer
from gateway.core.settings import Config
from gateway.core.validation import Validator
from gateway.store.audit_log import AuditLog
from gateway.store.jetstream import EventStore
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.tracing import Tracing

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


@dataclass
class SealingHolder:
    """The sealing key ring in force (gateway.core.sealing), replaced when it is rotated: it
    opens what was sealed, and seals new events when `seal` (personal_data.seal) is on."""

    keyring: Keyring | None = None
    seal: bool = True

    def sealer(self) -> Sealer | None:
        """What seals new events now (None: they are stored in clear)."""
        if self.keyring is None or not self.seal:
            return None
        return Sealer(self.keyring, secrets.token_bytes)


class DeliveryRecorder(Protocol):
    """Where the subscribe servicer reports the first delivery of a tracked message to an
    agency (gateway.store.tracker.Tracker)."""

    def tracks(self, event: event_pb2.Event) -> bool: ...

    async def delivered(self, event: event_pb2.Event, agency: str) -> None: ...


class NoDeliveryRecorder:
    """Nothing is tracked (the pipe runs without lifecycles)."""

    def tracks(self, event: event_pb2.Event) -> bool:
        return False

    async def delivered(self, event: event_pb2.Event, agency: str) -> None:
        return None


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
    # The stateful admission guards (lifecycles, ledger) and their state's read and commit.
    stateful: StatefulGuards = field(default_factory=NoStatefulGuards)
    # The event types the gateway admits and the fields each requires (admission's door).
    catalogue: Catalogue = field(default_factory=load_catalogue)
    # Per-recipient delivery status of the messages agencies must take (business acks).
    deliveries: DeliveryRecorder = field(default_factory=NoDeliveryRecorder)
    # Spans and the trace context events carry from publish to delivery (off: carried only).
    tracing: Tracing = field(default_factory=Tracing)
    # The key ring that seals personal fields at rest and opens them for delivery.
    sealing: SealingHolder = field(default_factory=SealingHolder)

    @property
    def hashing(self) -> HashSuite:
        """The crypto profile's hash: of the bytes the audit log records, its commitments'."""
        return crypto_profile(self.config.audit.crypto_profile).hash

    @property
    def sink(self) -> AuditSink:
        """The real `AuditSink` (gateway.core.facts): every fact the gateway records goes here,
        the servicers' and the server's alike; nothing else appends to the audit log."""
        return self

    async def open_audit(
        self, audit_log: AuditLog, opening: Sequence[audit_pb2.AuditEntry]
    ) -> None:
        """Record facts in `audit_log` from now on, `opening` (the start-up's facts) first: they
        are durable before any other fact may be recorded (AuditUnavailableError if not)."""
        await audit_log.append(opening)
        self.audit.log = audit_log

    async def record(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        """Append to the audit log (fail closed: raises AuditUnavailableError when the log is
        enabled but cannot be appended)."""
        if not self.config.audit.enabled or not (entries or self.audit.follow_ups):
            return
        if self.audit.log is None:
            self.metrics.audit_append_failures.inc()
            raise AuditUnavailableError("the audit log is not open yet")
        if not self.store.connected:
            # Fail at once rather than after the append's timeouts: the caller's deadline may
            # be shorter, and "unavailable, retry" is the answer either way.
            self.metrics.audit_append_failures.inc()
            raise AuditUnavailableError("NATS is not connected: the audit log cannot be appended")
        pending, self.audit.follow_ups = self.audit.follow_ups, []
        try:
            await self.audit.log.append([*pending, *entries])
        except AuditUnavailableError:
            self.audit.follow_ups[:0] = pending  # kept for the next append
            self.metrics.audit_append_failures.inc()
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
