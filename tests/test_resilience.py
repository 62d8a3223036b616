"""What the gateway does when NATS dies and when it is told to stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.msg import Msg

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient
from gateway.server import Gateway
from gateway.store.nats_server import CONFIG_FILE, NatsServer, running_pid, running_url
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event


async def health_of(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="")
        )
        return int(response.status)


async def wait_for_health(address: str, wanted: int, within: float = 10.0) -> None:
    async with grpc.aio.insecure_channel(address) as channel, asyncio.timeout(within):
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        async for response in watch:
            if response.status == wanted:
                return


async def test_a_nats_crash_refuses_publishes_as_unavailable_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    if os.environ.get("NATS_URL"):
        pytest.skip("kills and restarts its own nats-server; unset NATS_URL to run it")
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    port = urlparse(url).port
    assert port is not None
    config = config_for_tests(gateway={"publish_timeout_seconds": 1.0})
    try:
        async with gateway_for_tests(url, config) as gateway:
            police = DutyLinkClient(gateway.address, token=TOKENS["police"])
            # Stays open across the crash: the gateway's pull session must recover by itself.
            subscription = police.subscribe("crash", families=["incident"])
            await subscription.open()
            fire = DutyLinkClient(gateway.address, token=TOKENS["fire"])
            # Asked once: the SDK would retry UNAVAILABLE for a minute before the refusal shows.
            fire_once = DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=NO_RETRY)
            acknowledged = [incident_event() for _ in range(50)]
            for event in acknowledged:
                await fire.publish(event)

            server.kill()  # SIGKILL: no chance to flush anything it had not already synced
            await wait_for_health(gateway.address, health_pb2.HealthCheckResponse.NOT_SERVING)
            refused = incident_event()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await fire_once.publish(refused)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "retry with the same event id" in (caught.value.details() or "")

            server = NatsServer(tmp_path / "nats", port=port)
            await server.start()
            await wait_for_health(gateway.address, health_pb2.HealthCheckResponse.SERVING)
            retried = await fire.publish(refused)  # the retry the error asked for
            # At least once: deliveries held unacked over the crash come again; none may be missing.
            expected = {e.id for e in acknowledged} | {refused.id}
            received: list[str] = []
            async with asyncio.timeout(30):
                while not expected <= set(received):
                    delivery = await subscription.next(timeout=10)
                    assert delivery is not None
                    received.append(delivery.event.id)
                    await subscription.ack(delivery)
            assert set(received) == expected
            assert retried.stream_sequence > 0
            await subscription.close()
            await police.close()
            await fire.close()
            await fire_once.close()
    finally:
        await server.stop()


async def test_sigterm_stops_serving_drains_and_stops_the_embedded_nats(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(20):
            while not any(line.get("event") == "gateway.started" for line in lines):
                raw = await process.stdout.readline()
                assert raw, f"the gateway exited early: {lines}"
                lines.append(json.loads(raw))
        started = next(line for line in lines if line["event"] == "gateway.started")
        address = str(started["address"])
        assert await health_of(address) == health_pb2.HealthCheckResponse.SERVING
        url_file = tmp_path / "nats" / "nats-server.url"
        assert url_file.exists()
        async with DutyLinkClient(address, token=TOKENS["fire"]) as fire:
            await fire.publish(incident_event())

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rest, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [
        json.loads(line)["event"] for line in rest.decode().splitlines() if line.startswith("{")
    ]
    assert process.returncode == 0
    assert events.index("gateway.stopping") < events.index("gateway.stopped")
    assert not url_file.exists(), "the embedded nats-server was not stopped"
    assert all(line.get("level") != "error" for line in lines)


async def test_the_gateway_says_not_serving_until_nats_comes_up_then_serves(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free loopback port for a NATS that is not there yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = Gateway(
        config_for_tests(nats={"data_dir": str(tmp_path)}), nats_url=f"nats://127.0.0.1:{port}"
    )
    starting = asyncio.create_task(gateway.start())
    try:
        await asyncio.wait_for(gateway.listening.wait(), 10)
        await asyncio.sleep(0.5)  # NATS has had time to be tried, and is still not there
        assert await health_of(gateway.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=NO_RETRY) as fire:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await fire.publish(incident_event())
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            async with NatsServer(tmp_path / "late", port=port):
                await asyncio.wait_for(starting, 15)
                assert await health_of(gateway.address) == health_pb2.HealthCheckResponse.SERVING
                assert (await fire.publish(incident_event())).stream_sequence == 1
                await gateway.stop(grace=1)
    finally:
        starting.cancel()


def listen_only(port: int) -> str:
    return f'listen: "127.0.0.1:{port}"\n'


async def test_a_nats_back_before_its_jetstream_is_ready_ends_serving_once_jetstream_answers(
    tmp_path: Path,
) -> None:
    # A restarted server can take connections before its JetStream answers (recovering a large
    # store, electing stream leaders): the gateway must not give up on that reconnect.
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    port = urlparse(url).port
    assert port is not None
    config = config_for_tests(nats={"data_dir": str(tmp_path / "gateway")})
    try:
        async with (
            gateway_for_tests(url, config) as gateway,
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        ):
            await fire.publish(incident_event())
            await server.crash()
            await wait_for_health(gateway.address, health_pb2.HealthCheckResponse.NOT_SERVING)

            server = NatsServer(tmp_path / "nats", port=port, config_text=listen_only(port))
            await server.start()  # the same port; JetStream does not answer yet
            async with await nats.connect(server.url) as looking:
                asked: asyncio.Queue[str] = asyncio.Queue()

                async def note(message: Msg) -> None:  # and never answer
                    asked.put_nowait(message.subject)

                await looking.subscribe("$JS.API.STREAM.CREATE.>", cb=note)
                async with asyncio.timeout(60):
                    await asked.get()  # the streams ensured after the reconnect: no answer
                    await asked.get()  # and tried again
            assert await health_of(gateway.address) == health_pb2.HealthCheckResponse.NOT_SERVING
            # JetStream comes up on the same store, without another disconnect.
            store = json.dumps(str(tmp_path / "nats" / "jetstream"))
            (server.data_dir / CONFIG_FILE).write_text(
                # (sync_interval cannot change on a reload: JetStream's default, in a test)
                f"{listen_only(port)}jetstream {{\n  store_dir: {store}\n}}\n"
            )
            os.kill(server.pid, signal.SIGHUP)

            await wait_for_health(gateway.address, health_pb2.HealthCheckResponse.SERVING, 30)
            assert (await fire.publish(incident_event())).stream_sequence == 2
    finally:
        await server.stop()


async def test_an_embedded_nats_server_that_dies_is_started_again_and_the_gateway_serves_again(
    tmp_path: Path,
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with (
        Gateway(config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        await fire.publish(incident_event())
        first = running_pid(tmp_path)
        url = running_url(tmp_path)
        assert first is not None
        os.kill(first, signal.SIGKILL)

        await wait_for_health(gateway.address, health_pb2.HealthCheckResponse.NOT_SERVING)
        await wait_for_health(gateway.address, health_pb2.HealthCheckResponse.SERVING, 30)
        assert (await fire.publish(incident_event())).stream_sequence == 2
        again = running_pid(tmp_path)
        assert again is not None and again != first
        assert running_url(tmp_path) == url  # the same port: clients find it where it was
