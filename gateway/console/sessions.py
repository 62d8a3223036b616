"""The console's sessions: a random id in an HttpOnly cookie maps, in this process's memory only,
to the agency token the officer logged in with, so the token never reaches the browser's script
and a restart logs everyone out (nothing of a token is written anywhere).

The clock is injected so expiry is tested without waiting eight hours.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE_LIMIT_SECONDS = 8 * 60 * 60  # one duty shift without a click ends the session
MAX_SESSIONS = 1000  # bounded memory: the oldest idle session goes first when full


@dataclass
class Session:
    token: str
    last_seen: float


class SessionStore:
    """Session ids to tokens, each forgotten after `idle_limit` seconds without use."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        idle_limit: float = IDLE_LIMIT_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._idle_limit = idle_limit
        self._max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}

    def open(self, token: str) -> str:
        """A new session for this token; returns its id (256 random bits, URL-safe)."""
        self._forget_expired()
        if len(self._sessions) >= self._max_sessions:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(token, self._clock())
        return session_id

    def token_of(self, session_id: str | None) -> str | None:
        """The session's token, refreshing its idle timer; None if unknown or expired."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._idle_limit:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session.token

    def alive(self, session_id: str) -> bool:
        """Whether the session still exists, without counting this as use (a live event
        stream must not keep an abandoned session open forever)."""
        session = self._sessions.get(session_id)
        return session is not None and self._clock() - session.last_seen <= self._idle_limit

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _forget_expired(self) -> None:
        now = self._clock()
        expired = [k for k, s in self._sessions.items() if now - s.last_seen > self._idle_limit]
        for session_id in expired:
            del self._sessions[session_id]
