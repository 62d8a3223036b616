"""What every gRPC servicer does the same way: authenticate the caller, and fail with a
google.rpc.Status that carries field-level details (so grpcurl and every client show them)."""

from __future__ import annotations

from typing import Any, NoReturn, cast

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.auth import Authenticator, Principal, UnauthenticatedError
from gateway.revocation import RevocationUnavailableError
from gateway.validation import FieldProblem

log = structlog.get_logger("dutylink.gateway")


def status(
    code: grpc.StatusCode, message: str, problems: tuple[FieldProblem, ...] = ()
) -> grpc.Status:
    details = []
    if problems:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=p.field, description=p.description, reason=p.rule_id
                    )
                    for p in problems
                ]
            )
        )
        details.append(detail)
    value = cast(int, code.value[0])
    return cast(
        grpc.Status,
        rpc_status.to_status(status_pb2.Status(code=value, message=message, details=details)),
    )


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
    structlog.contextvars.bind_contextvars(agency=principal.agency, rpc=rpc)
    return principal
