"""`dutylink serve` as real processes: one gateway per data directory, and its embedded
nats-server lives and dies with it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from grpc_health.v1 import health_pb2

from gateway.config import sample_tokens
from gateway.store.nats_server import NatsServer, embedded_dir, running_pid, running_url
from gateway.testkit.inprocess import free_port
from tests.test_resilience import health_of

SERVING = health_pb2.HealthCheckResponse.SERVING
BOOTSTRAP = Path(__file__).resolve().parent.parent / "tools" / "bootstrap.py"


def serve_command(data_dir: Path, nats_url: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli.main", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(data_dir), *(["--nats-url", nats_url] if nats_url else [])]  # fmt: skip


def environment(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without its DUTYLINK_* settings, plus `settings`."""
    # A short writer lease: a refusal comes after a crashed holder's lease would have lapsed.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DUTYLINK_")}
    return {**inherited, "DUTYLINK_GATEWAY_WRITER_LEASE_SECONDS": "1.0", **(settings or {})}


@asynccontextmanager
async def serving(
    data_dir: Path,
    nats_url: str = "",
    *,
    command: list[str] | None = None,
    seen: list[bytes] | None = None,
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A `dutylink serve` process on `data_dir` (embedded NATS unless `nats_url`; `command`
    instead of the plain one; `settings`: DUTYLINK_* variables) once it has started, and its
    gRPC address; the lines it wrote until then are appended to `seen`. SIGTERM (then SIGKILL)
    on the way out if it still runs."""
    process = await asyncio.create_subprocess_exec(
        *(command or serve_command(data_dir, nats_url)), env=environment(settings),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    drain: asyncio.Task[bytes] | None = None
    seen = [] if seen is None else seen
    try:
        async with asyncio.timeout(30):
            while True:
                raw = await process.stdout.readline()
                assert raw, f"the gateway exited early: {b''.join(seen).decode()}"
                seen.append(raw)
                if raw.startswith(b"{") and json.loads(raw).get("event") == "gateway.started":
                    address = str(json.loads(raw)["address"])
                    break
        drain = asyncio.create_task(process.stdout.read())  # a full pipe would block it
        yield process, address
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            await drain


async def refused_serve(data_dir: Path, nats_url: str = "") -> tuple[int, list[str]]:
    """Run `dutylink serve` on `data_dir` expecting it to refuse: exit status and stderr lines."""
    process = await asyncio.create_subprocess_exec(
        *serve_command(data_dir, nats_url), env=environment(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode().splitlines()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def gone(pid: int, within: float = 20.0) -> bool:
    """Whether `pid` ends within `within` seconds (a bound, not a speed goal)."""
    async with asyncio.timeout(within):
        while alive(pid):  # noqa: ASYNC110 (another process: nothing to wait on but polling)
            await asyncio.sleep(0.05)
    return True


async def test_a_second_serve_on_the_same_data_dir_exits_naming_the_dir_and_the_first_ones_pid(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path)  # pytest gives it resolved
    async with serving(tmp_path) as (first, address):
        nats_pid = running_pid(tmp_path)
        url = running_url(tmp_path)

        code, lines = await refused_serve(tmp_path)

        assert code == 1
        assert len(lines) == 1, lines
        assert directory in lines[0]
        assert f"pid {first.pid}" in lines[0]
        # The first gateway, its nats-server and its files are untouched.
        assert running_url(tmp_path) == url
        assert nats_pid is not None and alive(nats_pid)
        assert await health_of(address) == SERVING


async def test_kill_9_of_the_gateway_takes_its_embedded_nats_server_with_it(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (gateway, _):
        nats_pid = running_pid(tmp_path)
        assert nats_pid is not None and alive(nats_pid)
        gateway.kill()
        await gateway.wait()
        assert await gone(nats_pid)
        assert running_url(tmp_path) is None  # operator tools are not sent to a dead address
    # And the next start runs on the same store, alone.
    async with serving(tmp_path) as (_, address):
        assert await health_of(address) == SERVING


async def test_serve_refuses_to_start_beside_a_live_leftover_nats_server_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    # A nats-server still running on the store, as one left by a gateway that could not take
    # it down (started by an older version, or where no parent-death signal exists).
    async with NatsServer(embedded_dir(tmp_path)) as leftover:
        code, lines = await refused_serve(tmp_path)

        assert code == 1
        assert len(lines) == 1, lines
        assert f"pid {leftover.pid}" in lines[0]
        assert str(embedded_dir(tmp_path)) in lines[0]
        assert alive(leftover.pid)
        assert running_url(tmp_path) == leftover.url


async def test_a_second_serve_with_the_same_gateway_id_on_one_nats_exits_naming_the_first(
    nats_url: str, tmp_path: Path
) -> None:
    first_dir = tmp_path / "first"
    async with serving(first_dir, nats_url) as (first, address):
        code, lines = await refused_serve(tmp_path / "second", nats_url)

        assert code == 1
        assert len(lines) == 1, lines
        assert "gateway id gw-1 is in use by another gateway" in lines[0]
        assert f"pid {first.pid}" in lines[0]
        assert str(first_dir) in lines[0]
        assert await health_of(address) == SERVING


def events(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["event"] for line in lines if line.startswith(b"{")]


async def test_the_embedded_server_starts_without_a_durability_warning(tmp_path: Path) -> None:
    # DutyLink wrote its configuration, sync_interval: always included: nothing to check.
    seen: list[bytes] = []
    async with serving(tmp_path, seen=seen):
        pass
    started = events(seen)
    assert "durability.sync_configured" in started
    assert "durability.sync_unobservable" not in started


async def test_sigterm_to_bootstrap_serve_stops_the_gateway_and_its_nats_server(
    tmp_path: Path,
) -> None:
    bootstrap = BOOTSTRAP
    command = [sys.executable, str(bootstrap), "serve", *serve_command(tmp_path, "")[4:]]
    async with serving(tmp_path, command=command) as (process, address):
        nats_pid = running_pid(tmp_path)
        assert nats_pid is not None and alive(nats_pid)
        assert await health_of(address) == SERVING
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
        assert await gone(nats_pid)
        assert running_url(tmp_path) is None


async def test_serve_with_console_listen_serves_the_console_beside_the_gateway(
    tmp_path: Path,
) -> None:
    port = free_port()
    console = {"DUTYLINK_CONSOLE_LISTEN": f"127.0.0.1:{port}"}
    async with serving(tmp_path / "data", settings=console) as (_, address):
        # unsafe: keep the session cookie of an IP address (127.0.0.1), as a browser does
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with asyncio.timeout(15):  # it opens just after the gateway said it started
                while True:
                    try:
                        page = await session.get(f"http://127.0.0.1:{port}/login")
                        break
                    except aiohttp.ClientConnectorError:
                        await asyncio.sleep(0.1)
            async with page:
                assert page.status == 200 and "text/html" in page.content_type
            form = {"token": sample_tokens()["fire"]}
            async with session.post(
                f"http://127.0.0.1:{port}/login", data=form, allow_redirects=False
            ) as login:
                assert login.status == 303, "the token was checked against this gateway"
            async with session.get(f"http://127.0.0.1:{port}/api/board?plane=EXERCISE") as board:
                assert board.status == 200 and await board.json() == {}
        assert address
