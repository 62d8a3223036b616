"""`dutylink serve --workers N`: one replica as N gateway processes on one port, so that it uses
N cores (one Python process is bound to about one).

The supervisor (this process, which runs no gateway itself):
- holds the data directory's lock and reserves the gRPC port (and `health_listen`'s) with a
  bound SO_REUSEPORT socket, port 0 made concrete first, so every worker binds the same port and
  nothing else can (a plain bind fails; the gateway's single-process path never sets the option);
- starts the embedded nats-server once (unless `nats.url` names one), started again if it dies;
- starts the workers (`python -m gateway.cli.worker`, fresh interpreters, never forked from a
  process holding gRPC objects): worker 0 first, so that a start-up error (a bad policy, an
  unreadable certificate) is reported by one process, once; then the others. Each is an ordinary
  gateway with the gateway id `<gateway_id>-w<i>`, so its own audit log (one writer each,
  verified by `dutylink audit verify <gateway_id>-w<i>`) and its own writer lease; its log lines
  carry `worker`;
- serves what must exist once: `[gateway] metrics_listen` (every worker's series, labelled
  `worker`, gateway.telemetry.worker_metrics) and the console (`[console] listen`);
- starts a worker that dies again after a growing pause (gateway.core.workers.Restarts);
- on SIGTERM/SIGINT sends SIGTERM to every worker (each drains its calls like a single gateway),
  waits for them, then stops NATS. Workers get SIGTERM too if the supervisor dies.
The kernel spreads new connections among the workers (a connection stays with one worker): many
clients, or a client with several channels, use them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from gateway.cli.startup import console_beside
from gateway.cli.worker import Orders
from gateway.core.settings import Config
from gateway.core.workers import Restarts, worker_id
from gateway.server import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS
from gateway.store import nats_auth
from gateway.store.data_dir_lock import DataDirLock
from gateway.store.nats_server import keep_running, start_embedded, store_key_of
from gateway.telemetry.metrics import serve_http
from gateway.telemetry.worker_metrics import workers_metrics_route

log = structlog.get_logger("dutylink.workers")
# How long past `shutdown_grace_seconds` a worker may take to stop before it is killed.
STOP_MARGIN_SECONDS = 15.0


class WorkersFailedError(RuntimeError):
    """A worker could not start the first time: the error it printed says why."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status  # the worker's exit status


