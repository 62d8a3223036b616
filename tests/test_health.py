"""`[gateway] health_listen`: a plaintext port that serves grpc.health.v1 and nothing else, for
orchestrator probes that cannot present the client certificate the main port requires."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.access import pki
from gateway.core.settings import Agency, Config, TlsSettings
from gateway.server import SERVICE_NAMES, Gateway
from gateway.testkit.inprocess import config_for_tests, free_port, gateway_for_tests

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def authority(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    pki.issue_server(directory)
    pki.issue_agency(directory, "fire")
    return directory


def mtls_config(authority: Path, tmp_path: Path) -> Config:
    """Mutual TLS on the main port (as in deploy/gateway.toml), the health port beside it."""
    config = config_for_tests(
        gateway={"health_listen": f"127.0.0.1:{free_port()}"},
        nats={"data_dir": str(tmp_path / "gateway")},
    )
    return dataclasses.replace(
        config,
        tls=TlsSettings(
            ca_file=str(authority / "ca.pem"),
            cert_file=str(authority / "server.pem"),
            key_file=str(authority / "server.key"),
            crl_file=str(authority / "crl.pem"),
        ),
        agencies=(Agency("fire", "Fire and Rescue"),),
    )


@pytest.fixture
async def gateway(nats_url: str, authority: Path, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url, mtls_config(authority, tmp_path)) as running:
        yield running


async def check(channel: grpc.aio.Channel, service: str = "") -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return int(answer.status)


async def test_the_health_port_answers_in_plaintext_without_credentials(
    gateway: Gateway, authority: Path
) -> None:
    assert gateway.health_address == gateway.config.gateway.health_listen
    async with grpc.aio.insecure_channel(gateway.health_address) as channel:
        assert await check(channel) == SERVING
        for service in SERVICE_NAMES:  # the same statuses as the main port's health
            assert await check(channel, service) == SERVING, service
    # The main port still requires a client certificate ...
    async with grpc.aio.insecure_channel(gateway.address) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(plaintext)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # ... and with one says the same.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(authority / "ca.pem").read_bytes(),
        private_key=(authority / "agencies" / "fire.key").read_bytes(),
        certificate_chain=(authority / "agencies" / "fire.pem").read_bytes(),
    )
    async with grpc.aio.secure_channel(gateway.address, credentials) as mutual:
        assert await check(mutual) == SERVING
    # Only the main port's check is counted: the health port has no metrics interceptor.
    counted = gateway.metrics.registry.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check",
         "grpc_code": "OK"},
    )  # fmt: skip
    assert counted == 1.0


async def test_the_health_port_serves_no_dutylink_service_and_no_reflection(
    gateway: Gateway,
) -> None:
    pool = descriptor_pool.Default()
    async with grpc.aio.insecure_channel(gateway.health_address) as channel:
        for service in (*SERVICE_NAMES, reflection.SERVICE_NAME):
            for method in pool.FindServiceByName(service).methods:
                call = channel.unary_unary(f"/{service}/{method.name}")
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(b"", timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, method.full_name


async def test_stopping_turns_the_health_port_not_serving_then_closes_it(
    nats_url: str, authority: Path, tmp_path: Path
) -> None:
    statuses: list[int] = []
    first = asyncio.Event()

    async def watch(channel: grpc.aio.Channel) -> grpc.StatusCode:
        """Every status the health port sends; the code it ends with when the port closes."""
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        with_error = grpc.StatusCode.OK
        try:
            async for answer in stream:
                statuses.append(int(answer.status))
                first.set()
        except grpc.aio.AioRpcError as error:
            with_error = error.code()
        return with_error

    async with gateway_for_tests(nats_url, mtls_config(authority, tmp_path)) as gateway:
        address = gateway.health_address
        channel = grpc.aio.insecure_channel(address)
        watcher = asyncio.create_task(watch(channel))
        async with asyncio.timeout(10):
            await first.wait()
    try:
        async with asyncio.timeout(10):
            ended = await watcher
    finally:
        await channel.close()
    assert statuses == [SERVING, NOT_SERVING]
    assert ended != grpc.StatusCode.OK  # cut when the health port closed
    async with grpc.aio.insecure_channel(address) as closed:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(closed)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def blocked_port() -> socket.socket:
    """A socket listening on a 127.0.0.1 port, so nothing else can bind it."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    return blocker


async def test_a_health_port_in_use_fails_start_up_naming_the_key(nats_url: str) -> None:
    with blocked_port() as blocker:
        port = blocker.getsockname()[1]
        gateway = Gateway(
            config_for_tests(gateway={"health_listen": f"127.0.0.1:{port}"}), nats_url=nats_url
        )
        expected = rf"gateway\.health_listen: cannot listen on 127\.0\.0\.1:{port}"
        with pytest.raises(OSError, match=expected):
            await gateway.__aenter__()
    # The main port, opened first, was closed again.
    assert gateway.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5).close()


def test_dutylink_serve_reports_the_health_port_in_use_in_one_line(tmp_path: Path) -> None:
    # A real process: `serve` configures logging for the whole interpreter.
    with blocked_port() as blocker:
        port = blocker.getsockname()[1]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DUTYLINK_")}
        result = subprocess.run(
            [
                sys.executable, "-m", "gateway.cli.main",
                *("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)),
                # The ports are opened before NATS is contacted: no NATS is needed here.
                *("--nats-url", "nats://127.0.0.1:1", "--log-level", "error"),
            ],
            env={**environment, "DUTYLINK_GATEWAY_HEALTH_LISTEN": f"127.0.0.1:{port}"},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"error: cannot start: gateway.health_listen: cannot listen on 127.0.0.1:{port}" in (
        output
    )
