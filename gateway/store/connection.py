"""The gateway's connection to NATS, shared by every JetStream edge: reconnects for ever, and
its errors as log lines a person can read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from gateway.core.ports import StoreUnavailableError
from gateway.store.errors import STORE_FAILURES, translate
from gateway.store.nats_auth import split_servers

log = structlog.get_logger("dutylink.nats")
Callback = Callable[[], Awaitable[None]]


class NatsErrorLog:
    """nats-py's error callback, as log lines a person can read: one line instead of a
    traceback, and an error that repeats while the client keeps reconnecting (every 0.5 s
    against an unreachable server) is said once, then again at most every `repeat_seconds`
    with how often it happened meanwhile."""

    def __init__(self, repeat_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._repeat = repeat_seconds
        self._clock = clock
        self._last = ""
        self._said_at = 0.0
        self._unsaid = 0

    async def report(self, error: Exception) -> None:
        """The callback (nats-py wants a coroutine function, not a callable object)."""
        text = f"{type(error).__name__}: {error}"
        now = self._clock()
        if text == self._last and now - self._said_at < self._repeat:
            self._unsaid += 1
            return
        repeats = {"repeated": self._unsaid} if text == self._last and self._unsaid else {}
        self._last, self._said_at, self._unsaid = text, now, 0
        log.warning("nats.error", error=text, **repeats)

    def forget(self) -> None:
        """The connection is back: the next error is news again."""
        self._last, self._unsaid = "", 0


class NatsConnection:
    """One NATS connection, made by `connect`; until then every use fails as unavailable (so
    what holds it can be built, and registered, before NATS is up)."""

    def __init__(
        self,
        *,
        name: str,
        connect_timeout: float,
        on_disconnected: Callback | None = None,
        on_reconnected: Callback | None = None,
    ) -> None:
        self._name = name
        self._connect_timeout = connect_timeout
        self._on_disconnected = on_disconnected
        self._on_reconnected = on_reconnected
        self._errors = NatsErrorLog()
        self._client: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def connect(self, url: str, *, give_up_after: float | None = None) -> None:
        """Connect to `url`. A gateway waits for NATS as long as it takes (None); a command
        line tool gives up after `give_up_after` seconds with StoreUnavailableError."""
        if give_up_after is None:
            await self._connect(url)
            return
        try:
            await asyncio.wait_for(self._connect(url), give_up_after)
        except TimeoutError:
            raise StoreUnavailableError(
                f"no NATS server answered within {give_up_after:g} s"
            ) from None

    async def _connect(self, url: str) -> None:
        async def ignore() -> None:
            return None

        async def reconnected() -> None:
            self._errors.forget()
            if self._on_reconnected is not None:
                await self._on_reconnected()

        servers, credentials = split_servers(url)
        try:
            self._client = await nats.connect(
                servers,
                **credentials,
                name=self._name,
                connect_timeout=self._connect_timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                disconnected_cb=self._on_disconnected or ignore,
                reconnected_cb=reconnected,
                error_cb=self._errors.report,
            )
        except STORE_FAILURES as error:
            raise translate(error) from error
        self._js = self._client.jetstream()

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise StoreUnavailableError("not connected to NATS yet")
        return self._js

    @property
    def client(self) -> NatsClient:
        if self._client is None:
            raise StoreUnavailableError("not connected to NATS yet")
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected)

    async def close(self) -> None:
        """Drain: let in-flight publishes and acks finish, then close."""
        if self._client is None or self._client.is_closed:
            return
        try:
            await self._client.drain()
        except STORE_FAILURES:
            # Reconnecting (NATS just restarted) or already gone: nothing left to drain, and a
            # failing close must not turn the gateway's shutdown into an error.
            with contextlib.suppress(*STORE_FAILURES):
                await self._client.close()
