"""gRPC servicers over the audit logs: AuditService (auditors only) and CheckpointService (any
authenticated agency). Any replica answers for any replica's log (see
gateway.store.audit_reader)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import Message

from dutylink.policies.engine import AUDITOR_ROLE, is_auditor
from dutylink.v1 import audit_pb2, audit_service_pb2, audit_service_pb2_grpc
from gateway.access.auth import Principal
from gateway.audit.commitments import salt
from gateway.audit.entries import salt_reveal_entry
from gateway.audit.log import AuditUnavailableError
from gateway.audit.merkle import SubtreeHashes, tree_for
from gateway.audit.note import NoteError
from gateway.core import subjects
from gateway.core.crypto import crypto_profile
from gateway.rpc.calls import abort, authenticate, status
from gateway.rpc.dependencies import Dependencies
from gateway.store.audit_reader import (
    READ_FAILURES,
    AuditReader,
    DamagedLogError,
    StoredCheckpoint,
    parse_stored_checkpoint,
)

log = structlog.get_logger("dutylink.audit")

DEFAULT_PAGE_SIZE = 100
# Entries examined per ListEntries call at most, matching or not: a filter that matches little
# returns a short page and `next_index` to go on from, instead of holding the call for minutes.
SCAN_LIMIT = 10_000

T = TypeVar("T")


def _signed(stored: StoredCheckpoint) -> audit_service_pb2.SignedCheckpoint:
    return audit_service_pb2.SignedCheckpoint(
        gateway_id=stored.gateway_id,
        note=stored.note,
        tree_size=stored.checkpoint.size,
        root_hash=stored.checkpoint.root_hash,
    )


class _LogAccess:
    """The reader, created once NATS is connected, and the checks every audit call shares."""

    def __init__(self, deps: Dependencies) -> None:
        self.deps = deps
        self._reader: AuditReader | None = None

    async def caller(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        rpc: str,
        request: Message,
        *,
        auditor: bool,
    ) -> Principal:
        principal = await authenticate(self.deps.authenticator, context, rpc)
        if auditor and not is_auditor(principal.roles):
            await abort(
                context,
                status(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{principal.agency} does not hold the {AUDITOR_ROLE} role",
                ),
            )
        if problems := tuple(self.deps.validator.problems(request)):
            await abort(
                context, status(grpc.StatusCode.INVALID_ARGUMENT, "invalid request", problems)
            )
        return principal

    async def reader(self, context: grpc.aio.ServicerContext[Any, Any]) -> AuditReader:
        if self._reader is None:
            if not self.deps.store.connected:
                await abort(
                    context, status(grpc.StatusCode.UNAVAILABLE, "not connected to NATS yet")
                )
            profile = crypto_profile(self.deps.config.audit.crypto_profile)
            self._reader = AuditReader(self.deps.store.client.jetstream(), tree_for(profile))
        return self._reader

    def gateway_id(self, requested: str) -> str:
        return requested or self.deps.config.gateway.gateway_id

    async def hashes(
        self, context: grpc.aio.ServicerContext[Any, Any], gateway_id: str
    ) -> SubtreeHashes:
        reader = await self.reader(context)
        return await self.read(context, lambda: reader.refresh(gateway_id))

    async def entry(
        self, context: grpc.aio.ServicerContext[Any, Any], gateway_id: str, index: int
    ) -> bytes:
        reader = await self.reader(context)
        return await self.read(context, lambda: reader.entry(gateway_id, index))

    async def latest(
        self, context: grpc.aio.ServicerContext[Any, Any], gateway_id: str
    ) -> StoredCheckpoint:
        reader = await self.reader(context)
        latest = await self.read(context, lambda: reader.latest_checkpoint(gateway_id))
        if latest is None:
            await abort(
                context,
                status(grpc.StatusCode.NOT_FOUND, f"audit log {gateway_id} has no checkpoint yet"),
            )
        return latest

    async def read(
        self, context: grpc.aio.ServicerContext[Any, Any], operation: Callable[[], Awaitable[T]]
    ) -> T:
        """Run a read, turning store failures into UNAVAILABLE and damage into DATA_LOSS."""
        try:
            return await operation()
        except DamagedLogError as error:
            await abort(context, status(grpc.StatusCode.DATA_LOSS, str(error)))
        except (NoteError, ValueError) as error:
            await abort(context, status(grpc.StatusCode.DATA_LOSS, f"stored checkpoint: {error}"))
        except READ_FAILURES as error:
            await abort(
                context,
                status(grpc.StatusCode.UNAVAILABLE, f"reading the audit log failed: {error}"),
            )


def _matches(request: audit_service_pb2.ListEntriesRequest, entry: audit_pb2.AuditEntry) -> bool:
    if request.HasField("since") and entry.time.ToNanoseconds() < request.since.ToNanoseconds():
        return False
    if request.HasField("until") and entry.time.ToNanoseconds() >= request.until.ToNanoseconds():
        return False
    if request.agency and request.agency not in (entry.actor_agency, entry.recipient_agency):
        return False
    if request.event_id and entry.event_id != request.event_id:
        return False
    return not request.actions or entry.action in request.actions


class AuditServicer(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(self, deps: Dependencies) -> None:
        self._access = _LogAccess(deps)

    async def ListEntries(
        self,
        request: audit_service_pb2.ListEntriesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_service_pb2.ListEntriesResponse:
        await self._access.caller(context, "ListEntries", request, auditor=True)
        gateway_id = self._access.gateway_id(request.gateway_id)
        size = (await self._access.hashes(context, gateway_id)).size
        end = min(request.end_index or size, size)
        stop = min(end, request.start_index + SCAN_LIMIT)
        page = request.page_size or DEFAULT_PAGE_SIZE
        reader = await self._access.reader(context)
        response = audit_service_pb2.ListEntriesResponse(log_size=size, next_index=stop)

        async def scan() -> None:
            async for index, data in reader.entries(gateway_id, request.start_index, stop):
                entry = audit_pb2.AuditEntry.FromString(data)
                if _matches(request, entry):
                    response.entries.add(index=index, data=data, entry=entry)
                    if len(response.entries) == page:
                        response.next_index = index + 1
                        return

        await self._access.read(context, scan)
        return response

    async def GetInclusionProof(
        self,
        request: audit_service_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_service_pb2.GetInclusionProofResponse:
        await self._access.caller(context, "GetInclusionProof", request, auditor=True)
        gateway_id = self._access.gateway_id(request.gateway_id)
        response = audit_service_pb2.GetInclusionProofResponse()
        size = request.tree_size
        if not size:
            # The checkpoint first: the entries read next then cover at least its size.
            latest = await self._access.latest(context, gateway_id)
            response.checkpoint.CopyFrom(_signed(latest))
            size = latest.checkpoint.size
        hashes = await self._access.hashes(context, gateway_id)
        if not request.index < size <= hashes.size:
            await abort(
                context,
                status(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"entry {request.index} is not in a tree of size {size} "
                    f"(the log has {hashes.size} entries)",
                ),
            )
        data = await self._access.entry(context, gateway_id, request.index)
        response.entry.CopyFrom(
            audit_service_pb2.StoredEntry(
                index=request.index, data=data, entry=audit_pb2.AuditEntry.FromString(data)
            )
        )
        response.tree_size = size
        response.proof.extend(hashes.inclusion_proof(request.index, size))
        return response

    async def RevealCommitmentSalts(
        self,
        request: audit_service_pb2.RevealCommitmentSaltsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_service_pb2.RevealCommitmentSaltsResponse:
        principal = await self._access.caller(
            context, "RevealCommitmentSalts", request, auditor=True
        )
        gateway_id = self._access.gateway_id(request.gateway_id)
        hashes = await self._access.hashes(context, gateway_id)
        if request.index >= hashes.size:
            await abort(
                context,
                status(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"audit log {gateway_id} has {hashes.size} entries, no entry {request.index}",
                ),
            )
        data = await self._access.entry(context, gateway_id, request.index)
        entry = audit_pb2.AuditEntry.FromString(data)
        key = self._access.deps.audit.commitment_key
        hashing = self._access.deps.hashing
        # Revealing is itself a fact: who was given which delivery's salts. Recorded before
        # they are given (fail closed: no record, no salts).
        try:
            await self._access.deps.record(
                [salt_reveal_entry(principal.agency, gateway_id, request.index, entry)]
            )
        except AuditUnavailableError as error:
            await abort(context, status(grpc.StatusCode.UNAVAILABLE, str(error)))
        log.warning(
            "audit.salts_revealed",
            auditor=principal.agency,
            gateway_id=gateway_id,
            index=request.index,
            event_id=entry.event_id,
        )
        return audit_service_pb2.RevealCommitmentSaltsResponse(
            salts=[
                audit_service_pb2.FieldSalt(
                    path=c.path,
                    salt=salt(key, entry.event_id, entry.recipient_agency, c.path, hashing),
                )
                for c in entry.withheld_commitments
            ]
        )


class CheckpointServicer(audit_service_pb2_grpc.CheckpointServiceServicer):
    def __init__(self, deps: Dependencies) -> None:
        self._access = _LogAccess(deps)

    async def GetCheckpoint(
        self,
        request: audit_service_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_service_pb2.GetCheckpointResponse:
        await self._access.caller(context, "GetCheckpoint", request, auditor=False)
        latest = await self._access.latest(context, self._access.gateway_id(request.gateway_id))
        return audit_service_pb2.GetCheckpointResponse(checkpoint=_signed(latest))

    async def GetConsistencyProof(
        self,
        request: audit_service_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_service_pb2.GetConsistencyProofResponse:
        await self._access.caller(context, "GetConsistencyProof", request, auditor=False)
        gateway_id = self._access.gateway_id(request.gateway_id)
        response = audit_service_pb2.GetConsistencyProofResponse(old_size=request.old_size)
        new_size = request.new_size
        if not new_size:
            latest = await self._access.latest(context, gateway_id)
            response.checkpoint.CopyFrom(_signed(latest))
            new_size = latest.checkpoint.size
        hashes = await self._access.hashes(context, gateway_id)
        if not request.old_size <= new_size <= hashes.size:
            await abort(
                context,
                status(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"sizes {request.old_size} and {new_size} are not within the log's "
                    f"{hashes.size} entries in order",
                ),
            )
        response.new_size = new_size
        response.proof.extend(hashes.consistency_proof(request.old_size, new_size))
        return response

    async def WatchCheckpoints(  # type: ignore[override]
        self,
        request: audit_service_pb2.WatchCheckpointsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        await self._access.caller(context, "WatchCheckpoints", request, auditor=False)
        reader = await self._access.reader(context)
        arrived: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=1000)

        async def on_checkpoint(message: Any) -> None:
            gateway_id = message.subject.removeprefix(f"{subjects.AUDIT_PREFIX}.")
            gateway_id = gateway_id.removesuffix(".checkpoints")
            if arrived.full():  # a watcher that does not read loses the oldest, never memory
                arrived.get_nowait()
            arrived.put_nowait((gateway_id, message.data))

        # Subscribe first, then send the latest stored ones: nothing signed in between is missed
        # (a checkpoint may come twice; sizes tell watchers so).
        subscription = await self._access.deps.store.client.subscribe(
            subjects.audit_checkpoints(request.gateway_id or "*"), cb=on_checkpoint
        )
        try:
            wanted = [request.gateway_id] if request.gateway_id else await reader.gateways()
            for gateway_id in wanted:
                latest = await self._access.read(
                    context, functools.partial(reader.latest_checkpoint, gateway_id)
                )
                if latest is not None:
                    await context.write(
                        audit_service_pb2.WatchCheckpointsResponse(checkpoint=_signed(latest))
                    )
            while True:
                gateway_id, data = await arrived.get()
                try:
                    stored = parse_stored_checkpoint(gateway_id, data)
                except (NoteError, ValueError) as error:
                    log.error("audit.bad_checkpoint", gateway_id=gateway_id, reason=str(error))
                    continue
                await context.write(
                    audit_service_pb2.WatchCheckpointsResponse(checkpoint=_signed(stored))
                )
        finally:
            await subscription.unsubscribe()
