"""A typed asyncio client for department systems: publish events, receive them, ack them.

    async with DutyLinkClient("127.0.0.1:50051", token="…") as client:
        receipt = await client.publish(event)
        async with client.subscribe("dispatch", families=["incident"]) as subscription:
            async for delivery in subscription:
                handle(delivery.event)
                await subscription.ack(delivery)

Retries, reconnection and the adapter framework come with the adapters issue; this client is
the thin, honest layer under them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import grpc

from dutylink.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    event_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)


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
    with a development token on plaintext."""

    def __init__(
        self, target: str, *, token: str | None = None, certificate: ClientCertificate | None = None
    ) -> None:
        if (token is None) == (certificate is None):
            raise ValueError(
                "give exactly one of token= (development) or certificate= (mutual TLS)"
            )
        if certificate is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=certificate.ca_pem,
                private_key=certificate.key_pem,
                certificate_chain=certificate.cert_pem,
            )
            self._channel = grpc.aio.secure_channel(target, credentials)
            self._metadata: tuple[tuple[str, str], ...] = ()
        else:
            self._channel = grpc.aio.insecure_channel(target)
            self._metadata = (("authorization", f"Bearer {token}"),)
        self._publisher = gateway_pb2_grpc.PublisherServiceStub(self._channel)
        self._subscriber = gateway_pb2_grpc.SubscriberServiceStub(self._channel)
        self._checkpoints = audit_service_pb2_grpc.CheckpointServiceStub(self._channel)

    async def publish(
        self, event: event_pb2.Event, *, timeout: float = 10.0
    ) -> gateway_pb2.Receipt:
        """Publish one event; returns once it is durably stored. Raises grpc.aio.AioRpcError."""
        response: gateway_pb2.PublishResponse = await self._publisher.Publish(
            gateway_pb2.PublishRequest(event=event), metadata=self._metadata, timeout=timeout
        )
        return response.receipt

    async def publish_batch(
        self, events: Sequence[event_pb2.Event], *, timeout: float = 30.0
    ) -> list[gateway_pb2.PublishResult]:
        """Publish many events; one result (receipt or error) per event, in order."""
        response = await self._publisher.PublishBatch(
            gateway_pb2.PublishBatchRequest(events=events), metadata=self._metadata, timeout=timeout
        )
        return list(response.results)

    def subscribe(
        self,
        name: str,
        *,
        families: Sequence[str] = (),
        types: Sequence[str] = (),
        jurisdiction_prefixes: Sequence[str] = (),
        planes: Sequence[event_pb2.Plane.ValueType] = (),
        max_in_flight: int = 0,
    ) -> Subscription:
        """A durable subscription; open it with `async with`."""
        opening = gateway_pb2.SubscriptionOpen(
            name=name,
            filter=gateway_pb2.SubscriptionFilter(
                families=families,
                types=types,
                jurisdiction_prefixes=jurisdiction_prefixes,
                planes=planes,
            ),
            max_in_flight=max_in_flight,
        )
        return Subscription(self._subscriber, opening, self._metadata)

    async def watch_checkpoints(
        self, gateway_id: str = ""
    ) -> AsyncIterator[audit_service_pb2.SignedCheckpoint]:
        """The audit logs' signed checkpoints (of every replica, or one): the latest of each,
        then every new one. Keep them with `adapters.checkpoints.CheckpointKeeper`."""
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
        self.ready: gateway_pb2.SubscriptionReady | None = None

    async def open(self) -> gateway_pb2.SubscriptionReady:
        self._call = self._stub.Subscribe(metadata=self._metadata)
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
                self._deliveries.put_nowait(cast(gateway_pb2.SubscribeResponse, response).delivery)
        except grpc.aio.AioRpcError as error:
            self._error = error
        finally:
            self._deliveries.put_nowait(None)

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

    async def ack(self, delivery: gateway_pb2.Delivery) -> None:
        await self._call.write(
            gateway_pb2.SubscribeRequest(ack=gateway_pb2.Ack(delivery_id=delivery.delivery_id))
        )

    async def nack(
        self, delivery: gateway_pb2.Delivery, *, delay: timedelta = timedelta(0), reason: str = ""
    ) -> None:
        nack = gateway_pb2.Nack(delivery_id=delivery.delivery_id, reason=reason)
        nack.delay.FromTimedelta(delay)
        await self._call.write(gateway_pb2.SubscribeRequest(nack=nack))

    async def close(self, timeout: float = 5.0) -> None:
        """Close gracefully: the gateway records every ack already sent before the stream
        ends; deliveries still unacked go back for redelivery."""
        call, reader, self._call, self._reader = self._call, self._reader, None, None
        if call is None:
            return
        try:
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
