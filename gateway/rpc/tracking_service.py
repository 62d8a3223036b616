"""TrackingService: the acknowledgement status of tracked messages (gateway.store.tracker), for
their sender and the command centre. To anyone else a message is NOT_FOUND with the same words
as one never tracked, so a refusal does not tell that it exists. Every answer is recorded in the
audit log before it is sent (no record, no answer), refusals as well as they can be."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.audit.entries import status_query_entry
from gateway.audit.log import AuditUnavailableError
from gateway.core.ports import StoreError
from gateway.core.validation import FieldProblem
from gateway.core.workflows.base import plane_token
from gateway.core.workflows.tracking import summary
from gateway.core.workflows.tracking_view import may_see, sees_every_sender, tracked_message
from gateway.rpc.calls import (
    MAX_ECHOED_ID_CHARS,
    abort,
    authenticate,
    refusal_outcome,
    status,
    store_code,
)
from gateway.rpc.dependencies import Dependencies, log
from gateway.store.tracker import Tracker

# Messages in one ListPending answer when the request names no limit, and at most.
DEFAULT_PENDING_PAGE = 50
MAX_PENDING_PAGE = 500

# An audit entry of the call, by outcome and reason.
Fact = Callable[[audit_pb2.AuditOutcome.ValueType, str], audit_pb2.AuditEntry]

LIFECYCLES_OFF = (
    "this gateway tracks no acknowledgements: its lifecycles are off (gateway.enforce_lifecycles)"
)


def not_found(sender: str, event_id: str, plane: int) -> str:
    """The one refusal for a message that is not tracked and for one the caller may not see."""
    return f"no tracked message {sender}/{event_id} on the {plane_token(plane)} plane"


class TrackingServicer(gateway_pb2_grpc.TrackingServiceServicer):
    """Status of tracked messages, read from the deadline tracker (None: lifecycles are off)."""

    def __init__(self, deps: Dependencies, tracker: Tracker | None) -> None:
        self._deps = deps
        self._tracker = tracker

    async def GetStatus(
        self,
        request: gateway_pb2.GetStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.GetStatusResponse:
        principal = await authenticate(self._deps.authenticator, context, "GetStatus")
        sender = request.sender or principal.agency
        event_id = request.event_id[:MAX_ECHOED_ID_CHARS]
        plane = request.plane or event_pb2.PLANE_ACTUAL

        def fact(
            outcome: audit_pb2.AuditOutcome.ValueType,
            reason: str,
            event_type: str = "",
            answer: bytes = b"",
        ) -> audit_pb2.AuditEntry:
            return status_query_entry(
                principal.agency,
                outcome,
                sender=sender,
                event_id=event_id,
                event_type=event_type,
                reason=principal.noted(reason),
                answer_digest=self._deps.hashing.digest(answer) if answer else b"",
            )

        tracker = await self._admit(context, request, fact)
        try:
            tracked = await tracker.status(plane, sender, request.event_id)
        except StoreError as error:
            await self._refuse(
                context, store_code(error), f"reading the status failed: {error}", fact
            )
        except ValueError as error:  # an entry the tracker cannot read: ours to fix
            await self._refuse(context, grpc.StatusCode.DATA_LOSS, f"tracked entry: {error}", fact)
        missing = not_found(sender, event_id, plane)
        if tracked is None:
            await self._record(context, [fact(audit_pb2.AUDIT_OUTCOME_OK, "not tracked")])
            await abort(context, status(grpc.StatusCode.NOT_FOUND, missing))
        if not may_see(
            tracked.sender, principal.agency, self._deps.authorizer.held_roles(principal)
        ):
            refusal = f"{principal.agency} is neither the sender nor holds the command role"
            await self._record(
                context, [fact(audit_pb2.AUDIT_OUTCOME_DENIED, refusal, tracked.event_type)]
            )
            await abort(context, status(grpc.StatusCode.NOT_FOUND, missing))
        response = gateway_pb2.GetStatusResponse(message=tracked_message(tracked))
        answer = str(summary(tracked))
        await self._record(
            context,
            [
                fact(
                    audit_pb2.AUDIT_OUTCOME_OK,
                    answer,
                    tracked.event_type,
                    response.SerializeToString(),
                )
            ],
        )
        log.info("tracking.status", sender=sender, event_id=event_id, answer=answer)
        return response

    async def ListPending(
        self,
        request: gateway_pb2.ListPendingRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ListPendingResponse:
        principal = await authenticate(self._deps.authenticator, context, "ListPending")
        plane = request.plane or event_pb2.PLANE_ACTUAL
        every_sender = sees_every_sender(self._deps.authorizer.held_roles(principal))
        # An agency without the command role sees its own messages only: naming another sender
        # lists nothing (as for a sender with nothing pending).
        sender = request.sender if every_sender else principal.agency
        visible = every_sender or request.sender in ("", principal.agency)

        def fact(
            outcome: audit_pb2.AuditOutcome.ValueType, reason: str, answer: bytes = b""
        ) -> audit_pb2.AuditEntry:
            asked_about = request.sender or sender  # "" (every sender) for the command centre
            return status_query_entry(
                principal.agency,
                outcome,
                sender=asked_about,
                reason=principal.noted(reason),
                answer_digest=self._deps.hashing.digest(answer) if answer else b"",
            )

        tracker = await self._admit(context, request, fact)
        limit = min(request.limit or DEFAULT_PENDING_PAGE, MAX_PENDING_PAGE)
        response = gateway_pb2.ListPendingResponse()
        if visible:
            try:
                waiting = await tracker.pending(plane, sender=sender, limit=limit + 1)
            except StoreError as error:
                await self._refuse(
                    context,
                    store_code(error),
                    f"reading the pending messages failed: {error}",
                    fact,
                )
            response.messages.extend(tracked_message(tracked) for tracked in waiting[:limit])
            response.truncated = len(waiting) > limit
        listed = (
            f"{len(response.messages)} pending on the {plane_token(plane)} plane"
            f"{' (more not listed)' if response.truncated else ''}"
        )
        await self._record(
            context, [fact(audit_pb2.AUDIT_OUTCOME_OK, listed, response.SerializeToString())]
        )
        return response

    # --- shared ----------------------------------------------------------------------------

    async def _admit(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        request: Message,
        fact: Fact,
    ) -> Tracker:
        """The tracker, once the request is valid and the gateway tracks at all."""
        if problems := tuple(self._deps.validator.problems(request)):
            await self._refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, "invalid request", fact, problems
            )
        if self._tracker is None:
            await self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, LIFECYCLES_OFF, fact)
        return self._tracker

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        code: grpc.StatusCode,
        message: str,
        fact: Fact,
        problems: Sequence[FieldProblem] = (),
    ) -> NoReturn:
        await self._deps.record_best_effort([fact(refusal_outcome(code), message)])
        await abort(context, status(code, message, tuple(problems)))

    async def _record(
        self, context: grpc.aio.ServicerContext[Any, Any], entries: list[audit_pb2.AuditEntry]
    ) -> None:
        """Record before answering: an answer (or a NOT_FOUND) the log cannot hold is not given,
        whether the message exists or not, so an outage tells nothing either."""
        try:
            await self._deps.record(entries)
        except AuditUnavailableError as error:
            await abort(context, status(grpc.StatusCode.UNAVAILABLE, f"{error}; retry"))
