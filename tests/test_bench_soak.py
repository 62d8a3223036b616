"""Gateway replicas as subprocesses (gateway.testkit.inprocess.GatewayProcess): start, kill -9, restart
on the same port with the same audit log; and the two measurements of gateway.bench.soak with
tiny parameters (their figures are for people to read: shape and sanity only, no thresholds)."""

from __future__ import annotations

import asyncio
import math
import signal
from pathlib import Path

import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2
from gateway.audit.note import Verifier
from gateway.audit.verify import verify_log
from gateway.bench import soak as bench_soak
from gateway.store.audit_reader import read_log
from gateway.testkit.inprocess import GatewayProcess, GatewayProcessError
from tests.conftest import TOKENS
from tests.factories import incident_event


async def test_a_gateway_that_cannot_start_says_why(nats_url: str, tmp_path: Path) -> None:
    with pytest.raises(GatewayProcessError, match="exited with 2") as failed:
        async with GatewayProcess(
            nats_url, tmp_path / "gw", env={"DUTYLINK_GATEWAY_MAX_BATCH_EVENTS": "many"}
        ):
            pass
    assert "DUTYLINK_GATEWAY_MAX_BATCH_EVENTS" in str(failed.value), "the log's tail"


@pytest.mark.slow
async def test_a_killed_gateway_refuses_connections_and_restarts_on_its_port_and_audit_log(
    nats_url: str, tmp_path: Path
) -> None:
    first, second = incident_event(), incident_event()
    env = {"DUTYLINK_AUDIT_CHECKPOINT_SECONDS": "0.1"}
    async with GatewayProcess(nats_url, tmp_path / "gw", gateway_id="gw-7", env=env) as gateway:
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            await fire.publish(first)
        killed = gateway.pid
        await gateway.kill()
        assert gateway.returncode == -signal.SIGKILL
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", gateway.port)

        address = gateway.address
        await gateway.restart()
        assert gateway.address == address and gateway.pid != killed
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            assert (await fire.publish(first)).duplicate, "stored before the kill"
            await fire.publish(second)
        assert await gateway.stop() == 0
    assert gateway.log_file.stat().st_size > 0, "its logs went to its data directory"

    connection = await nats.connect(nats_url)
    try:
        stored = await read_log(connection.jetstream(), "gw-7")
    finally:
        await connection.close()
    key = Verifier.from_key_string((tmp_path / "gw" / "audit" / "gw-7.pub").read_text().strip())
    report = verify_log(
        stored.entries, stored.checkpoints, key, "gw-7", frame_problems=stored.frame_problems
    )
    assert report.ok, report.problems
    entries = [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]
    starts = [e.sequence for e in entries if e.action == audit_pb2.AUDIT_ACTION_GATEWAY_START]
    assert len(starts) == 2 and starts[0] == 0, "one log, continued after the restart"
    accepted = {e.event_id for e in entries if e.outcome == audit_pb2.AUDIT_OUTCOME_ACCEPTED}
    assert {first.id, second.id} <= accepted


@pytest.mark.slow
async def test_rss_under_a_stalled_subscriber_is_sampled_from_the_gateway_process(
    tmp_path: Path,
) -> None:
    figures = await bench_soak.rss_with_stalled_subscriber(tmp_path, seconds=6, rate=100)
    assert len(figures.samples) >= 6 and all(s > 0 for s in figures.samples)
    window = figures.samples[figures.warmup_samples :]
    assert window and figures.start_mb == window[0] and figures.end_mb == window[-1]
    assert figures.peak_mb == max(window)
    assert math.isfinite(figures.slope_mb_per_min) and math.isfinite(figures.late_slope_mb_per_min)
    assert figures.published > 0 and figures.publish_errors == 0
    assert 0 < figures.delivered <= figures.published
    assert 0 < figures.stalled_received <= bench_soak.STALLED_READS


@pytest.mark.slow
async def test_replica_scaling_publishes_through_one_and_two_replicas_of_a_cluster(
    tmp_path: Path,
) -> None:
    figures = await bench_soak.replica_scaling(tmp_path, count=1000)
    assert figures.one_replica > 0 and figures.two_replicas > 0
    assert figures.ratio == pytest.approx(figures.two_replicas / figures.one_replica)
    assert figures.cpu_two_replicas["gateway gw-2"] > 0, "the second replica did publish"
    assert set(figures.cpu_one_replica) == set(figures.cpu_two_replicas)
    assert {"nats n1", "nats n2", "nats n3", "gateway gw-1"} <= set(figures.cpu_one_replica)
