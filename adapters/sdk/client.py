"""A typed asyncio client for department systems: publish events, receive them, ack them.

    async with DutyLinkClient("127.0.0.1:50051", token="…") as client:
        receipt = await client.publish(event)
        async with client.subscribe("dispatch", families=["incident"]) as subscription:
            async for delivery in subscription:
                handle(delivery.event)
                await subscription.ack(delivery)

Publishing retries with exponential backoff and jitter (`dutylink.adapters.sdk.retry`) on outcomes that
may go away — UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED — never on a refusal
(INVALID_ARGUMENT, PERMISSION_DENIED, ...). Retrying is safe because the event id is the
idempotency key: a retry of a stored event stores nothing new (its receipt says `duplicate`).
A receipt also says what the gateway advises (`receipt.advisories`: rules the stored event
breaks only as advice, e.g. a headline over 160 characters) and whether other content was
already stored under the event's id (`receipt.conflict`: this event was not stored, the
original is kept at `receipt.stream_sequence`; new content needs a new id). The client logs
both ("client.advisories", "client.conflict"); acting on them is the caller's decision.
`consume` runs a handler per delivery with bounded concurrency, acks only after the handler
succeeded, nacks with a delay when it fails, and reopens the durable subscription after a lost
connection (it resumes where the agency left off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import grpc
import stamina
import structlog
from google.protobuf import timestamp_pb2

from dutylink.adapters.sdk.retry import (
    DEFAULT_RETRY,
    NO_RETRY,
    RETRYABLE_CODE_NUMBERS,
    RETRYABLE_CODES,
    Retry,
    is_retryable,
)
from dutylink.adapters.sdk.tracing import handling_span, with_trace_context
from dutylink.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    board_pb2,
    board_pb2_grpc,
    event_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_RETRY",
    "NO_RETRY",
    "RETRYABLE_CODES",
    "AckNotConfirmedError",
    "ClientCertificate",
    "DutyLinkClient",
    "Retry",
    "Subscription",
    "is_retryable",
]

log = structlog.get_logger("dutylink.client")

# Calls spread over every address the target resolves to (`dns:///dutylink-gateway-headless:
# 50051` reaches every replica), not all to the first one. Retries are the SDK's own (Retry).
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
CHANNEL_OPTIONS = (
    # gRPC waits at least 20 s between reconnection attempts by default: far too long for a
    # department system whose gateway replica just restarted behind its load balancer.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    # A ping every 30 s, with or without a call open (the gateway allows one every 10 s), so
    # an idle subscription keeps its connection through load balancers and NAT that drop
    # quiet ones, and a dead connection is noticed within 30 + 10 s instead of never.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.service_config", SERVICE_CONFIG),
    # A client's connections are its own: a subchannel to an address some other channel of
    # this process keeps failing to (a gateway gone, its port since reused) is not shared.
    ("grpc.use_local_subchannel_pool", 1),
)


# How `consume` reopens a lost subscription: without end, backing off up to 10 s.
RECONNECT_FOREVER = Retry(attempts=0, timeout=0, wait_max=10.0)


def _log_receipt(receipt: gateway_pb2.Receipt) -> None:
    if receipt.conflict:
        log.warning(
            "client.conflict",
            event_id=receipt.event_id,
            stored_sequence=receipt.stream_sequence,
            note="other content is stored under this id; this event was not stored",
        )
    if receipt.advisories:
        log.info(
            "client.advisories",
            event_id=receipt.event_id,
            advisories=[f"{a.field}: {a.description} ({a.rule_id})" for a in receipt.advisories],
        )


class _RetryableResults(Exception):
    """Some events of a batch failed with a retryable code: send just those again."""


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _retryable_result(result: gateway_pb2.PublishResult) -> bool:
    return result.HasField("error") and result.error.code in RETRYABLE_CODE_NUMBERS


@dataclass(frozen=True)
class ClientCertificate:
    """An agency's mutual-TLS identity (see `dutylink pki issue`) and the exchange CA."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_files(cls, ca_file: Path, cert_file: Path, key_file: Path) -> ClientCertificate:
        return cls(ca_file.read_bytes(), cert_file.read_bytes(), key_file.read_bytes())


