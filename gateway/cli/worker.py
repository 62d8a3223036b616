"""One worker of `dutylink serve --workers N`: `python -m gateway.cli.worker`, started by the
supervisor (gateway.cli.workers), which writes its orders as one JSON object on its standard
input (they may hold a NATS password: never on the command line). It runs an ordinary gateway
under its own gateway id, on the supervisor's NATS and its shared ports, tells the supervisor it
is ready by writing a JSON line to the `ready_fd` it inherited, and serves until SIGTERM/SIGINT
(or until its supervisor dies: Linux sends it SIGTERM then).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from pydantic import SecretStr

from gateway import config as config_module
from gateway.core.settings import Config
from gateway.telemetry import logs

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Orders:
    """What the supervisor tells a worker."""

    index: int
    gateway_id: str
    config_file: str  # "" for none
    data_dir: str
    external_nats_url: str  # `nats.url` in force ("" when the supervisor runs the embedded one)
    connect_url: str  # where to connect: the external URL, or the embedded one as the gateway
    listen: str  # the concrete address, the port shared by every worker
    health_listen: str  # likewise, "" when off
    metrics: bool  # serve metrics on a loopback port of its own, for the supervisor to read
    log_level: str
    ready_fd: int
    supervisor_pid: int

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Orders:
        return cls(**json.loads(text))

    @property
    def label(self) -> str:
        return f"w{self.index}"

    def settings(self) -> Config:
        """The replica's configuration (same file, same DUTYLINK_* environment) as this worker."""
        loaded = config_module.load(Path(self.config_file) if self.config_file else None)
        gateway = dataclasses.replace(
            loaded.gateway,
            gateway_id=self.gateway_id,
            listen=self.listen,
            health_listen=self.health_listen,
            metrics_listen="127.0.0.1:0" if self.metrics else "",
            workers=1,
        )
        nats = dataclasses.replace(
            loaded.nats, url=SecretStr(self.external_nats_url), data_dir=self.data_dir
        )
        return dataclasses.replace(loaded, gateway=gateway, nats=nats)


def _die_with(supervisor_pid: int) -> None:
    """SIGTERM (a graceful drain) when the supervisor dies, kill -9 included (Linux); exit now
    if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:
        sys.exit(1)


def main() -> None:
    from gateway.cli.startup import crash_at, run_reporting_startup_errors
    from gateway.rpc.dependencies import no_failpoint
    from gateway.server import Gateway

    orders = Orders.from_json(sys.stdin.read())
    _die_with(orders.supervisor_pid)
    logs.configure(orders.log_level, fields={"worker": orders.label})
    settings = orders.settings()
    crash_step = os.environ.get("DUTYLINK_FAILPOINT")

    async def run() -> None:
        gateway = Gateway(
            settings,
            nats_url=orders.connect_url,
            supervised=True,
            failpoint=crash_at(crash_step) if crash_step else no_failpoint,
        )
        async with gateway:
            ready = json.dumps({"metrics_port": gateway.metrics_port}) + "\n"
            os.write(orders.ready_fd, ready.encode())
            os.close(orders.ready_fd)
            await gateway.serve_until_signalled()
            # A signal to the process group and the supervisor's own both come: the second
            # must not cut the drain short.
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, lambda: None)
        if gateway.failure:
            typer.echo(f"error: {orders.label} stopped: {gateway.failure}", err=True)
            raise typer.Exit(1)

    try:
        run_reporting_startup_errors(run)
    except typer.Exit as leaving:
        sys.exit(leaving.exit_code)


if __name__ == "__main__":
    main()
