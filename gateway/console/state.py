"""What the console's handlers share, kept on the application object (never module globals, so
two consoles or two tests in one process share nothing): the settings, the session store, and
the request-scoped credential the gate found."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.console.certificates import CertificateLogin
from gateway.console.sessions import SessionStore

COOKIE = "dutylink_session"
Connector = Callable[[str], DutyLinkClient]


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console reaches the gateway (`connect(credential)` gives a client acting as the
    officer's agency, opened inside the serving event loop), how officers log in (with
    `certificates`: by their agency's client certificate, the credential then being the agency
    it names; without: by their agency's token, in a session), the zone times are shown in, and
    the audit logs' verifier keys the operator configured, (gateway id, key string) pairs: only
    offered to the auditor's page as defaults, never used to verify in its stead; and the
    agencies the gateway knows, offered to the command centre's ledger page (none: it types
    the agency's id)."""

    connect: Connector
    zone: str = "Asia/Shanghai"
    audit_keys: tuple[tuple[str, str], ...] = ()
    certificates: CertificateLogin | None = None
    agencies: tuple[str, ...] = ()

    def audit_key(self, gateway_id: str) -> str:
        return dict(self.audit_keys).get(gateway_id, "")


SETTINGS = web.AppKey("settings", ConsoleSettings)
SESSIONS = web.AppKey("sessions", SessionStore)
# Set when the console shuts down: every open event stream ends at once, not at its keepalive.
STOPPING = web.AppKey("stopping", asyncio.Event)


@dataclass(frozen=True)
class Officer:
    """Who the gate let in: the credential the gateway is called with (a session's token, or
    the agency a certificate names), and whether the officer is still logged in (a session not
    closed or expired; a certificate not revoked), asked again and again by a live stream."""

    credential: str
    logged_in: Callable[[], bool]


OFFICER = web.RequestKey("officer", Officer)  # request-scoped, set by the gate


def credential_of(request: web.Request) -> str:
    """The logged-in officer's credential (the gate has checked there is one)."""
    return request[OFFICER].credential


def still_logged_in(request: web.Request) -> bool:
    return request[OFFICER].logged_in()
