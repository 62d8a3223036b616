"""Crash drills: the gateway process is killed (SIGKILL) at each step of the publish path, then
restarted; the publisher retries; the audit log continues the same history and verifies, and
no event is stored without its ACCEPTED entry."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2, event_pb2
from gateway.audit.note import Verifier
from gateway.audit.verify import verify_log
from gateway.core import subjects
from gateway.store.audit_reader import read_log
from gateway.store.streams import stored_messages
from gateway.testkit.inprocess import GatewayProcess
from tests.conftest import TOKENS
from tests.factories import incident_event

pytestmark = pytest.mark.slow


# Checkpoints often, so the shutdown checkpoint is quick to come.
CHECKPOINTS = {"DUTYLINK_AUDIT_CHECKPOINT_SECONDS": "0.1"}


async def stored_event_ids(nats_url: str) -> list[str]:
    connection = await nats.connect(nats_url)
    try:
        return [
            event_pb2.Event.FromString(raw.data or b"").id
            async for raw in stored_messages(
                connection.jetstream(), subjects.EVENTS_STREAM, "dutylink.events.>"
            )
        ]
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("step", "stored_before_the_crash"),
    [("publish.admitted", False), ("publish.audited", False), ("publish.stored", True)],
)
@pytest.mark.parametrize("batch", [False, True], ids=["unary", "batch"])
@pytest.mark.parametrize("profile", ["international", "national"])
async def test_a_gateway_killed_at_any_publish_step_restarts_and_continues_one_verified_log(
    nats_url: str,
    tmp_path: Path,
    step: str,
    stored_before_the_crash: bool,
    batch: bool,
    profile: str,
) -> None:
    data_dir = tmp_path / "data"
    event, later = incident_event(), incident_event()
    settings = {**CHECKPOINTS, "DUTYLINK_AUDIT_CRYPTO_PROFILE": profile}

    gateway = GatewayProcess(
        nats_url, data_dir, env={**settings, "DUTYLINK_FAILPOINT": step}, log_level="error"
    )
    async with gateway:
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            publish = fire.publish_batch([event]) if batch else fire.publish(event)
            with pytest.raises(grpc.aio.AioRpcError) as lost:
                await publish
            assert lost.value.code() == grpc.StatusCode.UNAVAILABLE, (
                "an unknown outcome, not an answer"
            )
        assert await gateway.wait() == -signal.SIGKILL
        assert (event.id in await stored_event_ids(nats_url)) == stored_before_the_crash

        await gateway.restart(env=settings)  # same port and data directory, no failpoint
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            retried = await fire.publish(event)  # the publisher retries with the same id
            await fire.publish(later)
        assert retried.duplicate == stored_before_the_crash, "stored exactly once either way"
        assert await gateway.stop() == 0

    connection = await nats.connect(nats_url)
    try:
        stored = await read_log(connection.jetstream(), "gw-1")
    finally:
        await connection.close()
    key = Verifier.from_key_string((data_dir / "audit" / "gw-1.pub").read_text().strip())
    assert key.profile.name == profile
    report = verify_log(
        stored.entries, stored.checkpoints, key, "gw-1", frame_problems=stored.frame_problems
    )
    assert report.ok, report.problems
    assert report.latest_size == report.entries, "the shutdown checkpoint covers everything"
    entries = [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]
    starts = [e.sequence for e in entries if e.action == audit_pb2.AUDIT_ACTION_GATEWAY_START]
    assert len(starts) == 2 and starts[0] == 0, "one log, continued after the restart"
    accepted = [e.event_id for e in entries if e.outcome == audit_pb2.AUDIT_OUTCOME_ACCEPTED]
    expected_accepts = 1 if step == "publish.admitted" else 2  # audited before the crash too
    assert accepted.count(event.id) == expected_accepts
    for event_id in await stored_event_ids(nats_url):
        assert event_id in accepted, f"{event_id} was stored without its audit entry"
    # What the crash left unsettled is settled by the restart's check of the event stream:
    # stored (found at its sequence), or failed (not stored, never acknowledged).
    A = audit_pb2
    answers = [e.outcome for e in entries if e.event_id == event.id and e.outcome != A.AUDIT_OUTCOME_ACCEPTED]  # fmt: skip
    assert (
        answers
        == {
            "publish.admitted": [A.AUDIT_OUTCOME_STORED],
            "publish.audited": [A.AUDIT_OUTCOME_FAILED, A.AUDIT_OUTCOME_STORED],
            "publish.stored": [A.AUDIT_OUTCOME_STORED, A.AUDIT_OUTCOME_DUPLICATE],
        }[step]
    )
