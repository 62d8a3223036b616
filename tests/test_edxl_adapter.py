"""The EDXL adapter end to end: resource messages (and EDXL-DE envelopes carrying CAP and RM)
dropped by one agency arrive as equivalent EDXL-RM files at another."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from adapters.edxl.adapter import KIND
from adapters.edxl.rm import parse_rm
from adapters.runner import AdapterConfig, AdapterRunner
from gateway.server import Gateway
from tests.conftest import TOKENS

SAMPLES = Path(__file__).parent.parent / "adapters" / "edxl" / "samples"


async def until(condition: Callable[[], bool], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not within {seconds} s")


async def test_resource_messages_and_envelopes_cross_to_another_agency_as_edxl_rm(
    gateway: Gateway, tmp_path: Path
) -> None:
    drop, outbox = tmp_path / "drop", tmp_path / "outbox"
    fire = AdapterRunner(KIND, AdapterConfig(
        file=tmp_path / "fire.toml", gateway=gateway.address, token=TOKENS["fire"],
        state_dir=tmp_path / "fire", options={"system": "fire119", "division_code": "310115",
                                             "inbound": {"directory": str(drop), "poll_seconds": 0.1}},
    ))  # fmt: skip
    emergency = AdapterRunner(KIND, AdapterConfig(
        file=tmp_path / "em.toml", gateway=gateway.address, token=TOKENS["emergency"],
        state_dir=tmp_path / "emergency",
        options={"outbound": {"subscription": "rm-out", "directory": str(outbox)}},
    ))  # fmt: skip
    tasks = [asyncio.create_task(r.run()) for r in (fire, emergency)]
    try:
        await fire.wait_started()
        await emergency.wait_started()
        await asyncio.sleep(0.3)
        request = SAMPLES / "01-request-resource.xml"
        (drop / request.name).write_bytes(request.read_bytes())
        await until(lambda: len(list(outbox.glob("*.xml"))) == 1)
        (written,) = outbox.glob("*.xml")
        assert parse_rm(written.read_bytes()) == parse_rm(request.read_bytes())

        envelope = SAMPLES / "de-envelope-cap-and-request-resource.xml"
        (drop / envelope.name).write_bytes(envelope.read_bytes())
        (drop / "broken.xml").write_bytes(b"<RequestResource xmlns='urn:x'>")
        await until(lambda: (tmp_path / "fire" / "drop" / "done" / "broken.xml").exists())
        await until(lambda: (tmp_path / "fire" / "drop" / "done" / envelope.name).exists())
        reasons = [p.read_text() for p in (tmp_path / "fire" / "rejected").glob("*.reason.json")]
        assert len(reasons) == 1 and "broken.xml" in reasons[0] and "XML" in reasons[0]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    published = fire.metrics.registry.get_sample_value(
        "dutylink_adapter_events_published_total", {"adapter": "edxl"}
    )
    # the request; then the envelope's CAP alert and its request (the same message id as the
    # first file's: a duplicate for the gateway, counted as published, stored once)
    assert published == 3
    assert len(list(outbox.glob("*.xml"))) == 1
