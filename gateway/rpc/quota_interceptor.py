"""The gRPC edge of gateway.core.quotas: every call but a health check is counted against its
agency's limits and the gateway's from the moment its handler starts until it ends (however it
ends: returned, failed, cancelled), and refused with RESOURCE_EXHAUSTED naming the limit when it
would pass one (the SDK retries that with backoff). The caller is authenticated here to learn
its agency; the servicers still authenticate (and refuse) it themselves.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from gateway.access.auth import Authenticator
from gateway.core.quotas import UNAUTHENTICATED, Claim, Quotas, Refusal
from gateway.rpc.calls import abort, status

log = structlog.get_logger("dutylink.gateway")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
SUBSCRIBE = "/dutylink.v1.SubscriberService/Subscribe"
PUBLISH = frozenset(
    {"/dutylink.v1.PublisherService/Publish", "/dutylink.v1.PublisherService/PublishBatch"}
)

OnRefused = Callable[[str, Refusal], None]


def _ignore(agency: str, refusal: Refusal) -> None:
    pass


def wrap_handler(
    handler: Any,
    unary: Callable[[Any], Any],
    stream: Callable[[Any], Any],
) -> Any:
    """`handler` with its behaviour wrapped: `unary` for calls that return (or write with
    context.write()), `stream` for async-generator handlers."""

    def streaming(behavior: Any) -> Any:
        return stream(behavior) if inspect.isasyncgenfunction(behavior) else unary(behavior)

    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, unary),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, unary),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, streaming),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, streaming),
    )
    for behavior, make, wrap in kinds:
        if behavior:
            return make(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class QuotaInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, quotas: Quotas, authenticator: Authenticator, on_refused: OnRefused = _ignore
    ) -> None:
        self._quotas = quotas
        self._authenticator = authenticator
        self._on_refused = on_refused

    def _agency(self, context: Any) -> str:
        try:
            return self._authenticator.authenticate(context).agency
        except Exception:  # UnauthenticatedError and worse: the servicer's own check answers
            return UNAUTHENTICATED

    async def _claim(self, method: str, request: Any, context: Any) -> Claim:
        agency = self._agency(context)
        publish_bytes = request.ByteSize() if method in PUBLISH and request is not None else 0
        claim = self._quotas.acquire(
            agency, subscription=method == SUBSCRIBE, publish_bytes=publish_bytes
        )
        if isinstance(claim, Refusal):
            log.warning("rpc.over_limit", agency=agency, method=method, limit=claim.limit)
            self._on_refused(agency, claim)
            await abort(context, status(grpc.StatusCode.RESOURCE_EXHAUSTED, claim.message))
        return claim

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler  # health is never counted, never refused
        quotas, claim_for = self._quotas, self._claim

        def unary(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> Any:
                claim = await claim_for(method, request, context)
                try:
                    return await behavior(request, context)
                finally:
                    quotas.release(claim)

            return wrapper

        def stream(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> AsyncIterator[Any]:
                claim = await claim_for(method, request, context)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    quotas.release(claim)

            return wrapper

        return wrap_handler(handler, unary, stream)
