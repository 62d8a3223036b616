"""BreakGlassService: declaring and listing emergency grants."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from dutylink.policies.engine import BreakGlassError, declare_grant, holds_break_glass_role
from dutylink.v1 import audit_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.access.authorization import GrantBook
from gateway.audit.entries import (
    gateway_entry,
)
from gateway.audit.log import AuditUnavailableError
from gateway.core.ports import StoreError
from gateway.rpc.calls import (
    abort,
    authenticate,
    status,
    store_code,
    store_message,
)
from gateway.rpc.dependencies import Dependencies, log


class BreakGlass(gateway_pb2_grpc.BreakGlassServiceServicer):
    """Break-glass declarations: checked against the policy, recorded durably, then in force."""

    def __init__(self, deps: Dependencies, grants: GrantBook) -> None:
        self._deps = deps
        self._grants = grants

    async def DeclareEmergency(
        self,
        request: gateway_pb2.DeclareEmergencyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.DeclareEmergencyResponse:
        principal = await authenticate(self._deps.authenticator, context, "DeclareEmergency")
        problems = tuple(self._deps.validator.problems(request))
        if problems:
            await abort(
                context, status(grpc.StatusCode.INVALID_ARGUMENT, "invalid declaration", problems)
            )
        policy = self._deps.authorizer.policy

        def fact(
            outcome: audit_pb2.AuditOutcome.ValueType,
            reason: str,
            grant_id: str = "",
            data: bytes = b"",
        ) -> list[audit_pb2.AuditEntry]:
            return [
                gateway_entry(
                    audit_pb2.AUDIT_ACTION_BREAK_GLASS,
                    outcome,
                    actor=principal.agency,
                    reason=reason,
                    policy_version=policy.version,
                    grant_id=grant_id,
                    digest=self._deps.hashing.digest(data) if data else b"",
                )
            ]

        if not holds_break_glass_role(policy, principal.agency, principal.roles):
            refusal = (
                f"{principal.agency} holds no break-glass role "
                f"({', '.join(sorted(policy.break_glass.roles)) or 'none in the policy'})"
            )
            await self._deps.record_best_effort(fact(audit_pb2.AUDIT_OUTCOME_DENIED, refusal))
            await abort(context, status(grpc.StatusCode.PERMISSION_DENIED, refusal))
        now = self._deps.clock()
        grant_id = f"bg-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
        try:
            grant = declare_grant(
                policy,
                grant_id=grant_id,
                agency=principal.agency,
                roles=principal.roles,
                reason=request.reason,
                now=now,
                duration=request.duration.ToTimedelta(),
                incident_id=request.incident_id,
                jurisdiction=request.jurisdiction_prefix,
                agencies=request.agencies,
                unredact=tuple(request.fields),
                receive_types=tuple(request.receive_types),
            )
        except BreakGlassError as error:
            await self._deps.record_best_effort(fact(audit_pb2.AUDIT_OUTCOME_INVALID, str(error)))
            await abort(context, status(grpc.StatusCode.INVALID_ARGUMENT, str(error)))
        record = gateway_pb2.EmergencyGrant(
            id=grant.id, declared_by=grant.declared_by, scope=request
        )
        record.declared_at.FromDatetime(grant.declared_at)
        record.not_after.FromDatetime(grant.not_after)
        data = record.SerializeToString()
        # The entry names the grant and the digest of its record (which holds the free-text
        # reason; the log holds no free text from people).
        summary = (
            f"incident {request.incident_id or '-'}, fields {', '.join(request.fields) or '-'}, "
            f"until {grant.not_after.isoformat()}"
        )
        try:
            await self._deps.record(fact(audit_pb2.AUDIT_OUTCOME_ACCEPTED, summary, grant.id, data))
        except AuditUnavailableError as error:
            await abort(
                context, status(grpc.StatusCode.UNAVAILABLE, f"{error}; not declared, retry")
            )
        try:
            await self._deps.store.record_grant(grant.id, data)
        except StoreError as error:
            # Not recorded means not in force: an elevation nobody can review must not exist.
            await self._deps.record_best_effort(
                fact(audit_pb2.AUDIT_OUTCOME_FAILED, str(error), grant.id, data)
            )
            await abort(context, status(store_code(error), store_message(error)))
        self._grants.add(record)
        log.warning(
            "breakglass.declared",
            grant_id=grant.id,
            incident_id=request.incident_id,
            jurisdiction=request.jurisdiction_prefix,
            fields=list(request.fields),
            not_after=grant.not_after.isoformat(),
            reason=request.reason,
        )
        return gateway_pb2.DeclareEmergencyResponse(grant=record)

    async def ListEmergencies(
        self,
        request: gateway_pb2.ListEmergenciesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ListEmergenciesResponse:
        await authenticate(self._deps.authenticator, context, "ListEmergencies")
        return gateway_pb2.ListEmergenciesResponse(grants=self._grants.records())
