"""10^4 malformed requests (gateway.testkit.fuzz: mutations of valid events) against a real gateway:
none is answered UNKNOWN or INTERNAL, health stays SERVING, and nothing accepted before is lost.
A larger run: `python -m gateway.testkit.fuzz --requests 100000`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import nats

from dutylink.v1 import event_pb2
from gateway.store.audit_reader import read_log
from gateway.testkit.fuzz import requests, seeds, send_all
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS, agency_clients

REQUESTS = 10_000


async def test_ten_thousand_malformed_requests_get_no_unknown_and_lose_nothing_accepted(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path / "data")})
    valid = seeds(datetime.now(UTC))
    async with gateway_for_tests(nats_url, config) as gateway:
        async with agency_clients(gateway.address) as client_for:
            accepted = {}
            for agency, event in valid:
                receipt = await (await client_for(agency)).publish(event)
                accepted[receipt.stream_sequence] = event.id
        outcomes = await send_all(
            gateway.address, TOKENS, list(requests(13, REQUESTS, valid)), concurrency=64
        )
        print(outcomes.table())
        assert sum(outcomes.counts.values()) == REQUESTS
        assert outcomes.failures == []
        assert set(outcomes.health) == {"SERVING"}
        async with agency_clients(gateway.address) as client_for:
            agency, event = valid[0]
            event.id = "after-the-fuzz"
            # A new aggregate of its own, since the gateway enforces the loops.
            if event.HasField("incident"):
                event.incident.incident_id = "INC-after-the-fuzz"
            if event.HasField("warning"):
                event.warning.identifier = "after-the-fuzz"
            assert (await (await client_for(agency)).publish(event)).stream_sequence
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        for sequence, event_id in accepted.items():
            stored = await js.get_msg("DUTYLINK_EVENTS", sequence)
            assert stored.data is not None
            assert event_pb2.Event.FromString(stored.data).id == event_id
        assert not (await read_log(js, "gw-1")).frame_problems
    finally:
        await connection.close()
