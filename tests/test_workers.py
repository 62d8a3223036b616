"""`dutylink serve --workers N`: the pure arithmetic, the merged metrics, the port reservation,
and the supervisor as a real process tree on a real embedded NATS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.bench.harness import PUBLISHER, make_events
from gateway.cli.workers import reserve
from gateway.config import sample_tokens
from gateway.core.workers import (
    RESTART_FIRST_SECONDS,
    RESTART_MAX_SECONDS,
    STABLE_SECONDS,
    Restarts,
    worker_count,
    worker_id,
)
from gateway.store.nats_server import running_pid
from gateway.telemetry.worker_metrics import merge_expositions
from gateway.testkit.inprocess import free_port
from tests.test_resilience import health_of
from tests.test_serve_processes import alive, environment, gone

SERVING = health_pb2.HealthCheckResponse.SERVING


class TestArithmetic:
    def test_a_configured_count_is_taken_as_it_is(self) -> None:
        assert worker_count(3, cores=16, cap=2) == 3

    def test_zero_means_one_per_core_up_to_the_cap(self) -> None:
        assert worker_count(0, cores=2, cap=8) == 2
        assert worker_count(0, cores=64, cap=8) == 8
        assert worker_count(0, cores=None, cap=8) == 1

    def test_each_worker_has_its_own_gateway_id_derived_from_the_replicas(self) -> None:
        assert [worker_id("gw-1", i) for i in range(2)] == ["gw-1-w0", "gw-1-w1"]

    def test_a_worker_that_keeps_dying_waits_longer_each_time_up_to_the_most(self) -> None:
        restarts, delays = Restarts(), []
        for _ in range(10):
            restarts = restarts.after_death(served_seconds=1.0)
            delays.append(restarts.delay)
        assert delays[0] == RESTART_FIRST_SECONDS
        assert delays == sorted(delays) and delays[1] > delays[0]
        assert delays[-1] == RESTART_MAX_SECONDS

    def test_a_worker_that_served_a_while_starts_again_from_the_first_pause(self) -> None:
        worn = Restarts(deaths=6).after_death(served_seconds=STABLE_SECONDS)
        assert worn.delay == RESTART_FIRST_SECONDS


def exposition(published: int) -> str:
    registry = CollectorRegistry()
    rpcs = Counter("dutylink_rpcs", "RPCs", ["method", "code"], registry=registry)
    rpcs.labels("Publish", "OK").inc(published)
    return generate_latest(registry).decode()


def test_merged_metrics_keep_each_workers_values_under_its_label() -> None:
    merged = merge_expositions({"w0": exposition(3), "w1": exposition(5)}).decode()
    samples = {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(merged)
        for s in family.samples
        if s.name == "dutylink_rpcs_total"
    }
    assert samples == {"w0": 3.0, "w1": 5.0}
    assert merged.count("# TYPE dutylink_rpcs_total counter") == 1


class TestReserve:
    def test_port_0_becomes_a_concrete_port_that_a_plain_bind_cannot_take(self) -> None:
        held, address = reserve("127.0.0.1:0", "gateway.listen")
        with held, socket.socket() as other:
            port = int(address.rpartition(":")[2])
            assert port > 0
            with pytest.raises(OSError, match="in use"):
                other.bind(("127.0.0.1", port))

    def test_a_port_in_use_is_refused_naming_the_key(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError, match=r"^gateway\.listen: cannot listen on"):
                reserve(f"127.0.0.1:{port}", "gateway.listen")


@dataclass
class Supervised:
    process: asyncio.subprocess.Process
    address: str
    lines: list[dict[str, object]] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        """The latest pid of each worker, from its `worker.ready` lines."""
        return {
            str(line["worker"]): int(str(line["pid"]))
            for line in self.lines
            if line.get("event") == "worker.ready"
        }


def serve_workers(data_dir: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "gateway.cli.main", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(data_dir), "--workers", str(workers)]  # fmt: skip


@asynccontextmanager
async def supervising(data_dir: Path, settings: dict[str, str]) -> AsyncIterator[Supervised]:
    """`dutylink serve --workers 2` once every worker is ready; its JSON log lines keep
    arriving in `lines`. SIGTERM (then SIGKILL) on the way out if it still runs."""
    process = await asyncio.create_subprocess_exec(
        *serve_workers(data_dir, 2), env=environment(settings), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    stdout, lines = process.stdout, []

    async def read() -> None:
        async for raw in stdout:
            if raw.startswith(b"{"):
                lines.append(json.loads(raw))

    reading = asyncio.create_task(read())
    try:
        async with asyncio.timeout(60):
            while not any(line.get("event") == "workers.started" for line in lines):
                assert not reading.done(), f"the supervisor exited early: {lines}"
                await asyncio.sleep(0.05)
        started = next(line for line in lines if line.get("event") == "workers.started")
        yield Supervised(process, str(started["address"]), lines)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 40)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reading


async def publish_on_fresh_channels(address: str, channels: int) -> None:
    """One small batch on each of `channels` new connections (the kernel spreads connections,
    not calls, among the workers)."""
    for events in (make_events(2) for _ in range(channels)):
        async with DutyLinkClient(address, token=sample_tokens()[PUBLISHER]) as client:
            results = await client.publish_batch(events)
            assert all(not result.HasField("error") for result in results)


async def publishes_by_worker(metrics_address: str) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{metrics_address}/metrics") as answer,
    ):
        text = await answer.text()
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels["grpc_method"] == "PublishBatch"
        and sample.labels["grpc_code"] == "OK"
    }


async def audit_verify(data_dir: Path, gateway_id: str) -> tuple[int, str]:
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "audit", "verify", "--gateway-id", gateway_id,
        "--data-dir", str(data_dir), env=environment(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await verify.communicate()
    assert verify.returncode is not None
    return verify.returncode, output.decode()


async def test_two_workers_share_the_port_each_with_its_own_verifiable_audit_log(
    tmp_path: Path,
) -> None:
    metrics, health = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    console = f"127.0.0.1:{free_port()}"
    settings = {
        "DUTYLINK_GATEWAY_METRICS_LISTEN": metrics,
        "DUTYLINK_GATEWAY_HEALTH_LISTEN": health,
        "DUTYLINK_CONSOLE_LISTEN": console,
    }
    async with supervising(tmp_path, settings) as supervised:
        assert set(supervised.pids()) == {"w0", "w1"}
        counted: dict[str, float] = {}
        for _ in range(10):  # the kernel's spreading is random: a bound, not a loop forever
            await publish_on_fresh_channels(supervised.address, 8)
            counted = await publishes_by_worker(metrics)
            if len(counted) == 2:
                break
        assert set(counted) == {"w0", "w1"}, "both workers served calls on the one port"
        assert await health_of(health) == SERVING
        for gateway_id in ("gw-1-w0", "gw-1-w1"):
            code, output = await audit_verify(tmp_path, gateway_id)
            assert code == 0, output
            assert f"audit log {gateway_id}" in output
        assert {line.get("worker") for line in supervised.lines} >= {"w0", "w1"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{console}/login") as page,
        ):
            assert page.status == 200, "the supervisor serves the console, once"
        started = [line for line in supervised.lines if line.get("event") == "console.started"]
        assert [line.get("worker") for line in started] == [None]


async def test_a_killed_worker_is_started_again_and_sigterm_stops_every_process(
    tmp_path: Path,
) -> None:
    async with supervising(tmp_path, {}) as supervised:
        nats_pid = running_pid(tmp_path)
        first = supervised.pids()
        os.kill(first["w1"], signal.SIGKILL)
        async with asyncio.timeout(60):
            while supervised.pids()["w1"] == first["w1"]:  # noqa: ASYNC110 (another process)
                await asyncio.sleep(0.1)
        died = [line for line in supervised.lines if line.get("event") == "worker.died"]
        assert [line["worker"] for line in died] == ["w1"]
        assert alive(first["w0"]) and not alive(first["w1"])
        await publish_on_fresh_channels(supervised.address, 4)
        assert await health_of(supervised.address) == SERVING

        supervised.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(40):
            assert await supervised.process.wait() == 0
        for pid in [*supervised.pids().values(), nats_pid]:
            assert pid is not None and await gone(pid)


async def test_a_start_up_error_is_reported_once_and_stops_everything(tmp_path: Path) -> None:
    settings = {"DUTYLINK_POLICY_DIR": str(tmp_path / "no-such-policies")}
    process = await asyncio.create_subprocess_exec(
        *serve_workers(tmp_path / "data", 2), env=environment(settings),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    errors = stderr.decode().splitlines()
    assert process.returncode == 2, "a configuration error, as from a single gateway"
    assert sum("policy" in line for line in errors) == 1, errors
    assert errors[-1].startswith("error: cannot start: worker w0 (gw-1-w0) exited with 2")
    assert b'"worker": "w1"' not in stdout, "no other worker was started"
    assert running_pid(tmp_path / "data") is None


async def test_one_worker_is_todays_single_gateway(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *serve_workers(tmp_path, 1), env=environment(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = json.loads(await process.stdout.readline() or b'{"event": "exited"}')
                assert line["event"] != "exited"
                if line["event"] == "gateway.started":
                    break
        assert "worker" not in line
        assert await health_of(str(line["address"])) == SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.communicate()
    assert process.returncode == 0
    code, output = await audit_verify(tmp_path, "gw-1")
    assert code == 0, output


async def test_kill_9_of_the_supervisor_takes_its_workers_and_nats_server_with_it(
    tmp_path: Path,
) -> None:
    async with supervising(tmp_path, {}) as supervised:
        children = [*supervised.pids().values(), running_pid(tmp_path)]
        supervised.process.kill()
        await supervised.process.wait()
        for pid in children:
            assert pid is not None and await gone(pid)
