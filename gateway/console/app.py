"""The console's aiohttp application: routes, the session gate in front of every route but the
login page and the static files, and the headers that keep the pages to their own origin."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway.console import api, audit_api, audit_pages, ledger_pages, pages
from gateway.console.certificates import CertificateLogin, LoginRefused
from gateway.console.sessions import SessionStore
from gateway.console.state import (
    COOKIE,
    OFFICER,
    SESSIONS,
    SETTINGS,
    STOPPING,
    ConsoleSettings,
    Officer,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# A login form and the API's query strings are small; nothing bigger is ever read.
MAX_REQUEST_BYTES = 16 * 1024
PUBLIC_PREFIXES = ("/login", "/static/")
# Only this origin's scripts and styles; no inline script, no frames, no form posted elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def session_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but the public ones needs a logged-in officer: pages send the officer to the
    login page (or, with certificate login, say why the certificate was refused), the API
    answers 401 in JSON for the page's script to act on."""
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    certificates = request.app[SETTINGS].certificates
    if certificates is not None:
        return await _by_certificate(request, handler, certificates)
    sessions = request.app[SESSIONS]
    session_id = request.cookies.get(COOKIE) or ""
    token = sessions.token_of(session_id)
    if token is None:
        if request.path.startswith("/api/"):
            return web.json_response({"error": "not logged in"}, status=401)
        raise web.HTTPSeeOther("/login")
    request[OFFICER] = Officer(token, lambda: sessions.alive(session_id))
    return await handler(request)


async def _by_certificate(
    request: web.Request, handler: Handler, certificates: CertificateLogin
) -> web.StreamResponse:
    """The officer is the agency of the certificate this connection's handshake verified,
    checked again (revocation) at every request and, for a live stream, at every keepalive."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    try:
        agency = certificates.agency(der)
    except LoginRefused as error:
        if request.path.startswith("/api/"):
            return web.json_response({"error": str(error)}, status=401)
        return pages.refused_page(request, str(error))
    request[OFFICER] = Officer(agency, lambda: certificates.still_valid(der))
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, streams too (a middleware runs too late for a prepared stream)."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"  # boards are not for shared caches


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


def create_app(settings: ConsoleSettings, sessions: SessionStore | None = None) -> web.Application:
    """The console as an aiohttp application (serve it with web.AppRunner or web.run_app)."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[session_gate])
    app[SETTINGS] = settings
    app[SESSIONS] = sessions if sessions is not None else SessionStore()
    app[STOPPING] = asyncio.Event()
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/login", pages.login_page)
    app.router.add_post("/login", pages.login)
    app.router.add_post("/logout", pages.logout)
    app.router.add_get("/", pages.board_page)
    app.router.add_get("/incident/{incident_id}", pages.incident_page)
    app.router.add_get("/api/board", api.board)
    app.router.add_get("/api/incident/{incident_id}", api.incident)
    app.router.add_get("/api/events", api.events)
    app.router.add_get("/ledger", ledger_pages.ledger_page)
    app.router.add_get("/api/ledger", api.ledger)
    app.router.add_get("/audit", audit_pages.audit_page)
    app.router.add_get("/checkpoints", audit_pages.checkpoints_page)
    app.router.add_get("/api/audit/entries", audit_api.entries)
    app.router.add_get("/api/audit/proof", audit_api.proof)
    app.router.add_get("/api/audit/checkpoint", audit_api.checkpoint)
    app.router.add_get("/api/audit/logs", audit_api.logs)
    app.router.add_get("/api/audit/bundle", audit_api.bundle)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


@contextlib.asynccontextmanager
async def serving(
    settings: ConsoleSettings, host: str, port: int, https: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """The console served on HOST:PORT (0: a free port), over HTTPS with `https`, for the
    block; yields its base URL."""
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=https).start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"{'https' if https else 'http'}://{shown}:{bound_port}"
    finally:
        await runner.cleanup()
