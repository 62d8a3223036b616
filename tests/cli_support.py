"""For tests of CLI commands that call asyncio.run themselves: servers on an event loop in
another thread, while CliRunner runs the command on the test's thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from gateway.store import nats_auth
from gateway.store.nats_server import NatsServer, embedded_dir

T = TypeVar("T")


class LoopThread:
    """An event loop on another thread, so this thread can run the (asyncio.run) CLI."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@contextmanager
def running_nats(data_dir: Path, gateway_id: str = "gw-1") -> Iterator[tuple[LoopThread, str]]:
    """The embedded nats-server of `data_dir` as gateway `gateway_id` runs it (its generated
    users only), for the block; the URL carries the gateway user's credentials."""
    loop = LoopThread()
    embedded = embedded_dir(data_dir)
    credentials = nats_auth.ensure_credentials(embedded)
    server = NatsServer(embedded, users=credentials.server_users(gateway_id))
    try:
        url = credentials.url(loop.run(server.start()), nats_auth.GATEWAY)
        yield loop, url
    finally:
        loop.run(server.stop())
        loop.close()
