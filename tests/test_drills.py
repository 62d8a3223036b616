"""Failure drills on a real three-node JetStream cluster on loopback with two gateway replicas,
publishers and subscribers running, every event counted by id on both ends (tests.drill_support)
and checked in the style of Jepsen's NATS workload (gateway.testkit.history): nothing acknowledged is
lost, nothing unexpected is read, no confirmed ack is followed by a redelivery, every node ends
with the same stream, and each gateway's audit log still verifies.

Slow by nature: select with `-m slow`, skip with `-m "not slow"`. The stall lasts
DUTYLINK_DRILL_STALL_SECONDS (default 120).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient, Retry
from gateway.core import subjects
from gateway.core.settings import Config
from gateway.testkit.cluster import LocalCluster
from gateway.testkit.history import History, Outcome, Verdict, check
from gateway.testkit.inprocess import GatewayProcess, config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.drill_support import Workload, drill_event, final_reads, until, verify_audit_logs
from tests.test_cluster import stream_leader

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PATIENT = Retry(attempts=60, timeout=60, wait_initial=0.2, wait_max=1.0, wait_jitter=0.2)
STALL_SECONDS = float(os.environ.get("DUTYLINK_DRILL_STALL_SECONDS", "120"))


def drill_config(tmp_path: Path, gateway_id: str) -> Config:
    return config_for_tests(
        gateway={"gateway_id": gateway_id, "publish_timeout_seconds": 2.0},
        nats={"stream_replicas": 3, "data_dir": str(tmp_path / gateway_id)},
    )


# Every replica: R3 streams, a short publish timeout (a fault shows fast), a 5 s ack wait (a
# stalled subscriber's deliveries time out many times over), checkpoints every 0.5 s.
REPLICA_ENV = {
    "DUTYLINK_NATS_STREAM_REPLICAS": "3",
    "DUTYLINK_GATEWAY_PUBLISH_TIMEOUT_SECONDS": "2",
    "DUTYLINK_SUBSCRIPTIONS_ACK_WAIT_SECONDS": "5",
    "DUTYLINK_AUDIT_CHECKPOINT_SECONDS": "0.5",
}


@dataclass
class Drill:
    cluster: LocalCluster
    replicas: list[GatewayProcess]
    history: History
    workload: Workload

    async def finish(self, drain_within: float = 120.0) -> Verdict:
        """Drain, read every node, check the history; stop the replicas (their shutdown
        checkpoints) and verify each one's audit log as an auditor would."""
        await self.workload.drain(within=drain_within)
        await self.cluster.wait_until_ready()
        await final_reads(self.cluster, self.history)
        verdict = check(self.history)
        print(f"\n{verdict.describe()}\nworkload: {self.workload.counters}")
        assert verdict.ok, verdict.describe()
        for replica in self.replicas:
            assert await replica.stop() == 0, replica.log_file.read_text()[-2000:]
        keys = {r.gateway_id: r.data_dir / "audit" / f"{r.gateway_id}.pub" for r in self.replicas}
        sizes = await verify_audit_logs(self.cluster.gateway_urls, keys)
        assert all(size > 0 for size in sizes.values()), sizes
        return verdict


@asynccontextmanager
async def drill(
    tmp_path: Path,
    *,
    subscribers: tuple[str, ...] = ("police",),
    batch: int = 0,
    pause: float = 0.01,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Drill]:
    """A three-node cluster with proxied routes, two gateway replicas as processes (each
    connected first to a different node), and the workload running."""
    async with AsyncExitStack() as stack:
        cluster = await stack.enter_async_context(
            LocalCluster(tmp_path / "cluster", route_proxies=True)
        )
        urls = cluster.gateway_urls
        replicas = [
            await stack.enter_async_context(
                GatewayProcess(
                    urls[i:] + urls[:i],
                    tmp_path / f"gw-{i + 1}",
                    gateway_id=f"gw-{i + 1}",
                    env={**REPLICA_ENV, **(env or {})},
                )
            )
            for i in range(2)
        ]
        history = History()
        workload = Workload(history, [r.address for r in replicas], batch=batch, pause=pause)
        await workload.start(subscribers)
        try:
            yield Drill(cluster, replicas, history, workload)
        finally:
            await workload.stop_publishing()


async def test_kill_9_the_event_streams_leader_node_then_bring_it_back(tmp_path: Path) -> None:
    async with drill(tmp_path) as run:
        await run.workload.run_until(200)
        victim = await stream_leader(run.cluster, subjects.EVENTS_STREAM)
        await run.cluster.kill(victim)
        before = run.workload.published_count
        await run.workload.run_until(before + 200, within=90)  # the survivors carry on
        await run.cluster.restart(victim)
        await run.workload.run_until(run.workload.published_count + 200)
        verdict = await run.finish()
    assert verdict.acknowledged >= 600


