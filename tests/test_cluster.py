"""A real three-node JetStream cluster on loopback (gateway.testkit.cluster.LocalCluster): elections,
gateways sharing it, a node killed -9, accounts and TLS, the start-up durability check, and
`dutylink cluster up`; first the pure parts (config rendering, URL handling, findings)."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import nats
import nats.errors
import pytest
from nats.js import api
from structlog.testing import capture_logs

from dutylink.adapters.sdk.client import DutyLinkClient, Retry, Subscription
from gateway.core import subjects
from gateway.core.ports import DurabilityError
from gateway.core.settings import Config
from gateway.store.durability import DurabilityFinding, durability_findings
from gateway.store.jetstream import EventStore
from gateway.store.nats_auth import split_servers
from gateway.testkit.cluster import ClusterTls, LocalCluster, plan_local_cluster, render_node_config
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

# --- pure parts ------------------------------------------------------------------------------


def test_node_configs_route_to_every_peer_and_sync_always(tmp_path: Path) -> None:
    tls = ClusterTls(tmp_path / "ca.pem", tmp_path / "node.pem", tmp_path / "node.key")
    plan = plan_local_cluster(tmp_path, 3, tls=tls)
    ports = {n.client_port for n in plan.nodes} | {n.cluster_port for n in plan.nodes}
    assert len(ports) == 6
    text = render_node_config(plan, 1)
    assert "sync_interval: always" in text
    assert all(f"nats-route://127.0.0.1:{n.cluster_port}" in text for n in plan.nodes)
    assert text.count(str(tls.cert_file)) == 2  # routes and clients
    assert f'listen: "127.0.0.1:{plan.nodes[1].client_port}"' in text
    alone = render_node_config(plan_local_cluster(tmp_path, 1, sync_always=False), 0)
    assert "cluster {" not in alone and "sync_interval" not in alone


def test_credentials_in_the_first_url_serve_every_node() -> None:
    servers, credentials = split_servers(
        "nats://gateway:p%40ss@127.0.0.1:4222, nats://127.0.0.1:4223,tls://127.0.0.1:4224"
    )
    assert servers == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "tls://127.0.0.1:4224"]
    assert credentials == {"user": "gateway", "password": "p@ss"}
    assert split_servers("nats://s3cret@127.0.0.1:4222")[1] == {"token": "s3cret"}
    assert split_servers("nats://127.0.0.1:4222") == (["nats://127.0.0.1:4222"], {})


def stream_info(replicas: int, storage: str = "file", cluster: str | None = "c") -> api.StreamInfo:
    return api.StreamInfo.from_response(
        {
            "config": {"name": "S", "num_replicas": replicas, "storage": storage},
            "state": {
                "messages": 0,
                "bytes": 0,
                "first_seq": 0,
                "last_seq": 0,
                "consumer_count": 0,
            },
            **({"cluster": {"name": cluster, "leader": "n1"}} if cluster else {}),
        }
    )


def test_findings_name_memory_storage_missing_replicas_and_lazy_fsync() -> None:
    assert durability_findings({"S": stream_info(3)}, {"n1": True}, replicas=3) == []
    # A single server (no cluster) with one replica configured keeps its promise.
    assert durability_findings({"S": stream_info(1, cluster=None)}, {}, replicas=1) == []
    found = durability_findings(
        {"S": stream_info(1, storage="memory")}, {"n1": True, "n2": False}, replicas=1
    )
    assert [f.where for f in found] == ["S", "S", "server n2"]
    assert "storage is memory" in found[0].problem
    assert "set nats.stream_replicas = 3" in found[1].problem
    assert found[2] == DurabilityFinding(
        "server n2",
        "jetstream sync_interval is not 'always': writes are acknowledged before they reach "
        "the disk, and a power cut can lose them (nats-server#7564)",
    )


# --- a real cluster -----------------------------------------------------------------------------


def cluster_config(tmp_path: Path, gateway_id: str, **nats_settings: Any) -> Config:
    return config_for_tests(
        gateway={"gateway_id": gateway_id, "publish_timeout_seconds": 2.0},
        nats={"stream_replicas": 3, "data_dir": str(tmp_path / gateway_id), **nats_settings},
    )


async def receive(subscription: Subscription, wanted: Iterable[str], within: float) -> set[str]:
    """Read and ack until every id in `wanted` arrived (redeliveries allowed)."""
    expected, received = set(wanted), set[str]()
    async with asyncio.timeout(within):
        while not expected <= received:
            delivery = await subscription.next(timeout=within)
            assert delivery is not None
            received.add(delivery.event.id)
            await subscription.ack(delivery)
    return received


async def open_retrying(subscription: Subscription, within: float = 20.0) -> None:
    """Open, retrying UNAVAILABLE: while a consumer's leader is re-elected the gateway cannot
    create or bind it (the SDK's consume() does the same)."""
    async with asyncio.timeout(within):
        while True:
            try:
                await subscription.open()
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await subscription.close()
                await asyncio.sleep(0.5)


async def stream_leader(cluster: LocalCluster, stream: str) -> int:
    client = await nats.connect(cluster.gateway_urls[0])
    try:
        info = await client.jetstream().stream_info(stream)
    finally:
        await client.close()
    assert info.cluster is not None and info.cluster.leader
    return [node.name for node in cluster.plan.nodes].index(info.cluster.leader)


@pytest.mark.slow
async def test_three_nodes_elect_one_meta_leader_and_survive_losing_any_one(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path / "cluster") as cluster:
        views = await cluster.meta_leaders()
        assert set(views) == {"n1", "n2", "n3"} and len(set(views.values())) == 1
        leader = [node.name for node in cluster.plan.nodes].index(next(iter(views.values())))
        await cluster.kill(leader)
        # The two left elect a new meta leader between them.
        elected = await cluster.wait_until_ready(timeout=15)
        assert elected != cluster.plan.nodes[leader].name
        assert len(await cluster.meta_leaders()) == 2
        await cluster.restart(leader)
        assert len(set((await cluster.meta_leaders()).values())) == 1


@pytest.mark.slow
async def test_two_gateways_share_subscriptions_keep_their_own_audit_logs_and_ride_out_a_node_kill(
    tmp_path: Path,
) -> None:
    async with (
        LocalCluster(tmp_path / "cluster") as cluster,
        gateway_for_tests(cluster.gateway_urls[0], cluster_config(tmp_path, "gw-1")) as one,
        gateway_for_tests(cluster.gateway_urls[1], cluster_config(tmp_path, "gw-2")) as two,
    ):
        retry = Retry(attempts=20, timeout=30, wait_initial=0.2, wait_max=1.0, wait_jitter=0.2)
        fire = DutyLinkClient(one.address, token=TOKENS["fire"], retry=retry)
        police_on_two = DutyLinkClient(two.address, token=TOKENS["police"])
        police_on_one = DutyLinkClient(one.address, token=TOKENS["police"])
        try:
            subscription = police_on_two.subscribe("cluster", families=["incident"])
            await subscription.open()
            first = [incident_event() for _ in range(5)]
            for event in first:
                await fire.publish(event)
            await receive(subscription, (e.id for e in first), within=15)
            await subscription.close()

            # A node dies: the events stream's leader, the worst one to lose.
            victim = await stream_leader(cluster, subjects.EVENTS_STREAM)
            await cluster.kill(victim)
            during = [incident_event() for _ in range(5)]
            for event in during:
                receipt = await fire.publish(event)  # UNAVAILABLE while re-electing: retried
                assert receipt.stream_sequence > 0

            # The same subscription, now through the other replica: nobody owns it.
            subscription = police_on_one.subscribe("cluster", families=["incident"])
            await open_retrying(subscription)
            await receive(subscription, (e.id for e in during), within=20)
            await cluster.restart(victim)
            after = incident_event()
            await fire.publish(after)
            await receive(subscription, [after.id], within=15)
            await subscription.close()
        finally:
            for client in (fire, police_on_one, police_on_two):
                await client.close()
        assert one.audit is not None and two.audit is not None
        assert one.audit.size > 0 and two.audit.size > 0
        client = await nats.connect(cluster.gateway_urls[2])
        try:
            info = await client.jetstream().stream_info(
                subjects.AUDIT_STREAM, subjects_filter=f"{subjects.AUDIT_PREFIX}.>"
            )
        finally:
            await client.close()
        assert info.config.num_replicas == 3
        assert {subjects.audit_entries("gw-1"), subjects.audit_entries("gw-2")} <= set(
            info.state.subjects or {}
        )


async def _single_replica_streams(cluster: LocalCluster, tmp_path: Path) -> None:
    """Make the DutyLink streams as a gateway configured for one replica would."""
    store = EventStore(cluster_config(tmp_path, "gw-r1", stream_replicas=1))
    await store.connect(cluster.gateway_urls[0])
    try:
        await store.ensure_streams()
    finally:
        await store.close()


@pytest.mark.slow
async def test_the_durability_check_refuses_one_replica_where_three_are_configured(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path / "cluster") as cluster:
        await _single_replica_streams(cluster, tmp_path)
        store = EventStore(cluster_config(tmp_path, "gw-1"))
        await store.connect(cluster.gateway_urls[0])
        try:
            with pytest.raises(DurabilityError) as refused:
                await store.check_durability()
            message = str(refused.value)
            assert f"{subjects.EVENTS_STREAM}: 1 replica(s), nats.stream_replicas is 3" in message
            assert "losing one node's disk loses acknowledged events" in message

            warned = EventStore(cluster_config(tmp_path, "gw-2", durability="warn"))
            await warned.connect(cluster.gateway_urls[1])
            try:
                with capture_logs() as logs:
                    findings = await warned.check_durability()
            finally:
                await warned.close()
            assert {f.where for f in findings} == {
                subjects.EVENTS_STREAM,
                subjects.DEADLETTER_STREAM,
                subjects.GRANTS_STREAM,
                subjects.POLICIES_STREAM,
                subjects.ACKED_STREAM,
            }
            assert sum(entry["event"] == "durability.at_risk" for entry in logs) == len(findings)
            assert all(
                e["log_level"] == "warning" for e in logs if e["event"] == "durability.at_risk"
            )

            # A gateway configured for three replicas scales the streams up as it starts.
            await store.ensure_streams()
            with capture_logs() as logs:
                assert await store.check_durability() == []
            (ok,) = [entry for entry in logs if entry["event"] == "durability.ok"]
            assert ok["sync_always"] == ["n1", "n2", "n3"]
        finally:
            await store.close()


@pytest.mark.slow
async def test_a_cluster_without_sync_always_is_refused_node_by_node(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path / "cluster", sync_always=False) as cluster:
        with pytest.raises(DurabilityError, match="sync_interval is not 'always'") as refused:
            async with gateway_for_tests(cluster.gateway_urls[0], cluster_config(tmp_path, "gw-1")):
                pass
        assert all(f"server {name}:" in str(refused.value) for name in ("n1", "n2", "n3"))


@pytest.mark.slow
async def test_only_the_gateway_user_reaches_the_streams_and_it_cannot_delete_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalCluster(tmp_path / "cluster", tls=True) as cluster:
        context = cluster.ssl_context()
        assert context is not None
        # The client port speaks TLS only.
        host, port = "127.0.0.1", urlparse(cluster.urls[0]).port
        reader, writer = await asyncio.open_connection(host, port)
        info = json.loads((await reader.readline()).removeprefix(b"INFO "))
        writer.close()
        assert info["tls_required"] is True
        # No credentials, no connection.
        with pytest.raises(nats.errors.Error, match="Authorization"):
            await nats.connect(cluster.urls[0], tls=context, allow_reconnect=False)
        # The system account has no JetStream at all.
        system = await nats.connect(cluster.system_urls[0], tls=context)
        try:
            reply = json.loads((await system.request("$JS.API.INFO", b"", timeout=2)).data)
            assert reply["error"]["description"] == "JetStream not enabled for account"
        finally:
            await system.close()

        # The gateway trusts the cluster's CA the way deploy/ sets it up: SSL_CERT_FILE.
        assert cluster.plan.tls is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(cluster.plan.tls.ca_file))
        async with (
            gateway_for_tests(cluster.gateway_urls[0], cluster_config(tmp_path, "gw-1")) as gateway,
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        ):
            assert (await fire.publish(incident_event())).stream_sequence > 0

        gateway_client = await nats.connect(cluster.gateway_urls[1], tls=context)
        try:
            js = gateway_client.jetstream(timeout=1.0)
            with pytest.raises(nats.errors.TimeoutError):  # permission violation: no reply
                await js.delete_stream(subjects.EVENTS_STREAM)
            with pytest.raises(nats.errors.TimeoutError):
                await js.purge_stream(subjects.EVENTS_STREAM)
            info = await js.stream_info(subjects.EVENTS_STREAM)
            assert info.state.messages >= 1 and info.config.storage == api.StorageType.FILE
        finally:
            await gateway_client.close()


@pytest.mark.slow
async def test_cluster_up_prints_the_gateway_url_serves_it_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "cluster", "up", "--nodes", "3", "--dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any("DUTYLINK_NATS_URL=" in line for line in lines):
                raw = await process.stdout.readline()
                assert raw, f"cluster up exited early: {lines}"
                lines.append(raw.decode())
        env_file = tmp_path / "gateway.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines()
        )
        servers, credentials = split_servers(exports["DUTYLINK_NATS_URL"])
        assert credentials["password"] not in "".join(lines), "passwords are never printed"
        assert len(servers) == 3 and credentials["user"] == "gateway"
        client = await nats.connect(servers, **credentials)
        try:
            reply = json.loads((await client.request("$JS.API.INFO", b"", timeout=5)).data)
        finally:
            await client.close()
        assert "error" not in reply  # the gateway user has JetStream
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            rest, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert "cluster stopped" in rest.decode()
    for server in servers:  # every node stopped
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", urlparse(server).port)
