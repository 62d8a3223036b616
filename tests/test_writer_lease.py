"""One writer per gateway id on a shared NATS: a second gateway with the same `gateway_id` is
refused before it writes, and a crashed holder does not block its successor for long."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient
from gateway.core import subjects
from gateway.core.settings import Config
from gateway.server import Gateway
from gateway.store.writer_lease import Holder, WriterLease, WriterLeaseError
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_url)
    try:
        yield client.jetstream()
    finally:
        await client.close()


def lease(js: JetStreamContext, data_dir: Path, seconds: float, lost: list[str]) -> WriterLease:
    async def on_lost(reason: str) -> None:
        lost.append(reason)

    return WriterLease(js, "gw-lease", data_dir, lease_seconds=seconds, on_lost=on_lost)


async def last_audit_sequence(js: JetStreamContext, gateway_id: str) -> int:
    raw = await js.get_last_msg(subjects.AUDIT_STREAM, subjects.audit_entries(gateway_id))
    return raw.seq or 0


async def test_a_second_gateway_with_the_same_id_is_refused_naming_the_first_before_any_write(
    nats_url: str, js: JetStreamContext, tmp_path: Path
) -> None:
    def config(name: str) -> Config:
        return config_for_tests(
            gateway={"writer_lease_seconds": 1.0}, nats={"data_dir": str(tmp_path / name)}
        )

    async with gateway_for_tests(nats_url, config("first")):
        written = await last_audit_sequence(js, "gw-1")
        second = Gateway(config("second"), nats_url=nats_url)
        expected = (
            rf"gateway id gw-1 is in use by another gateway on this NATS \(pid {os.getpid()} "
            rf"on .*, data directory {re.escape(str(tmp_path / 'first'))}\)"
        )
        with pytest.raises(WriterLeaseError, match=expected):
            await second.__aenter__()
        assert await last_audit_sequence(js, "gw-1") == written
        assert second.audit is None


async def test_a_gateway_restarted_on_its_data_dir_takes_over_a_crashed_holders_lease_at_once(
    js: JetStreamContext, tmp_path: Path
) -> None:
    lost: list[str] = []
    crashed = lease(js, tmp_path, 60.0, lost)
    await crashed.acquire()  # and never renewed nor released, as after kill -9
    restarted = lease(js, tmp_path, 60.0, lost)
    async with asyncio.timeout(20):  # far below the 60 s lease: no waiting for it to lapse
        await restarted.acquire()
    assert restarted.held


async def test_a_crashed_holders_lease_lapses_for_a_gateway_on_another_data_dir(
    js: JetStreamContext, tmp_path: Path
) -> None:
    lost: list[str] = []
    crashed = lease(js, tmp_path / "a", 0.5, lost)
    await crashed.acquire()
    elsewhere = lease(js, tmp_path / "b", 0.5, lost)
    await elsewhere.acquire()  # once the crashed one's lease lapsed
    assert elsewhere.held


async def test_a_released_lease_is_free_at_once(js: JetStreamContext, tmp_path: Path) -> None:
    lost: list[str] = []
    first = lease(js, tmp_path / "a", 60.0, lost)
    await first.acquire()
    await first.release()
    second = lease(js, tmp_path / "b", 60.0, lost)
    async with asyncio.timeout(20):
        await second.acquire()
    assert second.held and not first.held


async def test_a_holder_whose_lease_another_gateway_took_is_told_it_lost_it(
    js: JetStreamContext, tmp_path: Path
) -> None:
    lost: list[str] = []
    away = lease(js, tmp_path / "a", 0.5, lost)
    await away.acquire()  # then cut off longer than the lease: not renewed
    taker = lease(js, tmp_path / "b", 0.5, lost)
    await taker.acquire()

    async with asyncio.timeout(20):
        await away.keep()  # back: it finds the lease taken and stops keeping it

    assert len(lost) == 1
    assert str((tmp_path / "b").resolve()) in lost[0]
    assert not away.held and taker.held


async def test_a_gateway_whose_lease_another_took_stops_serving_and_appends_nothing_more(
    nats_url: str, js: JetStreamContext, tmp_path: Path
) -> None:
    config = config_for_tests(
        gateway={"writer_lease_seconds": 0.6}, nats={"data_dir": str(tmp_path / "first")}
    )
    async with gateway_for_tests(nats_url, config) as gateway:
        # Another gateway with this id takes the lease (as after an outage of the first one
        # longer than the lease): written over the first one's, as a lease write is.
        other = Holder(host="elsewhere", pid=1, data_dir="/srv/other", instance="other")
        subject = subjects.writer_lease("gw-1")
        async with asyncio.timeout(20):
            while True:
                last = await js.get_last_msg(subjects.WRITERS_STREAM, subject)
                try:
                    await js.publish(
                        subject,
                        json.dumps(dataclasses.asdict(other)).encode(),
                        headers={"Nats-Expected-Last-Subject-Sequence": str(last.seq)},
                    )
                    break
                except nats.js.errors.APIError:
                    continue  # the first one renewed in between
            await gateway.serve_until_signalled()  # returns on the failure

        assert "pid 1 on elsewhere, data directory /srv/other" in gateway.failure
        assert gateway.audit is None
        written = await last_audit_sequence(js, "gw-1")
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=NO_RETRY) as fire:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await fire.publish(incident_event())
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await last_audit_sequence(js, "gw-1") == written
