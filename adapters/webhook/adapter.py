"""The generic webhook adapter: a department's REST system POSTs signed JSON records to us, and
we POST signed JSON events to it. The reference, with examples, is adapters/webhook/README.md.

Long because it is both sides of one HTTP exchange, each with its options checked: an aiohttp
receiver that answers only once every record is settled, and a sender that retries with backoff,
honours Retry-After and keeps what the endpoint refuses for good.

    [options.inbound]                  # records in: POST <path> on <listen>
    listen = "127.0.0.1:8081"
    path = "/events"
    secret_file = "secrets/in.secret"  # the shared HMAC secret (required)

    [options.mapping]                  # record JSON -> event (dutylink.adapters.mapping.JsonMapping)
    system = "housing-bsr"
    id = "report_id"                   # the sender's own id: resends are duplicates
    ...

    [options.outbound]                 # events out: POST <url>
    subscription = "housing-incidents"
    families = ["incident"]
    url = "http://127.0.0.1:8090/dutylink/incidents"
    secret_file = "secrets/out.secret"

Inbound, a request is answered only after its records were published or refused, so a 200 means
every record is settled (published, duplicate, or kept in rejected/ with its reason) and a 503
means nothing was acknowledged: the sender retries, and the records' own ids make that safe.
Outbound, a delivery is retried with backoff while the department's endpoint fails for now, and
kept in rejected/ when the endpoint refuses it for good (a 4xx other than 408 and 429).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import stamina
import structlog
from aiohttp import web

from dutylink.adapters.framework import (
    AdapterKind,
    AdapterPlan,
    Outbound,
    Pipeline,
    PublishUnavailableError,
    Subscription,
)
from dutylink.adapters.mapping import JsonMapping, MappingOptions
from dutylink.adapters.options import AdapterConfigError, read
from dutylink.adapters.records import OutboundRecord, Record, RecordOutcome, Rejected
from dutylink.adapters.sdk.client import Retry
from dutylink.adapters.webhook.mapping import JSON, outbound_mapping
from dutylink.adapters.webhook.options import (
    InboundSettings,
    OutboundOptions,
    RetryOptions,
    Signature,
    WebhookOptions,
    field_paths,
    read_secrets,
)
from dutylink.adapters.webhook.signing import (
    ReplayGuard,
    ReplayGuardFullError,
    SignatureError,
    signed_headers,
    standard_headers,
    verify_request,
)

log = structlog.get_logger("dutylink.adapter")


# --- inbound ----------------------------------------------------------------------------------


def inbound_settings(values: dict[str, Any]) -> tuple[InboundSettings, tuple[bytes, ...]]:
    """[options.inbound] read and checked, and the secrets in force."""
    where = "[options.inbound]"
    settings = read(InboundSettings, values, where, terse=True)
    return settings, read_secrets(settings.secret_file, where)


class _BodyError(Exception):
    """The request body as a whole is not a JSON object or array (kept in rejected/)."""


def body_items(body: bytes) -> list[Any]:
    """The records of a request body: the object, or each element of the array."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise _BodyError(f"not JSON: {error}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    raise _BodyError("the body must be a JSON object or an array of JSON objects")


