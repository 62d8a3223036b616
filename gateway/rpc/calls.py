"""What every gRPC servicer does the same way: authenticate the caller, fail with a
google.rpc.Status that carries field-level details and the aggregate states that refuse an
event (so grpcurl and every client show them), and answer a request that cannot be decoded
(`DecodeGuard`)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import grpc
import structlog
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dutylink.v1 import audit_pb2, gateway_pb2
from gateway.access.auth import Authenticator, Principal, UnauthenticatedError, relay_refusal
from gateway.access.revocation import RevocationUnavailableError
from gateway.audit.entries import gateway_entry
from gateway.core.admission import RefusalKind, StateProblem
from gateway.core.crypto import HashSuite
from gateway.core.facts import AuditSink
from gateway.core.ports import StoreError, StoreFullError, StoreRejectedError, StoreUnavailableError
from gateway.core.validation import FieldProblem, cut

log = structlog.get_logger("dutylink.gateway")

# A status travels in response metadata: grpc-message, and the details base64-encoded in
# grpc-status-details-bin. Clients refuse metadata past 8 KiB (soft; 16 KiB hard) and report
# RESOURCE_EXHAUSTED, which SDKs retry: these keep one status well inside it.
MAX_STATUS_MESSAGE_CHARS = 1024
MAX_STATUS_DETAIL_BYTES = 4096
# An event id echoed back (a batch result, a log line) is never longer than a valid one (Event.id).
MAX_ECHOED_ID_CHARS = 128


def shorten(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    note = f"… ({len(text) - limit} more characters cut)"
    return text[: max(0, limit - len(note))] + note


def fit_problems(problems: Sequence[FieldProblem], max_bytes: int) -> tuple[FieldProblem, ...]:
    """As many of `problems` as fit in about `max_bytes` encoded (each field and description
    shortened), then one that says how many more were cut."""
    quota = max(64, max_bytes // 8)  # one problem's share of the text, at least
    shortened = [
        FieldProblem(shorten(p.field, quota), shorten(p.description, quota), p.rule_id[:128])
        for p in problems
    ]
    used, keep = 0, 0
    for problem in shortened:
        used += len(problem.field.encode()) + len(problem.description.encode())
        used += len(problem.rule_id) + 16  # tags and lengths
        if used > max_bytes - 96:  # room for the "and N more were cut" problem
            break
        keep += 1
    return cut(shortened, keep) if keep < len(shortened) else tuple(shortened)


# One state refusal's texts at most (an aggregate key, a state, a reason, an allowed
# transition), before the whole is fitted to the room left.
MAX_STATE_TEXT_CHARS = 256
MAX_STATE_REASON_CHARS = 512
# A detail's tags, lengths and Any type URL around its message.
ANY_OVERHEAD_BYTES = 64
# What a PreconditionFailure violation's type is when refusals were left out.
STATE_REFUSALS_CUT = "cut"


def _state_refusal(problem: StateProblem, max_bytes: int) -> gateway_pb2.StateRefusal:
    """`problem` as sent, its texts shortened and its allowed list cut to about `max_bytes`."""
    refusal = gateway_pb2.StateRefusal(
        aggregate=shorten(problem.aggregate, MAX_STATE_TEXT_CHARS),
        state=shorten(problem.state, MAX_STATE_TEXT_CHARS),
        version=max(0, problem.version),
        reason=shorten(problem.reason, MAX_STATE_REASON_CHARS),
    )
    used = refusal.ByteSize() + 8  # room for allowed_cut
    for index, allowed in enumerate(problem.allowed):
        text = shorten(allowed, MAX_STATE_TEXT_CHARS)
        used += len(text.encode()) + 3  # tag and length
        if used > max_bytes:
            refusal.allowed_cut = len(problem.allowed) - index
            break
        refusal.allowed.append(text)
    return refusal


def fit_state_refusals(
    problems: Sequence[StateProblem], max_bytes: int
) -> tuple[list[gateway_pb2.StateRefusal], int]:
    """As many of `problems` as fit in about `max_bytes` encoded, as StateRefusals (each one's
    texts shortened and allowed list cut to its share), and how many were left out."""
    share = max(256, max_bytes // max(1, len(problems)))
    refusals: list[gateway_pb2.StateRefusal] = []
    used = 0
    for problem in problems:
        refusal = _state_refusal(problem, share)
        used += refusal.ByteSize() + ANY_OVERHEAD_BYTES
        if used > max_bytes:
            break
        refusals.append(refusal)
    return refusals, len(problems) - len(refusals)


def lifecycle_of(aggregate: str) -> str:
    """The lifecycle (or "ledger") an aggregate key names first ("incident/actual/INC-1")."""
    return aggregate.partition("/")[0]


def precondition_failure(
    refusals: Sequence[gateway_pb2.StateRefusal], left_out: int
) -> error_details_pb2.PreconditionFailure:
    """google.rpc's view of the refusals: one violation per aggregate, and one that counts
    those left out."""
    failure = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=lifecycle_of(r.aggregate), subject=r.aggregate, description=r.reason
            )
            for r in refusals
        ]
    )
    if left_out:
        failure.violations.add(type=STATE_REFUSALS_CUT, description=f"and {left_out} more were cut")
    return failure


# Refusal kinds of the pure core, as the caller and the audit log see them: the one place
# a refusal becomes a gRPC status code and an audit outcome.
REFUSAL_CODES: dict[RefusalKind, grpc.StatusCode] = {
    RefusalKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    RefusalKind.DENIED: grpc.StatusCode.PERMISSION_DENIED,
    RefusalKind.ILLEGAL_TRANSITION: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalKind.CONFLICT: grpc.StatusCode.ABORTED,
    RefusalKind.FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RefusalKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
REFUSAL_OUTCOMES: dict[RefusalKind, audit_pb2.AuditOutcome.ValueType] = {
    RefusalKind.INVALID: audit_pb2.AUDIT_OUTCOME_INVALID,
    RefusalKind.DENIED: audit_pb2.AUDIT_OUTCOME_DENIED,
    RefusalKind.ILLEGAL_TRANSITION: audit_pb2.AUDIT_OUTCOME_DENIED,
    RefusalKind.CONFLICT: audit_pb2.AUDIT_OUTCOME_CONFLICT,
    RefusalKind.FULL: audit_pb2.AUDIT_OUTCOME_FAILED,
    RefusalKind.UNAVAILABLE: audit_pb2.AUDIT_OUTCOME_FAILED,
}


def refusal_outcome(code: grpc.StatusCode) -> audit_pb2.AuditOutcome.ValueType:
    """The audit outcome of a call refused with `code`: the caller's bad request is INVALID,
    a refused permission DENIED; anything else FAILED (the server's or the store's fault)."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return audit_pb2.AUDIT_OUTCOME_INVALID
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return audit_pb2.AUDIT_OUTCOME_DENIED
    return audit_pb2.AUDIT_OUTCOME_FAILED


