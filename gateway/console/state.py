"""What the console's handlers share, kept on the application object (never module globals, so
two consoles or two tests in one process share nothing): the settings, the session store, and
the request-scoped token the session gate found."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from adapters.sdk.client import DutyLinkClient
from gateway.console.sessions import SessionStore

COOKIE = "dutylink_session"
Connector = Callable[[str], DutyLinkClient]


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console reaches the gateway (`connect(token)` gives a client acting as that
    token's agency, opened inside the serving event loop), the zone times are shown in, and
    the audit logs' verifier keys the operator configured, (gateway id, key string) pairs: only
    offered to the auditor's page as defaults, never used to verify in its stead; and the
    agencies the gateway knows, offered to the command centre's ledger page (none: it types
    the agency's id)."""

    connect: Connector
    zone: str = "Asia/Shanghai"
    audit_keys: tuple[tuple[str, str], ...] = ()
    agencies: tuple[str, ...] = ()

    def audit_key(self, gateway_id: str) -> str:
        return dict(self.audit_keys).get(gateway_id, "")


SETTINGS = web.AppKey("settings", ConsoleSettings)
SESSIONS = web.AppKey("sessions", SessionStore)
# Set when the console shuts down: every open event stream ends at once, not at its keepalive.
STOPPING = web.AppKey("stopping", asyncio.Event)
TOKEN = web.RequestKey("token", str)  # request-scoped: the session's token and id, set by the gate
SESSION_ID = web.RequestKey("session_id", str)


def token_of(request: web.Request) -> str:
    """The logged-in agency's token (the session gate has checked there is one)."""
    return request[TOKEN]


def session_id_of(request: web.Request) -> str:
    return request[SESSION_ID]
