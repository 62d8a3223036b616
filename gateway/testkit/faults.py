"""A TCP fault proxy on loopback: network partitions and slow links without Docker or root.

    async with FaultProxy(("127.0.0.1", 6222)) as proxy:   # listens on proxy.port
        proxy.cut()          # a partition: nothing passes either way, nothing is closed
        proxy.delay(0.1, jitter=0.05)
        proxy.heal()

A cut behaves like a network partition, not like a crash: bytes stop flowing, no FIN or RST
reaches either side, and new connections hang instead of being refused. The proxy stops
reading, so the senders' socket buffers fill and their writes block, as they would while TCP
retransmits into the void. Whatever was sent meanwhile, a close included, arrives after
`heal()` unless the endpoints gave up on the connection first (their own timeouts decide, as on
a real network). A delay holds each chunk for `seconds ± jitter` and keeps the byte order.

The cluster drills put one proxy on every route between two JetStream nodes
(`gateway.testkit.cluster.LocalCluster(route_proxies=True)`); clients still reach the nodes directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from typing import Any

from gateway.core.started import Started

HOST = "127.0.0.1"
CHUNK = 64 * 1024
# Chunks held per direction (delay): a bound, so a slow link pushes back instead of buffering.
QUEUED_CHUNKS = 64


class FaultProxy(Started):
    def __init__(self, target: tuple[str, int], *, port: int = 0, name: str = "") -> None:
        self.target = target
        self.name = name or f"proxy->{target[1]}"
        self._port = port
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay = 0.0
        self._jitter = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted since start, for tests to see traffic takes this path

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def is_cut(self) -> bool:
        return not self._flowing.is_set()

    def cut(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def delay(self, seconds: float, *, jitter: float = 0.0) -> None:
        """Hold every chunk `seconds` (± up to `jitter`) before passing it on; 0 to stop."""
        if seconds < 0 or jitter < 0 or jitter > seconds:
            raise ValueError(f"delay {seconds} s ± {jitter} s: need 0 <= jitter <= seconds")
        self._delay, self._jitter = seconds, jitter

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # start_server runs this as a task of its own; tracked so stop() can end it.
        current = asyncio.current_task()
        if current is not None:
            self._tasks.add(current)
            current.add_done_callback(self._tasks.discard)
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:
            # stop() ends every connection; asyncio's server logs a cancelled handler as an
            # error, and this is no error.
            return

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a connection attempt during a cut hangs
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the node is down: the caller sees its connection close
            self._writers.add(upstream_writer)
            pipes = {
                self._spawn(self._pipe(reader, upstream_writer)),
                self._spawn(self._pipe(upstream_reader, writer)),
            }
            # Both directions end together: a side that closed has closed the whole link.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
        finally:
            for side in (writer, upstream_writer):
                if side is not None:
                    self._writers.discard(side)
                    side.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
        sender = self._spawn(self._send(queue, writer))
        loop = asyncio.get_running_loop()
        due = 0.0
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                # Never earlier than the chunk before it: jitter must not reorder bytes.
                hold = self._delay + random.uniform(-self._jitter, self._jitter)
                due = max(due, loop.time() + hold)
                await queue.put((due, data))
                if not data:
                    break
            await sender  # everything passed on, then the close
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._flowing.wait()  # a cut also holds what was already read
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