def status(
    code: grpc.StatusCode,
    message: str,
    problems: tuple[FieldProblem, ...] = (),
    state_problems: tuple[StateProblem, ...] = (),
    standard: Sequence[Message] = (),
) -> grpc.Status:
    """A status with its details: a BadRequest for `problems`; a PreconditionFailure and one
    StateRefusal each for `state_problems`, together within MAX_STATUS_DETAIL_BYTES (shared
    equally when there are both); then `standard` (a refused publish's ErrorInfo and RetryInfo,
    gateway.rpc.error_model)."""
    details: list[any_pb2.Any] = []
    room = MAX_STATUS_DETAIL_BYTES
    if problems:
        fitted = fit_problems(problems, room // 2 if state_problems else room)
        details.append(packed(error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=p.field, description=p.description, reason=p.rule_id
                )
                for p in fitted
            ]
        )))  # fmt: skip
        room -= details[-1].ByteSize()
    if state_problems:
        # Each refusal travels twice (google.rpc's view and ours): half the room each.
        refusals, left_out = fit_state_refusals(state_problems, max(0, room) // 2)
        details.append(packed(precondition_failure(refusals, left_out)))
        details.extend(packed(refusal) for refusal in refusals)
    details.extend(packed(detail) for detail in standard)
    value = code.value[0]
    message = shorten(message, MAX_STATUS_MESSAGE_CHARS)
    return rpc_status.to_status(status_pb2.Status(code=value, message=message, details=details))


def packed(message: Message) -> any_pb2.Any:
    """`message` as a status detail (google.protobuf.Any)."""
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


async def abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> NoReturn:
    # abort_with_status is missing from the aio context's type stubs (grpc/grpc#42733).
    await cast(Any, context).abort_with_status(status)
    raise AssertionError("unreachable: abort_with_status raises")


async def authenticate(
    authenticator: Authenticator, context: grpc.aio.ServicerContext[Any, Any], rpc: str
) -> Principal:
    try:
        principal = authenticator.authenticate(context)
    except UnauthenticatedError as error:
        log.warning("rpc.unauthenticated", rpc=rpc, reason=str(error))
        await abort(context, status(grpc.StatusCode.UNAUTHENTICATED, str(error)))
    except RevocationUnavailableError as error:
        # Not the caller's fault, and over once a current CRL is in place: retryable.
        log.warning("rpc.revocation_unavailable", rpc=rpc, reason=str(error))
        await abort(context, status(grpc.StatusCode.UNAVAILABLE, str(error)))
    if principal.through:
        structlog.contextvars.bind_contextvars(through=principal.through)
    if principal.via:
        structlog.contextvars.bind_contextvars(via=principal.via)
        if reason := relay_refusal(principal, rpc):
            log.warning("rpc.relay_refused", rpc=rpc, agency=principal.agency, reason=reason)
            await abort(context, status(grpc.StatusCode.PERMISSION_DENIED, reason))
    structlog.contextvars.bind_contextvars(agency=principal.agency, rpc=rpc)
    return principal


@dataclass(frozen=True)
class Undecodable:
    """What a servicer is handed in place of a request message that could not be decoded: the
    bytes' digest and size (never the bytes), and why."""

    digest: bytes
    size: int
    reason: str


def tolerant(deserializer: Callable[[bytes], Any], hashing: HashSuite) -> Callable[[bytes], Any]:
    """`deserializer` that cannot raise: an `Undecodable` instead of an error (which gRPC would
    answer with UNKNOWN), and messages without their unknown fields (no rule was written for
    them, so they never pass the door)."""

    def decode(data: bytes) -> Any:
        try:
            message = deserializer(data)
        except Exception as error:  # DecodeError, and whatever else corrupt bytes make it raise
            return Undecodable(hashing.digest(data), len(data), type(error).__name__)
        if isinstance(message, Message):
            message.DiscardUnknownFields()
        return message

    return decode


# The audit action of a refused request, by service; other services' refusals have none.
_ACTIONS = {
    "dutylink.v1.PublisherService": audit_pb2.AUDIT_ACTION_PUBLISH,
    "dutylink.v1.SubscriberService": audit_pb2.AUDIT_ACTION_SUBSCRIBE,
    "dutylink.v1.BreakGlassService": audit_pb2.AUDIT_ACTION_BREAK_GLASS,
    "dutylink.v1.TrackingService": audit_pb2.AUDIT_ACTION_STATUS_QUERY,
    "dutylink.v1.BoardService": audit_pb2.AUDIT_ACTION_BOARD_QUERY,
}


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Every request message of every service is decoded by `tolerant`; one that could not be
    is answered INVALID_ARGUMENT and the refusal audited in `sink` (the bytes' digest, the
    caller's agency when the call authenticates), before the servicer sees anything."""

    def __init__(self, authenticator: Authenticator, sink: AuditSink, hashing: HashSuite) -> None:
        self._authenticator = authenticator
        self._sink = sink
        self._hashing = hashing  # the audit log's: of the refused bytes, as its entries keep

    async def refuse(
        self, method: str, request: Undecodable, context: grpc.aio.ServicerContext[Any, Any]
    ) -> NoReturn:
        try:
            agency = self._authenticator.authenticate(context).agency
        except UnauthenticatedError:
            agency = ""
        message = f"the request could not be decoded ({request.size} bytes, {request.reason})"
        service = method.lstrip("/").split("/", 1)[0]
        entry = gateway_entry(
            _ACTIONS.get(service, audit_pb2.AUDIT_ACTION_UNSPECIFIED),
            audit_pb2.AUDIT_OUTCOME_INVALID,
            actor=agency,
            reason=f"{method}: {message}",
        )
        entry.event_digest = request.digest  # of the request's bytes
        log.info("rpc.undecodable", method=method, agency=agency, size=request.size)
        await self._sink.record_best_effort([entry])
        problem = FieldProblem("", message, "request.decode")
        await abort(context, status(grpc.StatusCode.INVALID_ARGUMENT, message, (problem,)))

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = str(handler_call_details.method)
        decode = tolerant(handler.request_deserializer, self._hashing)
        if handler.request_streaming:
            kind = "stream_stream" if handler.response_streaming else "stream_unary"
            behavior = self._streaming(method, getattr(handler, kind))
        else:
            kind = "unary_stream" if handler.response_streaming else "unary_unary"
            behavior = self._unary(method, getattr(handler, kind))
        return handler._replace(request_deserializer=decode, **{kind: behavior})

    def _unary(self, method: str, behavior: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
                if isinstance(request, Undecodable):
                    await self.refuse(method, request, context)
                async for response in behavior(request, context):
                    yield response

            return generate

        async def answer(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                await self.refuse(method, request, context)
            return await behavior(request, context)

        return answer

    def _streaming(self, method: str, behavior: Any) -> Any:
        def guarded(requests: AsyncIterator[Any], context: Any) -> tuple[Any, Any]:
            return _checked(self, method, requests, context), _GuardedContext(self, method, context)

        if inspect.isasyncgenfunction(behavior):

            async def generate(requests: Any, context: Any) -> AsyncIterator[Any]:
                async for response in behavior(*guarded(requests, context)):
                    yield response

            return generate

        async def answer(requests: Any, context: Any) -> Any:
            return await behavior(*guarded(requests, context))

        return answer


async def _checked(
    guard: DecodeGuard, method: str, requests: AsyncIterator[Any], context: Any
) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await guard.refuse(method, request, context)
        yield request


class _GuardedContext:
    """A servicer context whose read() refuses an undecodable message (a streaming servicer
    may read with it rather than iterate)."""

    def __init__(self, guard: DecodeGuard, method: str, context: Any) -> None:
        self._guard = guard
        self._method = method
        self._context = context

    async def read(self) -> Any:
        request = await self._context.read()
        if isinstance(request, Undecodable):
            await self._guard.refuse(self._method, request, self._context)
        return request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def store_code(error: StoreError) -> grpc.StatusCode:
    if isinstance(error, StoreFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, StoreRejectedError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.UNAVAILABLE


def store_message(error: StoreError) -> str:
    if isinstance(error, StoreUnavailableError):
        return f"{error}; retry with the same event id"
    return str(error)
