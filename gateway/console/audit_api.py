"""The auditor pages' JSON API: audit entries, an entry's inclusion proof, signed checkpoints,
the logs there are, and one incident's evidence bundle, each asked of the gateway with the
session's token (so the gateway decides who is an auditor: others get its PERMISSION_DENIED as a
403). The console relays bytes only: entry bytes, proof hashes and signed notes go to the page as
base64 and text, and the page verifies them itself (static/verify.js); nothing here vouches for
them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import timestamp_pb2

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_service_pb2
from gateway.audit.note import NoteError, Verifier
from gateway.console.api import as_dict
from gateway.console.audit_bundle import BundleRefused, incident_bundle
from gateway.console.audit_queries import (
    EntriesQuery,
    entries_query,
    gateway_of,
    key_of,
    number_of,
)
from gateway.console.queries import BadQuery, http_status, incident_id_of
from gateway.console.state import SETTINGS, credential_of

PAGE_SIZE = 50  # entries a page shows
MAX_CALLS = 5  # ListEntries calls to fill one page when little matches (each scans 10 000)
DISCOVERY_QUIET_SECONDS = 0.5  # WatchCheckpoints sends the stored ones at once, then waits
MAX_LOGS = 64

Handler = Callable[[DutyLinkClient], Awaitable[web.StreamResponse]]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _with_client(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Runs `handler` with a client acting as the session's agency; the gateway's refusals
    become HTTP statuses with the gateway's own words."""
    try:
        async with request.app[SETTINGS].connect(credential_of(request)) as client:
            return await handler(client)
    except grpc.aio.AioRpcError as error:
        code = error.code()
        return _error(http_status(code), f"{code.name}: {error.details() or ''}".rstrip(": "))


def signed_checkpoint(signed: audit_service_pb2.SignedCheckpoint) -> dict[str, Any]:
    return {
        "gateway_id": signed.gateway_id,
        "note": signed.note,
        "tree_size": signed.tree_size,
        "root_hash": _b64(signed.root_hash),
    }


def stored_entry(stored: audit_service_pb2.StoredEntry) -> dict[str, Any]:
    return {"index": stored.index, "data": _b64(stored.data), "entry": as_dict(stored.entry)}


def _timestamp(query: EntriesQuery, name: str) -> timestamp_pb2.Timestamp | None:
    moment = getattr(query, name)
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _list_request(query: EntriesQuery, start: int) -> audit_service_pb2.ListEntriesRequest:
    return audit_service_pb2.ListEntriesRequest(
        gateway_id=query.gateway_id,
        start_index=start,
        since=_timestamp(query, "since"),
        until=_timestamp(query, "until"),
        agency=query.agency,
        event_id=query.event_id,
        actions=query.actions,
        # ListEntries has no incident filter: that one is applied here, so ask for full pages.
        page_size=1000 if query.incident_id else PAGE_SIZE,
    )


async def entries(request: web.Request) -> web.StreamResponse:
    """GET /api/audit/entries?gateway=&agency=&event=&incident=&action=&from=&to=&start=
    -> {"entries": [{index, data, entry}], "next_index", "log_size", "more"}."""
    try:
        query = entries_query(request.query, request.app[SETTINGS].zone)
    except BadQuery as error:
        return _error(400, str(error))

    async def read(client: DutyLinkClient) -> web.StreamResponse:
        found: list[dict[str, Any]] = []
        start, size = query.start, 0
        for _ in range(MAX_CALLS):
            page = await client.audit_entries(_list_request(query, start))
            size, resume = page.log_size, page.next_index
            for stored in filter(lambda s: _wanted(query, s), page.entries):
                if len(found) == PAGE_SIZE:
                    resume = stored.index  # the next page starts with the first not shown
                    break
                found.append(stored_entry(stored))
            progressed, start = resume > start, resume
            if len(found) == PAGE_SIZE or start >= size or not progressed:
                break
        answer = {"entries": found, "next_index": start, "log_size": size, "more": start < size}
        return web.json_response(answer)

    return await _with_client(request, read)


def _wanted(query: EntriesQuery, stored: audit_service_pb2.StoredEntry) -> bool:
    return not query.incident_id or query.incident_id in stored.entry.incident_ids


async def proof(request: web.Request) -> web.StreamResponse:
    """GET /api/audit/proof?gateway=&index= -> the entry's bytes, its inclusion proof and the
    latest signed checkpoint it is proved against."""
    try:
        gateway_id, index = gateway_of(request.query), number_of(request.query, "index")
    except BadQuery as error:
        return _error(400, str(error))

    async def read(client: DutyLinkClient) -> web.StreamResponse:
        answer = await client.inclusion_proof(gateway_id, index)
        return web.json_response(
            {
                "index": answer.entry.index,
                "data": _b64(answer.entry.data),
                "tree_size": answer.tree_size,
                "proof": [_b64(node) for node in answer.proof],
                "checkpoint": signed_checkpoint(answer.checkpoint),
            }
        )

    return await _with_client(request, read)


async def checkpoint(request: web.Request) -> web.StreamResponse:
    """GET /api/audit/checkpoint?gateway= -> the log's latest signed checkpoint (any agency)."""
    try:
        gateway_id = gateway_of(request.query)
    except BadQuery as error:
        return _error(400, str(error))

    async def read(client: DutyLinkClient) -> web.StreamResponse:
        return web.json_response(signed_checkpoint(await client.checkpoint(gateway_id)))

    return await _with_client(request, read)


async def logs(request: web.Request) -> web.StreamResponse:
    """GET /api/audit/logs -> {"gateways": [...], "keys": {gateway id: configured key}}.

    There is no RPC listing the logs; WatchCheckpoints starts with the latest checkpoint of
    every log there is, so the ids that arrive before it goes quiet are the logs."""

    async def read(client: DutyLinkClient) -> web.StreamResponse:
        found: list[str] = []
        stream = client.watch_checkpoints()
        try:
            while len(found) < MAX_LOGS:
                signed = await asyncio.wait_for(anext(stream), DISCOVERY_QUIET_SECONDS)
                if signed.gateway_id not in found:
                    found.append(signed.gateway_id)
        except (TimeoutError, StopAsyncIteration):
            pass
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        keys = dict(request.app[SETTINGS].audit_keys)
        return web.json_response({"gateways": sorted(found), "keys": keys})

    return await _with_client(request, read)


async def bundle(request: web.Request) -> web.StreamResponse:
    """GET /api/audit/bundle?incident=&gateway=&key= -> the incident's evidence bundle as a
    tar.gz download, checked with `key` (the page's), else the one configured for the log."""
    try:
        incident_id = incident_id_of(request.query.get("incident", ""))
        gateway_id, key = gateway_of(request.query), key_of(request.query)
        key = key or request.app[SETTINGS].audit_key(gateway_id)
        if not key:
            raise BadQuery("key: give the log's verifier key (the console has none for it)")
        verifier = Verifier.from_key_string(key)
    except (BadQuery, NoteError) as error:
        return _error(400, str(error))

    async def build(client: DutyLinkClient) -> web.StreamResponse:
        try:
            archive = await incident_bundle(client, gateway_id, incident_id, verifier)
        except BundleRefused as refused:
            return _error(refused.status, str(refused))
        disposition = f'attachment; filename="{archive.name}"'
        return web.Response(
            body=archive.data,
            content_type="application/gzip",
            headers={"Content-Disposition": disposition},
        )

    return await _with_client(request, build)