class DutyLinkClient:
    """One connection to a gateway, as one agency: with a client certificate (mutual TLS), or
    with a development token on plaintext. A web console's certificate (`dutylink pki console`)
    with `acting_for` relays an officer's read-only calls as that officer's agency, on gateways
    that list the console in `tls.consoles`."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        certificate: ClientCertificate | None = None,
        acting_for: str | None = None,
        retry: Retry = DEFAULT_RETRY,
    ) -> None:
        if (token is None) == (certificate is None):
            raise ValueError(
                "give exactly one of token= (development) or certificate= (mutual TLS)"
            )
        if acting_for is not None and certificate is None:
            raise ValueError("acting_for= is for a console's certificate= (mutual TLS)")
        if certificate is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=certificate.ca_pem,
                private_key=certificate.key_pem,
                certificate_chain=certificate.cert_pem,
            )
            self._channel = grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            self._metadata: tuple[tuple[str, str], ...] = (
                () if acting_for is None else (("dutylink-acting-for", acting_for),)
            )
        else:
            self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            self._metadata = (("authorization", f"Bearer {token}"),)
        self.retry = retry
        self._publisher = gateway_pb2_grpc.PublisherServiceStub(self._channel)
        self._subscriber = gateway_pb2_grpc.SubscriberServiceStub(self._channel)
        self._checkpoints = audit_service_pb2_grpc.CheckpointServiceStub(self._channel)
        self._audit = audit_service_pb2_grpc.AuditServiceStub(self._channel)
        self._break_glass = gateway_pb2_grpc.BreakGlassServiceStub(self._channel)
        self._tracking = gateway_pb2_grpc.TrackingServiceStub(self._channel)
        self._board = board_pb2_grpc.BoardServiceStub(self._channel)

    async def publish(
        self, event: event_pb2.Event, *, timeout: float = 10.0
    ) -> gateway_pb2.Receipt:
        """Publish one event; returns once it is durably stored, retrying as `retry` says.
        Raises grpc.aio.AioRpcError (a refusal at once, a retryable error when retries ran out)."""
        metadata = with_trace_context(self._metadata)
        async for attempt in self.retry.context():
            with attempt:
                response: gateway_pb2.PublishResponse = await self._publisher.Publish(
                    gateway_pb2.PublishRequest(event=event),
                    metadata=metadata,
                    timeout=timeout,
                )
        _log_receipt(response.receipt)
        return response.receipt

    async def publish_batch(
        self, events: Sequence[event_pb2.Event], *, timeout: float = 30.0
    ) -> list[gateway_pb2.PublishResult]:
        """Publish many events; one result (receipt or error) per event, in order. Events that
        failed with a retryable code are sent again (alone) as `retry` says; refused ones not."""
        results: list[gateway_pb2.PublishResult] = [
            gateway_pb2.PublishResult(index=i, event_id=e.id) for i, e in enumerate(events)
        ]
        pending = list(range(len(events)))
        metadata = with_trace_context(self._metadata)
        with contextlib.suppress(_RetryableResults):
            async for attempt in self.retry.context(
                on=lambda error: isinstance(error, _RetryableResults) or is_retryable(error)
            ):
                with attempt:
                    response = await self._publisher.PublishBatch(
                        gateway_pb2.PublishBatchRequest(events=[events[i] for i in pending]),
                        metadata=metadata,
                        timeout=timeout,
                    )
                    for index, result in zip(pending, response.results, strict=True):
                        results[index].CopyFrom(result)
                        results[index].index = index
                    pending = [i for i in pending if _retryable_result(results[i])]
                    if pending:
                        raise _RetryableResults()
        for result in results:
            if result.HasField("receipt"):
                _log_receipt(result.receipt)
        return results

    def subscribe(
        self,
        name: str,
        *,
        families: Sequence[str] = (),
        types: Sequence[str] = (),
        jurisdiction_prefixes: Sequence[str] = (),
        planes: Sequence[event_pb2.Plane.ValueType] = (),
        max_in_flight: int = 0,
        confirm_acks: bool = False,
        batched: bool = True,
    ) -> Subscription:
        """A durable subscription; open it with `async with`. With `confirm_acks`, `ack()`
        returns only once the gateway confirms that JetStream recorded the ack, so a delivery
        acked without an error never comes again. `batched`: deliveries, acks and confirmations
        travel several to a message where they can (the same deliveries, at less cost per
        event); off, one each, as gateways before batching did."""
        opening = gateway_pb2.SubscriptionOpen(
            name=name,
            filter=gateway_pb2.SubscriptionFilter(
                families=families,
                types=types,
                jurisdiction_prefixes=jurisdiction_prefixes,
                planes=planes,
            ),
            max_in_flight=max_in_flight,
            confirm_acks=confirm_acks,
            batch_deliveries=batched,
        )
        return Subscription(self._subscriber, opening, self._metadata)

    async def consume(
        self,
        name: str,
        handler: Callable[[gateway_pb2.Delivery], Awaitable[None]],
        *,
        families: Sequence[str] = (),
        types: Sequence[str] = (),
        jurisdiction_prefixes: Sequence[str] = (),
        planes: Sequence[event_pb2.Plane.ValueType] = (),
        max_in_flight: int = 16,
        nack_delay: timedelta = timedelta(seconds=5),
        reconnect: Retry = RECONNECT_FOREVER,
    ) -> None:
        """Run `handler` on every delivery of a durable subscription until cancelled: at most
        `max_in_flight` at once, each acked after the handler returns, nacked for redelivery
        after `nack_delay` if it raises. A lost stream is reopened with backoff; refusals
        (a bad filter, no permission) raise grpc.aio.AioRpcError."""
        while True:
            async for attempt in stamina.retry_context(
                on=is_retryable,
                attempts=reconnect.attempts or None,
                timeout=reconnect.timeout or None,
                wait_initial=reconnect.wait_initial,
                wait_max=reconnect.wait_max,
                wait_jitter=reconnect.wait_jitter,
            ):
                with attempt:
                    subscription = self.subscribe(
                        name,
                        families=families,
                        types=types,
                        jurisdiction_prefixes=jurisdiction_prefixes,
                        planes=planes,
                        max_in_flight=max_in_flight,
                    )
                    await subscription.open()  # a failure here backs off and tries again
            # Opened: from here a lost stream starts a fresh backoff.
            await self._run_handlers(subscription, handler, max_in_flight, nack_delay)

    @staticmethod
    async def _run_handlers(
        subscription: Subscription,
        handler: Callable[[gateway_pb2.Delivery], Awaitable[None]],
        max_in_flight: int,
        nack_delay: timedelta,
    ) -> None:
        slots = asyncio.Semaphore(max_in_flight)
        running: set[asyncio.Task[None]] = set()

        async def handle(delivery: gateway_pb2.Delivery) -> None:
            try:
                with handling_span(delivery, subscription.name):
                    await handler(delivery)
            except Exception as error:  # the handler's failure: redeliver later, keep going
                log.warning(
                    "consume.handler_failed",
                    event_id=delivery.event.id,
                    attempt=delivery.attempt,
                    error=f"{type(error).__name__}: {error}",
                )
                with contextlib.suppress(Exception):
                    await subscription.nack(delivery, delay=nack_delay, reason=str(error)[:200])
            else:
                with contextlib.suppress(Exception):  # a lost ack is redelivered
                    await subscription.ack(delivery)
            finally:
                slots.release()

        try:
            async for delivery in subscription:
                await slots.acquire()
                task = asyncio.create_task(handle(delivery))
                running.add(task)
                task.add_done_callback(running.discard)
        except grpc.aio.AioRpcError as error:
            if not is_retryable(error):
                raise
            log.warning("consume.stream_lost", code=error.code().name, details=error.details())
        finally:
            if running:
                await asyncio.wait(running)
            await subscription.close()

    async def watch_checkpoints(
        self, gateway_id: str = ""
    ) -> AsyncIterator[audit_service_pb2.SignedCheckpoint]:
        """The audit logs' signed checkpoints (of every replica, or one): the latest of each,
        then every new one. Keep them with `dutylink.adapters.sdk.checkpoints.CheckpointKeeper`."""
        call = self._checkpoints.WatchCheckpoints(
            audit_service_pb2.WatchCheckpointsRequest(gateway_id=gateway_id),
            metadata=self._metadata,
        )
        try:
            async for response in call:
                yield response.checkpoint
        finally:
            call.cancel()

    async def consistency_proof(
        self, gateway_id: str, old_size: int, new_size: int, *, timeout: float = 30.0
    ) -> list[bytes]:
        """The gateway's RFC 9162 consistency proof between two sizes of a log (verify it:
        `gateway.audit.merkle.verify_consistency`)."""
        response = await self._checkpoints.GetConsistencyProof(
            audit_service_pb2.GetConsistencyProofRequest(
                gateway_id=gateway_id, old_size=old_size, new_size=new_size
            ),
            metadata=self._metadata,
            timeout=timeout,
        )
        return list(response.proof)

    async def checkpoint(
        self, gateway_id: str = "", *, timeout: float = 10.0
    ) -> audit_service_pb2.SignedCheckpoint:
        """The latest signed checkpoint of one log ("": the answering gateway's own); verify
        its note before trusting the decoded size and root."""
        response: audit_service_pb2.GetCheckpointResponse = await self._checkpoints.GetCheckpoint(
            audit_service_pb2.GetCheckpointRequest(gateway_id=gateway_id),
            metadata=self._metadata,
            timeout=timeout,
        )
        return response.checkpoint

    async def audit_entries(
        self, request: audit_service_pb2.ListEntriesRequest, *, timeout: float = 30.0
    ) -> audit_service_pb2.ListEntriesResponse:
        """One page of a log's audit entries (auditors only: PERMISSION_DENIED otherwise)."""
        response: audit_service_pb2.ListEntriesResponse = await self._audit.ListEntries(
            request, metadata=self._metadata, timeout=timeout
        )
        return response

    async def inclusion_proof(
        self, gateway_id: str, index: int, tree_size: int = 0, *, timeout: float = 30.0
    ) -> audit_service_pb2.GetInclusionProofResponse:
        """An entry with its RFC 9162 inclusion proof (`tree_size` 0: against the latest
        checkpoint, which comes with it). Auditors only."""
        response: audit_service_pb2.GetInclusionProofResponse = await self._audit.GetInclusionProof(
            audit_service_pb2.GetInclusionProofRequest(
                gateway_id=gateway_id, index=index, tree_size=tree_size
            ),
            metadata=self._metadata,
            timeout=timeout,
        )
        return response

    async def declare_emergency(
        self, request: gateway_pb2.DeclareEmergencyRequest, *, timeout: float = 10.0
    ) -> gateway_pb2.EmergencyGrant:
        """Declare a break-glass elevation (agencies with a break-glass role only); the grant
        as recorded. Never retried: a second declaration would be a second grant."""
        response: gateway_pb2.DeclareEmergencyResponse = await self._break_glass.DeclareEmergency(
            request, metadata=self._metadata, timeout=timeout
        )
        return response.grant

    async def list_emergencies(self, *, timeout: float = 10.0) -> list[gateway_pb2.EmergencyGrant]:
        """Every break-glass declaration, active and expired, newest first (for review)."""
        response: gateway_pb2.ListEmergenciesResponse = await self._break_glass.ListEmergencies(
            gateway_pb2.ListEmergenciesRequest(), metadata=self._metadata, timeout=timeout
        )
        return list(response.grants)

    async def status(
        self,
        event_id: str,
        *,
        sender: str | None = None,
        plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL,
        timeout: float = 10.0,
    ) -> gateway_pb2.TrackedMessage:
        """Who a message reached, took or declined and where its deadlines stand (`sender`:
        its publishing agency, this client's by default). Only the sender and the command
        centre may ask; NOT_FOUND for anyone else and for a message not (yet) tracked. Retried
        as `retry` says."""
        request = gateway_pb2.GetStatusRequest(event_id=event_id, sender=sender or "", plane=plane)
        async for attempt in self.retry.context():  # a read: safe to ask again
            with attempt:
                response: gateway_pb2.GetStatusResponse = await self._tracking.GetStatus(
                    request, metadata=self._metadata, timeout=timeout
                )
        return response.message

    async def pending(
        self,
        *,
        sender: str | None = None,
        plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL,
        limit: int = 0,
        timeout: float = 10.0,
    ) -> gateway_pb2.ListPendingResponse:
        """The tracked messages this agency may see that still wait for an answer, newest
        first (`limit` 0: the gateway's default page; `truncated` says more are pending)."""
        request = gateway_pb2.ListPendingRequest(plane=plane, sender=sender or "", limit=limit)
        async for attempt in self.retry.context():
            with attempt:
                response: gateway_pb2.ListPendingResponse = await self._tracking.ListPending(
                    request, metadata=self._metadata, timeout=timeout
                )
        return response

    async def incident(
        self,
        incident_id: str,
        *,
        plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL,
        as_of: datetime | None = None,
        timeout: float = 10.0,
    ) -> board_pb2.BoardIncident:
        """One incident of the duty board with its timeline, as this agency may see it
        (NOT_FOUND when it may see nothing of it); `as_of`: as it was entitled to see it at
        that past moment. Retried as `retry` says."""
        request = board_pb2.GetIncidentRequest(
            incident_id=incident_id, plane=plane, as_of=_timestamp(as_of)
        )
        async for attempt in self.retry.context():
            with attempt:
                response: board_pb2.GetIncidentResponse = await self._board.GetIncident(
                    request, metadata=self._metadata, timeout=timeout
                )
        return response.incident

    async def board(
        self,
        jurisdiction_prefix: str = "",
        *,
        plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL,
        include_finished: bool = False,
        limit: int = 0,
        as_of: datetime | None = None,
        timeout: float = 10.0,
    ) -> board_pb2.GetBoardResponse:
        """The duty board of a jurisdiction as this agency may see it (`as_of`: as it was
        entitled to see it then): open incidents (all with `include_finished`), those with
        something overdue first, then the latest changed."""
        request = board_pb2.GetBoardRequest(
            jurisdiction_prefix=jurisdiction_prefix,
            plane=plane,
            include_finished=include_finished,
            limit=limit,
            as_of=_timestamp(as_of),
        )
        async for attempt in self.retry.context():
            with attempt:
                response: board_pb2.GetBoardResponse = await self._board.GetBoard(
                    request, metadata=self._metadata, timeout=timeout
                )
        return response

    async def ledger(
        self,
        agency: str = "",
        *,
        plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL,
        item_prefix: str = "",
        limit: int = 0,
        timeout: float = 10.0,
    ) -> board_pb2.GetLedgerResponse:
        """An agency's resource ledger (its own when `agency` is empty; another's only for the
        command centre, else PERMISSION_DENIED): per item, by item id, its total and what is
        available, reserved, committed, deployed and returning. Retried as `retry` says."""
        request = board_pb2.GetLedgerRequest(
            agency=agency, plane=plane, item_prefix=item_prefix, limit=limit
        )
        async for attempt in self.retry.context():
            with attempt:
                response: board_pb2.GetLedgerResponse = await self._board.GetLedger(
                    request, metadata=self._metadata, timeout=timeout
                )
        return response

    async def watch_board(
        self,
        jurisdiction_prefix: str = "",
        *,
        plane: event_pb2.Plane.ValueType = event_pb2.PLANE_ACTUAL,
    ) -> AsyncIterator[board_pb2.BoardIncident]:
        """The incidents of a jurisdiction as they change, from now on, until the gateway ends
        the stream (reconnect and read the board again then)."""
        request = board_pb2.WatchBoardRequest(jurisdiction_prefix=jurisdiction_prefix, plane=plane)
        call = self._board.WatchBoard(request, metadata=self._metadata)
        try:
            async for change in call:
                yield change.incident
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> DutyLinkClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AckNotConfirmedError(Exception):
    """The gateway did not record an ack (`confirm_acks`): the delivery had been superseded by
    a redelivery, which comes (or came) on the stream, or JetStream did not answer. The event
    may be delivered again; the message says why."""


class Subscription:
    """An open Subscribe stream: iterate deliveries, then `ack` or `nack` each."""

    def __init__(
        self,
        stub: gateway_pb2_grpc.SubscriberServiceStub,
        opening: gateway_pb2.SubscriptionOpen,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self._stub = stub
        self._opening = opening
        self._metadata = metadata
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._error: grpc.aio.AioRpcError | None = None
        self._deliveries: asyncio.Queue[gateway_pb2.Delivery | None] = asyncio.Queue()
        # gRPC allows one write in flight per stream; acks may come from many tasks.
        self._writing = asyncio.Lock()
        # Acks awaiting the gateway's confirmation, by delivery id (with `confirm_acks`).
        self._confirmations: dict[int, asyncio.Future[None]] = {}
        # Acks waiting for the stream's next write, each with what its `ack` awaits: every ack
        # made while one write is under way goes out together in the next (see _write_ack).
        self._unsent_acks: list[tuple[int, asyncio.Future[None]]] = []
        self.ready: gateway_pb2.SubscriptionReady | None = None

    @property
    def name(self) -> str:
        """The durable subscription's name."""
        return self._opening.name

    async def open(self) -> gateway_pb2.SubscriptionReady:
        # No request iterator: the stream is written with write() (the stubs require one).
        self._call = self._stub.Subscribe(metadata=self._metadata)  # type: ignore[call-arg]
        await self._call.write(gateway_pb2.SubscribeRequest(open=self._opening))
        first = await self._call.read()
        if first is grpc.aio.EOF:
            await self._call  # raises the call's error status
            raise ConnectionError("the gateway closed the subscription before it was ready")
        self.ready = cast(gateway_pb2.SubscribeResponse, first).ready
        self._reader = asyncio.create_task(self._read_deliveries(self._call))
        return self.ready

    async def _read_deliveries(self, call: Any) -> None:
        # A queue between the stream and the caller lets `next` time out without cancelling
        # the RPC; it never holds more than the gateway's in-flight limit.
        try:
            while (response := await call.read()) is not grpc.aio.EOF:
                message = cast(gateway_pb2.SubscribeResponse, response)
                kind = message.WhichOneof("kind")
                if kind == "delivery":
                    self._deliveries.put_nowait(message.delivery)
                elif kind == "deliveries":
                    for delivery in message.deliveries.deliveries:
                        self._deliveries.put_nowait(delivery)
                elif kind in ("ack_confirmed", "acks_confirmed"):
                    ids = (
                        (message.ack_confirmed.delivery_id,)
                        if kind == "ack_confirmed"
                        else message.acks_confirmed.delivery_ids
                    )
                    for delivery_id in ids:
                        waiting = self._confirmations.pop(delivery_id, None)
                        if waiting is not None and not waiting.done():
                            waiting.set_result(None)
                elif kind == "ack_not_confirmed":
                    answer = message.ack_not_confirmed
                    waiting = self._confirmations.pop(answer.delivery_id, None)
                    if waiting is not None and not waiting.done():
                        waiting.set_exception(AckNotConfirmedError(answer.reason))
        except grpc.aio.AioRpcError as error:
            self._error = error
        finally:
            self._deliveries.put_nowait(None)
            ended = ConnectionError("the subscription ended before the gateway confirmed the ack")
            for waiting in self._confirmations.values():
                if not waiting.done():
                    waiting.set_exception(ended)
            self._confirmations.clear()

    async def next(self, timeout: float | None = None) -> gateway_pb2.Delivery | None:
        """The next delivery, or None once the stream has ended; TimeoutError after `timeout`.
        Raises the stream's error (grpc.aio.AioRpcError) if it failed."""
        delivery = await asyncio.wait_for(self._deliveries.get(), timeout)
        if delivery is None:
            self._deliveries.put_nowait(None)  # stay ended for later calls
            if self._error is not None:
                raise self._error
        return delivery

    async def __aiter__(self) -> AsyncIterator[gateway_pb2.Delivery]:
        while (delivery := await self.next()) is not None:
            yield delivery

    async def _write(self, request: gateway_pb2.SubscribeRequest) -> None:
        async with self._writing:
            await self._write_now(request)

    async def _write_now(self, request: gateway_pb2.SubscribeRequest) -> None:
        """Under `_writing`."""
        if self._call is None:
            raise ConnectionError("the subscription is closed")
        try:
            await self._call.write(request)
        except asyncio.InvalidStateError as error:  # grpc's word for a finished stream
            raise ConnectionError("the subscription ended") from error

    async def _write_ack(self, delivery_id: int) -> None:
        """Send one ack, together with every other ack made meanwhile: whoever gets the stream
        next writes all that are waiting (one `acks` message when batched), so acks from many
        tasks cost a few messages, never a wait for more to come. Returns once this ack is
        written."""
        written = asyncio.get_running_loop().create_future()
        # Retrieved even if its `ack` was cancelled meanwhile: no "never retrieved" warning.
        written.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._unsent_acks.append((delivery_id, written))
        async with self._writing:
            if self._unsent_acks:
                waiting, self._unsent_acks = self._unsent_acks, []
                ids = [delivery_id for delivery_id, _ in waiting]
                if len(ids) > 1 and self._opening.batch_deliveries:
                    requests = [
                        gateway_pb2.SubscribeRequest(acks=gateway_pb2.AckBatch(delivery_ids=ids))
                    ]
                else:
                    requests = [
                        gateway_pb2.SubscribeRequest(ack=gateway_pb2.Ack(delivery_id=one))
                        for one in ids
                    ]
                try:
                    for request in requests:
                        await self._write_now(request)
                except Exception as error:
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(error)
                else:
                    for _, future in waiting:
                        if not future.done():
                            future.set_result(None)
        await written

    async def ack(self, delivery: gateway_pb2.Delivery, *, timeout: float | None = 30.0) -> None:
        """Acknowledge `delivery`. With `confirm_acks`, wait for the gateway's confirmation:
        AckNotConfirmedError if the gateway says the ack did not count (e.g. the delivery had
        been superseded by a redelivery), ConnectionError if the stream ends first,
        TimeoutError after `timeout`. After any of them the event may come again. ConnectionError
        too if the stream had ended (an ack from a task that outlived it)."""
        confirmed: asyncio.Future[None] | None = None
        if self._opening.confirm_acks:
            if self._reader is None or self._reader.done():
                raise ConnectionError("the subscription is not open")
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[delivery.delivery_id] = confirmed
        try:
            await self._write_ack(delivery.delivery_id)
            if confirmed is not None:
                await asyncio.wait_for(asyncio.shield(confirmed), timeout)
        finally:
            if confirmed is not None:
                self._confirmations.pop(delivery.delivery_id, None)
                if confirmed.done() and not confirmed.cancelled():
                    confirmed.exception()  # retrieved: no "never retrieved" warning

    async def nack(
        self, delivery: gateway_pb2.Delivery, *, delay: timedelta = timedelta(0), reason: str = ""
    ) -> None:
        nack = gateway_pb2.Nack(delivery_id=delivery.delivery_id, reason=reason)
        nack.delay.FromTimedelta(delay)
        await self._write(gateway_pb2.SubscribeRequest(nack=nack))

    async def close(self, timeout: float = 5.0) -> None:
        """Close gracefully: the gateway records every ack already sent before the stream
        ends; deliveries still unacked go back for redelivery."""
        call, reader, self._call, self._reader = self._call, self._reader, None, None
        if call is None:
            return
        try:
            async with self._writing:
                await call.done_writing()
            if reader is not None:
                await asyncio.wait_for(asyncio.shield(reader), timeout)
        except (TimeoutError, grpc.aio.AioRpcError):
            pass
        finally:
            call.cancel()
            if reader is not None:
                reader.cancel()

    async def __aenter__(self) -> Subscription:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