async def test_kill_9_a_gateway_replica_mid_batch_then_restart_it(tmp_path: Path) -> None:
    async with drill(tmp_path, subscribers=("police", "transport"), batch=50) as run:
        await run.workload.run_until(1000)
        victim = run.replicas[0]
        await victim.kill()  # batches are always in flight: this one dies mid-batch
        assert victim.returncode == -9
        before = run.workload.published_count
        await run.workload.run_until(before + 1000, within=90)  # all through the other replica
        await victim.start()  # same id: its audit log continues after the crash
        await run.workload.run_until(run.workload.published_count + 1000, within=90)
        verdict = await run.finish()
    assert run.workload.counters.retryable_errors or run.workload.counters.reopened
    assert verdict.acknowledged >= 3000


async def test_kill_9_every_node_then_restart_the_whole_cluster(tmp_path: Path) -> None:
    async with drill(tmp_path, batch=20) as run:
        await run.workload.run_until(400)
        for index in range(3):
            await run.cluster.kill(index)
        await asyncio.sleep(2.0)  # publishers meet a dead cluster: retryable refusals
        for index in range(3):
            await run.cluster._servers[index].start()
        await run.cluster.wait_until_ready()
        await run.workload.run_until(run.workload.published_count + 400, within=120)
        verdict = await run.finish()
    assert run.workload.counters.retryable_errors, "the publishers never noticed the restart"
    assert verdict.acknowledged >= 800


async def test_a_partition_cuts_the_stream_leader_off_then_heals(tmp_path: Path) -> None:
    async with drill(tmp_path, subscribers=("police", "transport")) as run:
        await run.workload.run_until(200)
        leader = await stream_leader(run.cluster, subjects.EVENTS_STREAM)
        run.cluster.partition([leader], [i for i in range(3) if i != leader])
        await asyncio.sleep(15.0)  # the majority elects a new leader; the minority refuses
        run.cluster.heal()
        await run.cluster.wait_until_ready()
        await run.workload.run_until(run.workload.published_count + 200, within=90)
        await run.finish()


async def test_slow_links_between_nodes_lose_nothing(tmp_path: Path) -> None:
    async with drill(tmp_path, batch=10) as run:
        await run.workload.run_until(100)
        run.cluster.delay_routes(0.1, jitter=0.05)
        await asyncio.sleep(10.0)
        run.cluster.heal()
        await run.workload.run_until(run.workload.published_count + 200)
        verdict = await run.finish()
    assert verdict.acknowledged >= 300


async def test_losing_quorum_refuses_publishes_as_retryable_and_never_acknowledges_them(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        cluster = await stack.enter_async_context(
            LocalCluster(tmp_path / "cluster", route_proxies=True)
        )
        gateway = await stack.enter_async_context(
            gateway_for_tests(cluster.gateway_urls[0], drill_config(tmp_path, "gw-1"))
        )
        fire = await stack.enter_async_context(
            DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=NO_RETRY)
        )
        await fire.publish(drill_event("before-0"))
        cluster.partition([0], [1], [2])  # no two nodes can talk: no quorum anywhere
        await asyncio.sleep(3.0)
        refused = drill_event("during-0")
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await fire.publish(refused, timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "retry with the same event id" in (error.value.details() or "")
        cluster.heal()
        await cluster.wait_until_ready()
        # The publisher's retry, same id, once quorum is back.
        retrying = await stack.enter_async_context(
            DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=PATIENT)
        )
        receipt = await retrying.publish(refused, timeout=10)
        history = History()
        history.attempted("p", "before-0")
        history.published("p", "before-0")
        history.attempted("p", "during-0")
        history.published("p", "during-0")
        await final_reads(cluster, history)
        verdict = check(history)
        assert not verdict.stored_twice and not verdict.divergent_nodes, verdict.describe()
        assert not verdict.missing_from_stream, verdict.describe()
        assert receipt.stream_sequence > 0


async def test_a_subscriber_stalled_for_minutes_gets_everything_after_and_others_carry_on(
    tmp_path: Path,
) -> None:
    # About 40 events/s: the backlog of a long stall drains within the test's time.
    async with drill(tmp_path, subscribers=("police", "transport"), pause=0.05) as run:
        await run.workload.run_until(100)
        run.workload.stall("police")
        transport = run.history.subscribers["transport"]
        confirmed_at_stall = len(transport.confirmed)
        await asyncio.sleep(STALL_SECONDS)  # many ack waits (5 s) pass
        assert len(transport.confirmed) > confirmed_at_stall + 100, "one stall held up others"
        run.workload.release()
        verdict = await run.finish(drain_within=180)
    assert verdict.acknowledged >= 200


async def test_a_backlog_past_the_streams_limit_refuses_new_events_and_loses_none(
    tmp_path: Path,
) -> None:
    # A stream of 3 MB (about 4,000 events) with discard-new: once full, publishes are refused
    # for good (RESOURCE_EXHAUSTED, not retryable) while the stalled subscriber holds its
    # in-flight window; every event acknowledged before is still delivered afterwards.
    full = {"DUTYLINK_NATS_EVENTS_MAX_BYTES": str(3 * 1024 * 1024)}
    async with drill(tmp_path, batch=50, env=full) as run:
        run.workload.stall("police")
        await until(
            lambda: Outcome.REFUSED in run.history.outcomes.values(), within=180, interval=0.2
        )
        verdict = await run.finish(drain_within=180)
    assert verdict.refused > 0 and verdict.acknowledged > 1000