def _result(outcome: RecordOutcome) -> dict[str, Any]:
    if not outcome.ok:
        return {"rejected": outcome.rejected}
    return {
        "event_ids": [receipt.event_id for receipt in outcome.receipts],
        "duplicate": [receipt.duplicate for receipt in outcome.receipts],
    }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class WebhookSource:
    """Takes signed POSTs of JSON records and publishes them, answering only once they are
    settled. Listens on loopback unless told otherwise: TLS is a reverse proxy's job."""

    def __init__(self, settings: InboundSettings, secrets: tuple[bytes, ...]) -> None:
        self.settings = settings
        self._secrets = secrets
        self._replays = ReplayGuard(settings.tolerance_seconds, settings.replay_capacity)

    async def run(self, pipeline: Pipeline) -> None:
        settings = self.settings

        async def receive(request: web.Request) -> web.Response:
            return await self._receive(pipeline, request)

        # client_max_size makes aiohttp stop reading at the limit: an oversized body is never held.
        app = web.Application(client_max_size=settings.max_body_bytes)
        app.router.add_post(settings.path, receive)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.port).start()
            log.info("webhook.listening", host=settings.host, port=settings.port, path=settings.path)  # fmt: skip
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    def _unavailable(self, message: str) -> web.Response:
        headers = {"Retry-After": str(self.settings.retry_after_seconds)}
        return _error(503, message, headers)

    async def _receive(self, pipeline: Pipeline, request: web.Request) -> web.Response:
        settings = self.settings
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is larger than {settings.max_body_bytes} bytes")
        now = time.time()
        try:
            verified = verify_request(
                self._secrets, body, request.headers, now=now,
                tolerance=settings.tolerance_seconds,
                accept_legacy=settings.accept_legacy_signatures,
            )  # fmt: skip
        except SignatureError as error:
            log.warning("webhook.unauthenticated", remote=request.remote, reason=str(error))
            return _error(401, str(error))
        try:
            if not self._replays.admit(verified, now):
                log.warning("webhook.replayed", remote=request.remote, timestamp=verified.timestamp)  # fmt: skip
                return _error(401, "replayed: this signature was already used; sign again with the current time")  # fmt: skip
        except ReplayGuardFullError as error:
            log.warning("webhook.replay_guard_full", reason=str(error))
            return self._unavailable(f"too many requests for now ({error})")
        name = f"POST {settings.path}"
        origin = f"{name} from {request.remote} at {verified.timestamp}"
        try:
            records = [
                Record(
                    f"{name}#{i}",
                    json.dumps(item, ensure_ascii=False).encode(),
                    f"{origin} #{i}",
                    JSON,
                )
                for i, item in enumerate(body_items(body))
            ]
            whole: str | None = None
        except _BodyError as error:
            records, whole = [Record(name, body, origin, JSON, problem=str(error))], str(error)
        try:
            # The SDK retries for minutes; a sender waits seconds. On timeout some events may
            # be stored already: the resend finds them as duplicates.
            async with asyncio.timeout(settings.publish_timeout_seconds):
                outcomes = await pipeline.publish(records)
        except (PublishUnavailableError, TimeoutError) as error:
            self._replays.forget(verified)  # nothing acknowledged: the same request may come again
            log.warning("webhook.gateway_unavailable", records=len(records), reason=str(error) or "timed out")  # fmt: skip
            return self._unavailable("the exchange is unavailable; nothing was acknowledged: send the request again later")  # fmt: skip
        if whole is not None:
            return _error(400, whole)
        log.info("webhook.received", records=len(records), rejected=sum(not o.ok for o in outcomes))  # fmt: skip
        return web.json_response({"results": [_result(outcome) for outcome in outcomes]})


# --- outbound ---------------------------------------------------------------------------------


class WebhookDeliveryError(Exception):
    """The department's endpoint did not take the event for now (after the retries): the
    event is nacked and redelivered later."""


class _RetryableStatusError(WebhookDeliveryError):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if it has one."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


DEFAULT_RETRY = RetryOptions().retry()


@dataclass(frozen=True)
class OutboundSettings:
    url: str
    request_timeout_seconds: float = 10.0
    retry: Retry = DEFAULT_RETRY
    signature: Signature = "standard"