def reserve(address: str, key: str) -> tuple[socket.socket, str]:
    """Hold `address` (config key `key`) for the workers: a socket bound with SO_REUSEPORT,
    never listening (the kernel gives connections to listening sockets only), and the address
    with its concrete port. OSError naming the key when anything already holds the port."""
    host, _, port = address.rpartition(":")
    bare = host.removeprefix("[").removesuffix("]")
    try:
        family, kind, _, _, where = socket.getaddrinfo(
            bare, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise OSError(f"{key}: cannot listen on {address}: {error}") from None
    # First without the option: a bind fails if anything holds the port, with it or without.
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(where)
        except OSError:
            raise OSError(
                f"{key}: cannot listen on {address} (in use, or not an address of this host)"
            ) from None
        chosen = int(probe.getsockname()[1])
    held = socket.socket(family, kind)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        held.bind((where[0], chosen, *where[2:]))
    except OSError as error:
        held.close()
        raise OSError(f"{key}: cannot hold {address} for the workers: {error}") from None
    return held, f"{host}:{chosen}"


async def _read_line(fd: int) -> bytes:
    """The first line written to the pipe `fd` (closed afterwards), b"" when its writer closed
    it without one (the worker died before it was ready)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        return await reader.readline()
    finally:
        transport.close()


@dataclass
class _Worker:
    index: int
    gateway_id: str
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: Restarts = field(default_factory=Restarts)

    @property
    def label(self) -> str:
        return f"w{self.index}"


class Supervisor:
    """Runs `count` workers of the replica `settings` until SIGTERM/SIGINT: `await run()`."""

    def __init__(
        self, settings: Config, count: int, *, config_file: Path | None, log_level: str
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.log_level = log_level
        replica = settings.gateway.gateway_id
        self.workers = [_Worker(i, worker_id(replica, i)) for i in range(count)]
        self.address = ""  # the shared gRPC address, once reserved
        self.health_address = ""
        self._connect_url = settings.nats.url.get_secret_value()
        self._metrics_ports: dict[str, int] = {}
        self._stopping = asyncio.Event()

    def _orders(self, worker: _Worker, ready_fd: int) -> Orders:
        return Orders(
            index=worker.index,
            gateway_id=worker.gateway_id,
            config_file=str(self.config_file) if self.config_file else "",
            data_dir=self.settings.nats.data_dir,
            external_nats_url=self.settings.nats.url.get_secret_value(),
            connect_url=self._connect_url,
            listen=self.address,
            health_listen=self.health_address,
            metrics=bool(self.settings.gateway.metrics_listen),
            log_level=self.log_level,
            ready_fd=ready_fd,
            supervisor_pid=os.getpid(),
        )

    async def _spawn(self, worker: _Worker) -> bool:
        """Start `worker`'s process; whether it became ready (False: it exited first)."""
        ready_read, ready_write = os.pipe()
        try:
            worker.process = process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli.worker", stdin=asyncio.subprocess.PIPE,
                pass_fds=(ready_write,),
            )  # fmt: skip
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
        worker.started = asyncio.get_running_loop().time()
        assert process.stdin is not None
        with contextlib.suppress(ConnectionError):  # it died at once: the pipe says so below
            process.stdin.write(self._orders(worker, ready_write).to_json().encode())
            await process.stdin.drain()
            process.stdin.close()
        line = await _read_line(ready_read)
        if not line:
            await process.wait()
            return False
        self._metrics_ports[worker.label] = int(json.loads(line)["metrics_port"])
        log.info("worker.ready", worker=worker.label, gateway_id=worker.gateway_id, pid=process.pid)
        return True

    async def _start_all(self) -> None:
        """Worker 0, then the others at once; WorkersFailedError if one exits first."""
        first, others = self.workers[0], self.workers[1:]
        results = [await self._spawn(first)]
        if results[0]:
            results += await asyncio.gather(*(self._spawn(w) for w in others))
        failed = [w for w, ready in zip(self.workers, results, strict=False) if not ready]
        if failed:
            worker = failed[0]
            status = worker.process.returncode if worker.process else None
            raise WorkersFailedError(
                f"worker {worker.label} ({worker.gateway_id}) exited with {status} before it "
                "was ready (its error is above)",
                status,
            )

    async def _watch(self, worker: _Worker) -> None:
        """Start `worker` again whenever it dies, after its pause, until the supervisor stops."""
        loop = asyncio.get_running_loop()
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            self._metrics_ports.pop(worker.label, None)
            if self._stopping.is_set():
                return
            worker.restarts = worker.restarts.after_death(loop.time() - worker.started)
            log.error(
                "worker.died",
                worker=worker.label,
                gateway_id=worker.gateway_id,
                exit_status=status,
                restart_in_seconds=worker.restarts.delay,
            )
            await asyncio.sleep(worker.restarts.delay)
            try:
                if await self._spawn(worker):
                    log.info("worker.restarted", worker=worker.label, pid=worker.process.pid)
            except OSError as error:  # no process at all (out of memory, of pids): try again
                log.error("worker.not_started", worker=worker.label, error=str(error))
                worker.started = loop.time()  # a failure soon after its start: the pause grows

    async def _stop_workers(self) -> None:
        """SIGTERM to every running worker, then wait; SIGKILL for any still running after the
        grace period and a margin."""
        self._stopping.set()  # none is started again from now on
        running = [w.process for w in self.workers if w.process and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        limit = self.settings.gateway.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), limit)
            except TimeoutError:
                log.error("worker.killed", pid=process.pid, message=f"not stopped in {limit:g} s")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    async def _prepare(self, stack: contextlib.AsyncExitStack) -> None:
        """The data directory, the ports, NATS and the metrics endpoint, each undone by `stack`."""
        gateway = self.settings.gateway
        stack.enter_context(DataDirLock(self.settings.nats.data_dir))
        held, self.address = reserve(gateway.listen, "gateway.listen")
        stack.callback(held.close)
        if gateway.health_listen:
            held, self.health_address = reserve(gateway.health_listen, "gateway.health_listen")
            stack.callback(held.close)
        if not self._connect_url:
            server, self._connect_url = await start_embedded(
                self.settings.nats.data_dir, gateway.gateway_id, store_key_of(self.settings.nats)
            )
            stack.push_async_callback(server.stop)
            watch = asyncio.create_task(
                keep_running(server, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
            )
            stack.push_async_callback(_cancel, watch)  # before the stop, which it would undo
        if gateway.metrics_listen:
            route = workers_metrics_route(self._metrics_ports)
            runner, port = await serve_http([route], gateway.metrics_listen)
            stack.push_async_callback(runner.cleanup)
            host = gateway.metrics_listen.rpartition(":")[0]
            log.info("metrics.listening", address=f"{host}:{port}", workers=len(self.workers))

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT. Raises what stops the start (WorkersFailedError, the
        data directory's, the ports', NATS's or the console's errors) after undoing it."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        watchers: list[asyncio.Task[None]] = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._prepare(stack)
                stack.push_async_callback(self._stop_workers)
                starting = asyncio.ensure_future(self._start_all())
                stopped = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not starting.done():  # asked to stop while starting
                    await _cancel(starting)
                    return
                stopped.cancel()
                starting.result()
                if self.settings.console.listen:
                    url = await stack.enter_async_context(
                        console_beside(self.address, self.settings)
                    )
                    structlog.get_logger("dutylink.console").info("console.started", url=url)
                watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]
                log.info(
                    "workers.started",
                    address=self.address,
                    workers=[w.gateway_id for w in self.workers],
                    nats=nats_auth.redact_url(self._connect_url),
                )
                await self._stopping.wait()
                log.info("workers.stopping")
        finally:
            self._stopping.set()
            for watcher in watchers:
                await _cancel(watcher)
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
        log.info("workers.stopped")


async def _cancel(task: asyncio.Task[None] | asyncio.Future[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
