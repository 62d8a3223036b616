"""Deadlines across gateway replicas, as real `dutylink serve` processes on one NATS: a replica
killed with SIGKILL while a deadline is pending does not take it along; the survivor fires it,
once, on time.

"On time" here: the notice reaches a subscriber at most TOLERANCE after the deadline fell due
(the survivor looks every CHECK_SECONDS; the rest is publishing and delivery on a shared, noisy
2-core machine). The tolerance is far below the tracker consumer's ack wait (30 s), so a timer
that waited for the dead replica's work to come back would fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from gateway.core.streams import AGGREGATES_BUCKET
from gateway.core.workflows.tracking_events import tracked_key
from tests.conftest import TOKENS
from tests.factories import extreme_warning
from tests.test_serve_processes import serving
from tests.test_tracker_scenarios import next_of_type

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WITHIN = timedelta(seconds=8)
CHECK_SECONDS = 0.5
TOLERANCE = timedelta(seconds=15)
DEADLINES = f"""
deadlines:
  - id: extreme-warning-acknowledged
    types: [warning.alert]
    severities: [EXTREME]
    urgencies: [IMMEDIATE]
    expect: acknowledged
    within: {int(WITHIN.total_seconds())}s
    escalate:
      - after: 0s
        to: [command_centre]
"""


def replica_settings(gateway_id: str, policies: Path) -> dict[str, str]:
    return {
        "DUTYLINK_GATEWAY_GATEWAY_ID": gateway_id,
        "DUTYLINK_POLICY_DIR": str(policies),
        "DUTYLINK_TRACKING_CHECK_SECONDS": str(CHECK_SECONDS),
    }


async def until_tracked(nats_url: str, key: str, within: float = 30.0) -> None:
    client = await nats.connect(nats_url)
    try:
        bucket = await client.jetstream().key_value(AGGREGATES_BUCKET)
        async with asyncio.timeout(within):
            while True:
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    if await bucket.get(key):
                        return
                await asyncio.sleep(0.1)
    finally:
        await client.close()


async def test_a_replica_killed_with_a_deadline_pending_leaves_it_to_the_survivor_once_on_time(
    tmp_path: Path, nats_url: str
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(SAMPLE_DIR, policies, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (policies / "deadlines.yaml").write_text(DEADLINES)
    async with contextlib.AsyncExitStack() as stack:
        doomed, doomed_address = await stack.enter_async_context(
            serving(tmp_path / "a", nats_url, settings=replica_settings("gw-a", policies))
        )
        _, survivor_address = await stack.enter_async_context(
            serving(tmp_path / "b", nats_url, settings=replica_settings("gw-b", policies))
        )
        ecology = await stack.enter_async_context(
            DutyLinkClient(doomed_address, token=TOKENS["ecology"])
        )
        command = await stack.enter_async_context(
            DutyLinkClient(survivor_address, token=TOKENS["command"])
        )
        escalations = await stack.enter_async_context(
            command.subscribe("duty", families=["escalation"])
        )
        warning = extreme_warning()
        await ecology.publish(warning)
        published = datetime.now(UTC)
        await until_tracked(nats_url, tracked_key(warning.plane, warning.source, warning.id))
        doomed.kill()
        await doomed.wait()
        assert datetime.now(UTC) < published + WITHIN, "killed too late to test the survivor"

        raised = await next_of_type(escalations, "escalation.raised", timeout=60.0)
        arrived = datetime.now(UTC)
        due = raised.event.escalation.due.ToDatetime(tzinfo=UTC)
        assert raised.event.escalation.event_id == warning.id
        assert list(raised.event.escalation.pending_agencies) == ["fire", "police", "transport"]
        assert arrived - due <= TOLERANCE, f"fired {arrived - due} after it fell due"
        with pytest.raises(TimeoutError):  # once: no second notice from anyone
            await next_of_type(escalations, "escalation.raised", timeout=5.0)
