"""The gateway's Prometheus endpoint: the gRPC server's metrics as go-grpc-prometheus names them,
the process's, events accepted and refused, deliveries and lag, and the audit log's progress."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
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
    publish = 'grpc_method="Publish",grpc_service="dutylink.v1.PublisherService",grpc_type="unary"'
    assert f"grpc_server_started_total{{{publish}}} 3.0" in text
    assert f'grpc_server_handled_total{{grpc_code="OK",{publish}}} 2.0' in text
    assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{publish}}} 1.0' in text
    assert f"grpc_server_handling_seconds_count{{{publish}}} 3.0" in text
    subscribe = 'grpc_method="Subscribe",grpc_service="dutylink.v1.SubscriberService"'
    assert (
        f'grpc_server_handled_total{{grpc_code="OK",{subscribe},grpc_type="bidi_stream"}}' in text
    )
    assert 'dutylink_events_accepted_total{agency="fire",family="incident"} 2.0' in text
    assert (
        'dutylink_events_refused_total{agency="fire",code="INVALID_ARGUMENT",family="incident"} 1.0'
        in text
    )
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
    size = next(
        line for line in text.splitlines() if line.startswith("dutylink_audit_log_entries ")
    )
    signed = next(
        line for line in text.splitlines() if line.startswith("dutylink_audit_checkpoint_entries ")
    )
    assert float(size.split()[1]) >= 4 and float(signed.split()[1]) > 0
    age = next(
        line
        for line in text.splitlines()
        if line.startswith("dutylink_audit_checkpoint_age_seconds ")
    )
    assert float(age.split()[1]) < 60
