"""BoardService: the duty board (gateway.core.projections.board) as the asking agency may see it.

Each answer is folded from the events the caller's policy lets it receive, redacted as a
delivery to it would be (its own events as it sent them), so nothing the policy withholds is on
its board. An incident it may see nothing of is NOT_FOUND in the same words as one that does
not exist. Every answer is recorded in the audit log before it is given (no record, no answer).

The resource ledger (GetLedger) is read from the key-value bucket the ledger guard writes: the
caller's own, or any agency's for the command centre (TrackingService's rule, `may_see`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from dutylink.catalogue import Catalogue
from dutylink.policies.redaction import redact
from dutylink.v1 import audit_pb2, board_pb2, board_pb2_grpc, event_pb2
from gateway.access.auth import Principal
from gateway.access.authorization import Authorizer, FixedPolicy
from gateway.audit.entries import board_query_entry
from gateway.audit.log import AuditUnavailableError
from gateway.core.kv import TooManyKeysError
from gateway.core.ports import StoreError
from gateway.core.projections.board import (
    IncidentKey,
    Visible,
    board_view,
    incident_view,
)
from gateway.core.projections.board_wire import board_incident
from gateway.core.projections.ledger_wire import ledger_page
from gateway.core.validation import FieldProblem
from gateway.core.workflows.base import plane_token
from gateway.core.workflows.tracking_view import may_see, sees_every_sender
from gateway.rpc.board_recipients import (
    RecipientsJudge,
    acknowledgements,
    shown_to,
    tracked_statuses,
)
from gateway.rpc.calls import (
    MAX_ECHOED_ID_CHARS,
    abort,
    authenticate,
    refusal_outcome,
    status,
    store_code,
)
from gateway.rpc.dependencies import Dependencies, log
from gateway.store.board_feed import BoardFeed
from gateway.store.ledger_reader import LedgerReader
from gateway.store.policy_archive import PolicyArchive
from gateway.store.tracker import Tracker

DEFAULT_BOARD_PAGE = 50
MAX_BOARD_PAGE = 500
DEFAULT_LEDGER_PAGE = 200
MAX_LEDGER_PAGE = 1000
LEDGER_OFF = "the resource ledger is not kept on this gateway (gateway.enforce_lifecycles is off)"


def visible_to(authorizer: Authorizer, principal: Principal, now: datetime) -> Visible:
    """What `principal` is shown of an event: what a delivery to it would carry (None: the
    policy withholds the event), or its own event as it sent it."""

    def visible(event: event_pb2.Event) -> event_pb2.Event | None:
        if event.source == principal.agency:
            return event
        decision = authorizer.decide(principal, "receive", event, now)
        return redact(event, decision.redacted_fields)[0] if decision.allowed else None

    return visible


class BoardServicer(board_pb2_grpc.BoardServiceServicer):
    def __init__(
        self,
        deps: Dependencies,
        feed: BoardFeed,
        catalogue: Catalogue,
        archive: Callable[[], PolicyArchive | None],
        tracker: Tracker | None,
        ledger: LedgerReader | None = None,
    ) -> None:
        self._deps = deps
        self._feed = feed
        self._catalogue = catalogue
        self._archive = archive  # none until the store is connected
        self._tracker = tracker  # none without lifecycles: no acknowledgements to show
        self._ledger = ledger  # none without lifecycles: no ledger kept
        self._recipients = RecipientsJudge(deps.config.agencies)

    async def _seen_as_of(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        principal: Principal,
        request: board_pb2.GetIncidentRequest | board_pb2.GetBoardRequest,
    ) -> tuple[Visible, datetime, datetime | None, str, Authorizer]:
        """How the caller sees events, the moment to judge deadlines at, the as-of moment
        (None: now), a note for the audit entry and the authorizer of that moment. As of a past
        moment: under the policy in force then, with the grants valid then."""
        now = self._deps.clock()
        if not request.HasField("as_of"):
            authorizer = self._deps.authorizer
            return visible_to(authorizer, principal, now), now, None, "", authorizer
        as_of = request.as_of.ToDatetime(tzinfo=UTC)
        if as_of > now:
            problem = FieldProblem("as_of", "as_of is in the future", "board.as_of_future")
            await self._refuse(context, principal, (problem,))
        archive = self._archive()
        try:
            policy = await archive.in_force_at(as_of) if archive is not None else None
        except StoreError as error:
            await abort(context, status(store_code(error), f"reading past policies: {error}"))
        if policy is None:
            message = f"no policy on record at {as_of.isoformat()}: nothing to replay"
            await self._record(context, principal, message)
            await abort(context, status(grpc.StatusCode.FAILED_PRECONDITION, message))
        then = Authorizer(FixedPolicy(policy), self._deps.authorizer.grants)
        note = f" as of {as_of.isoformat()} under policy {policy.version[:12]}"
        return visible_to(then, principal, as_of), as_of, as_of, note, then

    async def GetIncident(
        self, request: board_pb2.GetIncidentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> board_pb2.GetIncidentResponse:
        principal = await self._admit(context, request, "GetIncident")
        visible, now, as_of, note, moment = await self._seen_as_of(context, principal, request)
        plane = request.plane or event_pb2.PLANE_ACTUAL
        key = IncidentKey(plane, request.incident_id)
        view = incident_view(self._catalogue, self._feed.board, key, visible, now, as_of=as_of)
        stored = {s.sequence: s.event for s in self._feed.board.timeline(key)}  # before any await
        shown = request.incident_id[:MAX_ECHOED_ID_CHARS]
        if view is None:
            missing = f"no incident {shown} on the {plane_token(plane)} plane"
            await self._record(context, principal, f"incident {shown}{note}: not found", [shown])
            await abort(context, status(grpc.StatusCode.NOT_FOUND, missing))
        told = shown_to(moment, principal)  # its roles at the moment asked about
        try:
            # The tracker's entries say how things stand now: not part of a replay.
            tracked = await tracked_statuses(self._tracker, view, told) if as_of is None else {}
            recipients = await self._recipients.lines(
                self._archive(), moment, view, stored, told, tracked
            )
        except StoreError as error:
            message = f"reading the tracker or the policy archive: {error}"
            await abort(context, status(store_code(error), message))
        response = board_pb2.GetIncidentResponse(
            incident=board_incident(view, now, with_timeline=True, recipients=recipients)
        )
        response.incident.acknowledgements.extend(acknowledgements(tracked))
        await self._record(
            context,
            principal,
            f"incident {shown}{note}: {len(view.timeline)} events",
            [request.incident_id],
            response,
        )
        return response

    async def GetBoard(
        self, request: board_pb2.GetBoardRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> board_pb2.GetBoardResponse:
        principal = await self._admit(context, request, "GetBoard")
        visible, now, as_of, note, _ = await self._seen_as_of(context, principal, request)
        plane = request.plane or event_pb2.PLANE_ACTUAL
        limit = min(request.limit or DEFAULT_BOARD_PAGE, MAX_BOARD_PAGE)
        views = board_view(
            self._catalogue,
            self._feed.board,
            plane,
            request.jurisdiction_prefix,
            visible,
            now,
            include_finished=request.include_finished,
            as_of=as_of,
        )
        response = board_pb2.GetBoardResponse(
            incidents=[board_incident(view, now, with_timeline=False) for view in views[:limit]],
            truncated=len(views) > limit,
        )
        where = request.jurisdiction_prefix or "every jurisdiction"
        await self._record(
            context,
            principal,
            f"board of {where} on the {plane_token(plane)} plane{note}: "
            f"{len(response.incidents)} incidents{' (more not sent)' if response.truncated else ''}",
            [incident.incident_id for incident in response.incidents],
            response,
        )
        return response

    async def WatchBoard(
        self, request: board_pb2.WatchBoardRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[board_pb2.WatchBoardResponse]:
        principal = await self._admit(context, request, "WatchBoard")
        plane = request.plane or event_pb2.PLANE_ACTUAL
        where = request.jurisdiction_prefix or "every jurisdiction"
        await self._record(
            context, principal, f"watch of {where} on the {plane_token(plane)} plane"
        )
        async for key in self._feed.changes():
            if key.plane != plane or self._deps.stopping.is_set():
                continue
            now = self._deps.clock()
            visible = visible_to(self._deps.authorizer, principal, now)
            view = incident_view(self._catalogue, self._feed.board, key, visible, now)
            if view is None or not view.division_code.startswith(request.jurisdiction_prefix):
                continue
            change = board_pb2.WatchBoardResponse(
                incident=board_incident(view, now, with_timeline=False)
            )
            await self._record(
                context,
                principal,
                f"watch of {where}: incident {key.incident_id[:MAX_ECHOED_ID_CHARS]} changed",
                [key.incident_id],
                change,
            )
            yield change

    async def GetLedger(
        self, request: board_pb2.GetLedgerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> board_pb2.GetLedgerResponse:
        principal = await self._admit(context, request, "GetLedger")
        agency = request.agency or principal.agency
        plane = request.plane or event_pb2.PLANE_ACTUAL
        asked = f"ledger of {agency} on the {plane_token(plane)} plane"
        roles = self._deps.authorizer.held_roles(principal)
        if not may_see(agency, principal.agency, roles):
            refusal = (
                f"{asked}: {principal.agency} may read only its own ledger "
                "(every agency's needs the command role)"
            )
            await self._record(context, principal, refusal, outcome=audit_pb2.AUDIT_OUTCOME_DENIED)
            await abort(context, status(grpc.StatusCode.PERMISSION_DENIED, refusal))
        if self._ledger is None:
            off = f"{asked}: {LEDGER_OFF}"
            await self._refuse_with(context, principal, grpc.StatusCode.FAILED_PRECONDITION, off)
        try:
            lines = await self._ledger.agency_lines(plane, agency)
        except TooManyKeysError as error:
            too_many = f"{asked}: {error} (raise ledger.max_items)"
            await self._refuse_with(
                context, principal, grpc.StatusCode.FAILED_PRECONDITION, too_many
            )
        except StoreError as error:
            failed = f"{asked}: reading the ledger failed: {error}"
            await self._refuse_with(context, principal, store_code(error), failed)
        limit = min(request.limit or DEFAULT_LEDGER_PAGE, MAX_LEDGER_PAGE)
        items, truncated = ledger_page(lines, item_prefix=request.item_prefix, limit=limit)
        response = board_pb2.GetLedgerResponse(
            agency=agency,
            plane=plane,
            items=items,
            truncated=truncated,
            every_agency=sees_every_sender(roles),
        )
        chosen = f" starting {request.item_prefix!r}" if request.item_prefix else ""
        more = " (more not sent)" if truncated else ""
        reason = f"{asked}: {len(items)} items{chosen}{more}"
        await self._record(context, principal, reason, answer=response)
        return response

    # --- shared ----------------------------------------------------------------------------

    async def _admit(
        self, context: grpc.aio.ServicerContext[Any, Any], request: Message, method: str
    ) -> Principal:
        principal = await authenticate(self._deps.authenticator, context, method)
        if problems := tuple(self._deps.validator.problems(request)):
            await self._refuse(context, principal, problems)
        return principal

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        principal: Principal,
        problems: Sequence[FieldProblem],
    ) -> NoReturn:
        entry = board_query_entry(
            principal.agency,
            audit_pb2.AUDIT_OUTCOME_INVALID,
            reason=principal.noted("invalid request"),
        )
        await self._deps.record_best_effort([entry])
        await abort(
            context, status(grpc.StatusCode.INVALID_ARGUMENT, "invalid request", tuple(problems))
        )

    async def _refuse_with(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        principal: Principal,
        code: grpc.StatusCode,
        message: str,
    ) -> NoReturn:
        """A refusal that is not the caller's fault, recorded as well as the log can."""
        entry = board_query_entry(
            principal.agency, refusal_outcome(code), reason=principal.noted(message)
        )
        await self._deps.record_best_effort([entry])
        await abort(context, status(code, message))

    async def _record(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        principal: Principal,
        reason: str,
        incidents: Sequence[str] = (),
        answer: Message | None = None,
        outcome: audit_pb2.AuditOutcome.ValueType = audit_pb2.AUDIT_OUTCOME_OK,
    ) -> None:
        """Record before answering: an answer the log cannot hold is not given."""
        entry = board_query_entry(
            principal.agency,
            outcome,
            reason=principal.noted(reason),
            incidents=incidents,
            answer_digest=self._deps.hashing.digest(answer.SerializeToString())
            if answer is not None
            else b"",
        )
        try:
            await self._deps.record([entry])
        except AuditUnavailableError as error:
            await abort(context, status(grpc.StatusCode.UNAVAILABLE, f"{error}; retry"))
        log.info("board.answered", agency=principal.agency, reason=reason)
