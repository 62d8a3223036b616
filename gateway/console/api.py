"""The JSON API the pages' script reads: the board, one incident, an agency's resource ledger,
and the board's changes as Server-Sent Events. Each call goes to the gateway with the session's token, so the answer is
exactly what the gateway gives that agency (redacted by its policy); the console adds nothing,
keeps nothing, and shows the gateway's refusals as HTTP statuses with a JSON error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway.console.queries import (
    BadQuery,
    agency_of,
    board_query,
    http_status,
    incident_id_of,
    jurisdiction_of,
    plane_of,
)
from gateway.console.state import SETTINGS, STOPPING, credential_of, still_logged_in

BOARD_LIMIT = 200  # a duty board, not an archive: the gateway caps at 500
LEDGER_LIMIT = 1000  # every item of an agency's reserve, as far as the gateway sends
KEEPALIVE_SECONDS = 15.0  # a comment line now and then finds a closed tab, and ends a dead session
CHANGES_BUFFERED = 256  # changes waiting for a slow browser; past that the stream restarts
_KEEPALIVE: dict[str, Any] = {}  # what _next_or_none gives after a quiet while


def as_dict(message: Message) -> dict[str, Any]:
    """Protobuf's JSON mapping with the .proto field names, as the gateway answered."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _rpc_error(error: grpc.aio.AioRpcError) -> web.Response:
    code = error.code()
    return _error(http_status(code), f"{code.name}: {error.details() or ''}".rstrip(": "))


async def _answer(call: Callable[[], Awaitable[Message]]) -> web.Response:
    try:
        return web.json_response(as_dict(await call()), dumps=_dumps)
    except grpc.aio.AioRpcError as error:
        return _rpc_error(error)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def board(request: web.Request) -> web.Response:
    """GET /api/board?jurisdiction=3101&plane=EXERCISE&all=1 -> GetBoardResponse as JSON."""
    try:
        query = board_query(request.query)
    except BadQuery as error:
        return _error(400, str(error))

    async def call() -> Message:
        async with request.app[SETTINGS].connect(credential_of(request)) as client:
            return await client.board(
                query.jurisdiction,
                plane=query.plane,
                include_finished=query.include_finished,
                limit=BOARD_LIMIT,
            )

    return await _answer(call)


async def incident(request: web.Request) -> web.Response:
    """GET /api/incident/<id>?plane=EXERCISE -> BoardIncident (with its timeline) as JSON."""
    try:
        incident_id = incident_id_of(request.match_info["incident_id"])
        plane = plane_of(request.query)
    except BadQuery as error:
        return _error(400, str(error))

    async def call() -> Message:
        async with request.app[SETTINGS].connect(credential_of(request)) as client:
            return await client.incident(incident_id, plane=plane)

    return await _answer(call)


async def ledger(request: web.Request) -> web.Response:
    """GET /api/ledger?agency=fire&plane=EXERCISE -> GetLedgerResponse as JSON (no agency: the
    officer's own; another's only for the command centre, else the gateway's 403)."""
    try:
        agency, plane = agency_of(request.query), plane_of(request.query)
    except BadQuery as error:
        return _error(400, str(error))

    async def call() -> Message:
        async with request.app[SETTINGS].connect(credential_of(request)) as client:
            return await client.ledger(agency, plane=plane, limit=LEDGER_LIMIT)

    return await _answer(call)


def sse(data: dict[str, Any], event: str = "") -> bytes:
    """One Server-Sent Event: JSON on a single `data:` line (json.dumps escapes newlines)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {_dumps(data)}\n\n".encode()


async def _pump(
    changes: AsyncIterator[Message], queue: asyncio.Queue[dict[str, Any] | None]
) -> None:
    """Moves the gateway's changes into the queue; None marks the end (or an overflow)."""
    try:
        async for change in changes:
            if queue.full():
                break  # the browser cannot keep up: end, and it reconnects and re-reads
            queue.put_nowait({"incident": as_dict(change)})
    except grpc.aio.AioRpcError as error:
        await queue.put({"error": error.code().name, "status": http_status(error.code())})
        return
    await queue.put(None)  # waits for the reader if the queue is full: the end always arrives


async def events(request: web.Request) -> web.StreamResponse:
    """GET /api/events?jurisdiction=&plane= -> each changed incident as an SSE `data:` line.

    A `ready` event opens the stream (the page re-reads the board then, so a reconnect misses
    nothing it would show); the stream ends when the gateway ends the watch or the session ends,
    and the browser's EventSource reconnects by itself."""
    try:
        jurisdiction, plane = jurisdiction_of(request.query), plane_of(request.query)
    except BadQuery as error:
        return _error(400, str(error))
    settings = request.app[SETTINGS]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(CHANGES_BUFFERED)
    async with settings.connect(credential_of(request)) as client:
        pump = asyncio.create_task(_pump(client.watch_board(jurisdiction, plane=plane), queue))
        try:
            await response.write(b"retry: 2000\n" + sse({}, "ready"))

            def alive() -> bool:  # logout, expiry or revocation ends the stream too
                return still_logged_in(request)

            await _relay(response, queue, alive, request.app[STOPPING])
        except ConnectionResetError:
            pass  # the tab closed
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    return response


async def _relay(
    response: web.StreamResponse,
    queue: asyncio.Queue[dict[str, Any] | None],
    alive: Callable[[], bool],
    stopping: asyncio.Event,
) -> None:
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while alive() and not stopping.is_set():
            item = await _next_or_none(queue, stop)
            if item is _KEEPALIVE:
                await response.write(b": keepalive\n\n")  # a closed tab fails this write
                continue
            if not await _write_item(response, item):
                return
    finally:
        stop.cancel()


async def _next_or_none(
    queue: asyncio.Queue[dict[str, Any] | None], stop: asyncio.Future[Any]
) -> dict[str, Any] | None:
    """The next change, _KEEPALIVE after a quiet while, None when the console stops."""
    getting = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait(
        {getting, stop}, timeout=KEEPALIVE_SECONDS, return_when="FIRST_COMPLETED"
    )
    if getting in done:
        return getting.result()
    getting.cancel()
    return None if stop in done else _KEEPALIVE


async def _write_item(response: web.StreamResponse, item: dict[str, Any] | None) -> bool:
    """Writes one change; False once the stream is over (its end, or the gateway's refusal)."""
    if item is None:
        return False
    if "error" in item:
        await response.write(sse(item, "failure"))
        return False
    await response.write(sse(item))
    return True