class WebhookSink:
    """POSTs one outbound record, signed, with its event id as the Idempotency-Key (and, with
    Standard Webhooks, as the webhook-id: the same on every retry)."""

    def __init__(self, settings: OutboundSettings, secrets: tuple[bytes, ...]) -> None:
        self.settings = settings
        self._secrets = secrets

    def _backoff(self, error: Exception) -> bool | float:
        if isinstance(error, _RetryableStatusError) and error.retry_after is not None:
            return min(error.retry_after, self.settings.retry.wait_max)  # the endpoint's wish
        return isinstance(error, (_RetryableStatusError, *_TRANSIENT))

    async def __call__(self, record: OutboundRecord) -> None:
        settings, retry = self.settings, self.settings.retry
        # A session per delivery: an Outbound has no close hook to end a shared one.
        timeout = aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            last = 0
            async for attempt in stamina.retry_context(
                on=self._backoff, attempts=retry.attempts, timeout=retry.timeout,
                wait_initial=retry.wait_initial, wait_max=retry.wait_max,
                wait_jitter=retry.wait_jitter,
            ):  # fmt: skip
                with attempt:
                    # Each attempt signed with a later timestamp than the one before, so that a
                    # receiver that remembers signatures does not take a retry for a replay.
                    last = max(int(time.time()), last + 1)
                    await self._post(session, record, last)

    async def _post(self, session: aiohttp.ClientSession, record: OutboundRecord, timestamp: int) -> None:  # fmt: skip
        url = self.settings.url
        signed = (
            standard_headers(self._secrets, record.name, timestamp, record.body)
            if self.settings.signature == "standard"
            else signed_headers(self._secrets[0], timestamp, record.body)
        )
        headers = {
            **signed,
            "Content-Type": record.content_type,
            "Idempotency-Key": record.name,
        }
        async with session.post(url, data=record.body, headers=headers, allow_redirects=False) as response:  # fmt: skip
            if 200 <= response.status < 300:
                log.info("webhook.delivered", event_id=record.name, status=response.status)
                return
            said = (await response.content.read(300)).decode("utf-8", "replace").strip()
            message = f"{url} answered {response.status} {response.reason or ''}".rstrip() + (f": {said}" if said else "")  # fmt: skip
            if response.status in (408, 429) or response.status >= 500:
                log.warning("webhook.delivery_failed", event_id=record.name, status=response.status)  # fmt: skip
                raise _RetryableStatusError(message, _retry_after(response.headers.get("Retry-After")))  # fmt: skip
            if 400 <= response.status < 500:
                raise Rejected(f"refused for good: {message}")
            # A redirect (not followed: the body is signed for this URL) means a wrong url.
            raise WebhookDeliveryError(message)


def outbound_side(values: dict[str, Any]) -> Outbound:
    """[options.outbound] read and checked: the subscription, the mapping and the sink."""
    where = "[options.outbound]"
    options = read(OutboundOptions, values, where, terse=True)
    fields = field_paths(options.fields, "[options.outbound.fields]")
    retry = read(RetryOptions, options.retry, "[options.outbound.retry]", terse=True)
    settings = OutboundSettings(
        url=options.url,
        request_timeout_seconds=options.request_timeout_seconds,
        retry=retry.retry(),
        signature=options.signature,
    )
    return Outbound(
        Subscription(
            options.subscription,
            families=options.families,
            types=options.types,
            jurisdiction_prefixes=options.jurisdiction_prefixes,
        ),
        outbound_mapping(fields, frozenset(options.ignore_sources)),
        WebhookSink(settings, read_secrets(options.secret_file, where)),
    )


# --- the adapter ------------------------------------------------------------------------------


def build(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    """Sources and outbound side from [options]; errors name the key. Reads the secret files
    here, so that a missing secret stops the adapter before it listens or subscribes."""
    options = read(WebhookOptions, values, terse=True)
    if not options.inbound and not options.outbound:
        raise AdapterConfigError("[options]: give [options.inbound] (with [options.mapping]), [options.outbound], or both")  # fmt: skip
    plan = AdapterPlan()
    if options.inbound:
        if not options.mapping:
            raise AdapterConfigError("[options.mapping]: required with [options.inbound]")
        plan.inbound = JsonMapping.from_options(options.mapping).to_events
        plan.sources.append(WebhookSource(*inbound_settings(options.inbound)))
    if options.outbound:
        plan.outbound.append(outbound_side(options.outbound))
    return plan


KIND = AdapterKind(
    name="webhook",
    description="JSON over HTTP: signed POSTs of records in, signed POSTs of events out",
    build=build,
    tables=(
        ("options", WebhookOptions),
        ("options.inbound", InboundSettings),
        ("options.mapping", MappingOptions),
        ("options.outbound", OutboundOptions),
        ("options.outbound.retry", RetryOptions),
    ),
)
