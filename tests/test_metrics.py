"""The gateway's Prometheus endpoint: RPCs by method and code, and the audit log's progress."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest

from adapters.sdk.client import DutyLinkClient
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event


async def test_rpcs_and_the_audit_log_are_counted(nats_url: str, tmp_path: Path) -> None:
    config = config_for_tests(
        gateway={"metrics_listen": "127.0.0.1:0"},
        nats={"data_dir": str(tmp_path)},
        audit={"checkpoint_seconds": 0.05},
    )
    invalid = incident_event()
    invalid.type = "incident.bad type"
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        await fire.publish(incident_event())
        await fire.publish(incident_event())
        with pytest.raises(grpc.aio.AioRpcError):
            await fire.publish(invalid)
        subscription = fire.subscribe("metrics", families=["incident"])
        await subscription.open()
        await subscription.close()
        await asyncio.sleep(0.3)  # a checkpoint signed; the stream's end counted
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as response,
        ):
            text = await response.text()
    assert 'dutylink_rpcs_total{code="OK",method="PublisherService/Publish"} 2.0' in text
    assert (
        'dutylink_rpcs_total{code="INVALID_ARGUMENT",method="PublisherService/Publish"} 1.0' in text
    )
    assert 'method="SubscriberService/Subscribe"' in text
    assert 'dutylink_rpc_duration_seconds_count{method="PublisherService/Publish"} 3.0' in text
    size = next(
        line for line in text.splitlines() if line.startswith("dutylink_audit_log_entries ")
    )
    signed = next(
        line for line in text.splitlines() if line.startswith("dutylink_audit_checkpoint_entries ")
    )
    assert float(size.split()[1]) >= 4 and float(signed.split()[1]) > 0
