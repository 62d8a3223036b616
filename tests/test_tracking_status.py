"""Asking for the acknowledgement status of a message over gRPC and the CLI, on a real NATS: the
sender and the command centre are told who took it; anyone else, and anyone asking about a
message never tracked, is told NOT_FOUND in the same words; the pending list shows a message
until every recipient answered; every answer is in the audit log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from urllib.parse import urlparse

import grpc
import pytest

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.adapters.sdk.retry import NO_RETRY
from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2
from gateway.server import Gateway
from gateway.store.nats_server import NatsServer
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS, agency_clients
from tests.test_audit_facts import logged
from tests.test_cli_exchange import dutylink
from tests.test_tracker_scenarios import DEADLINES, RECIPIENTS, extreme_warning


@pytest.fixture
async def tracking_gateway(nats_url: str, policy_dir: Path) -> AsyncIterator[Gateway]:
    (policy_dir / "deadlines.yaml").write_text(DEADLINES)
    config = config_for_tests(policy={"dir": str(policy_dir)}, tracking={"check_seconds": 0.2})
    async with gateway_for_tests(nats_url, config) as running:
        yield running


async def status_once_tracked(
    client: DutyLinkClient, event_id: str, sender: str = "ecology", answered: int = 0
) -> gateway_pb2.TrackedMessage:
    """The status, once tracking started (moments after the message is stored) and at least
    `answered` recipients took or declined it."""
    async with asyncio.timeout(30):
        while True:
            try:
                message = await client.status(event_id, sender=sender)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            else:
                if message.summary.acknowledged + message.summary.declined >= answered:
                    return message
            await asyncio.sleep(0.1)


async def pending_ids(client: DutyLinkClient) -> list[str]:
    return [message.event_id for message in (await client.pending()).messages]


async def refusal(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def test_the_sender_and_the_command_centre_see_who_took_it_and_who_did_not(
    tracking_gateway: Gateway,
) -> None:
    async with agency_clients(tracking_gateway.address) as client_for:
        ecology, command = await client_for("ecology"), await client_for("command")
        warning = extreme_warning()
        await ecology.publish(warning)
        await (await client_for("fire")).publish(acknowledgement_of(warning, by="duty 3"))
        await (await client_for("police")).publish(
            acknowledgement_of(warning, decline_reason="not our area")
        )
        as_sender = await status_once_tracked(ecology, warning.id, answered=2)
        assert as_sender.summary.text == (
            "delivered 2 of 3, acknowledged 1, declined 1, pending 1: transport"
        )
        by_agency = {r.agency: r for r in as_sender.recipients}
        assert sorted(by_agency) == sorted(RECIPIENTS)
        assert by_agency["fire"].status == gateway_pb2.RECIPIENT_STATUS_ACKNOWLEDGED
        assert by_agency["fire"].answered_by == "duty 3"
        assert by_agency["police"].status == gateway_pb2.RECIPIENT_STATUS_DECLINED
        assert by_agency["police"].reason == "not our area"
        assert by_agency["transport"].status == gateway_pb2.RECIPIENT_STATUS_PENDING
        assert [d.id for d in as_sender.deadlines] == ["extreme-warning-acknowledged"]
        assert as_sender.deadlines[0].levels == 2 and as_sender.rules_version

        as_command = await command.status(warning.id, sender="ecology")
        assert as_command.summary == as_sender.summary


async def test_an_uninvolved_agency_is_told_not_found_as_for_a_message_never_tracked(
    tracking_gateway: Gateway,
) -> None:
    async with agency_clients(tracking_gateway.address) as client_for:
        ecology, health = await client_for("ecology"), await client_for("health")
        fire = await client_for("fire")  # a recipient is not the sender either
        warning = extreme_warning()
        await ecology.publish(warning)
        await status_once_tracked(ecology, warning.id)
        for outsider in (health, fire):
            hidden = await refusal(outsider.status(warning.id, sender="ecology"))
            unknown = await refusal(outsider.status("W-NEVER-SENT", sender="ecology"))
            assert hidden.code() == unknown.code() == grpc.StatusCode.NOT_FOUND
            assert (
                hidden.details() == f"no tracked message ecology/{warning.id} on the actual plane"
            )
            assert (
                unknown.details() == "no tracked message ecology/W-NEVER-SENT on the actual plane"
            )
        unknown = await refusal(ecology.status("W-NEVER-SENT"))
        assert unknown.code() == grpc.StatusCode.NOT_FOUND
        invalid = await refusal(ecology.status("no spaces allowed"))
        assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await pending_ids(health) == []
        assert (await health.pending(sender="ecology")).messages == []


async def test_a_message_is_pending_while_a_recipient_is_silent_and_not_once_all_answered(
    tracking_gateway: Gateway,
) -> None:
    async with agency_clients(tracking_gateway.address) as client_for:
        ecology, command = await client_for("ecology"), await client_for("command")
        older, newer = extreme_warning(), extreme_warning()
        await ecology.publish(older)
        await ecology.publish(newer)
        await status_once_tracked(ecology, newer.id)
        await status_once_tracked(ecology, older.id)
        assert await pending_ids(ecology) == [newer.id, older.id]  # newest first
        assert await pending_ids(command) == [newer.id, older.id]
        page = await command.pending(limit=1)
        assert [m.event_id for m in page.messages] == [newer.id] and page.truncated

        for agency in RECIPIENTS:
            await (await client_for(agency)).publish(acknowledgement_of(older))
        await status_once_tracked(ecology, older.id, answered=len(RECIPIENTS))
        assert await pending_ids(ecology) == [newer.id]
        assert (await command.pending(plane=event_pb2.PLANE_EXERCISE)).messages == []


async def test_every_status_answer_and_refusal_is_in_the_audit_log(
    tracking_gateway: Gateway, nats_url: str
) -> None:
    async with agency_clients(tracking_gateway.address) as client_for:
        ecology, command = await client_for("ecology"), await client_for("command")
        warning = extreme_warning()
        await ecology.publish(warning)
        await status_once_tracked(ecology, warning.id)
        answer = await command.status(warning.id, sender="ecology")
        await refusal((await client_for("health")).status(warning.id, sender="ecology"))
        await command.pending()

    queries = [e for e in await logged(nats_url) if e.action == audit_pb2.AUDIT_ACTION_STATUS_QUERY]
    by_command = [e for e in queries if e.actor_agency == "command"]
    asked, listed = by_command
    assert asked.outcome == audit_pb2.AUDIT_OUTCOME_OK
    assert (asked.event_id, asked.recipient_agency) == (warning.id, "ecology")
    assert asked.reason == answer.summary.text
    sent = gateway_pb2.GetStatusResponse(message=answer).SerializeToString()
    assert asked.event_digest == hashlib.sha256(sent).digest()
    assert listed.outcome == audit_pb2.AUDIT_OUTCOME_OK and not listed.event_id
    (denied,) = [e for e in queries if e.actor_agency == "health"]
    assert denied.outcome == audit_pb2.AUDIT_OUTCOME_DENIED and denied.event_id == warning.id


async def test_without_lifecycles_status_is_refused_as_a_precondition(nats_url: str) -> None:
    config = config_for_tests(gateway={"enforce_lifecycles": False})
    async with (
        gateway_for_tests(nats_url, config) as running,
        agency_clients(running.address) as client_for,
    ):
        refused = await refusal((await client_for("ecology")).status("W-1"))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lifecycles are off" in (refused.details() or "")


@pytest.mark.slow
async def test_a_status_the_store_cannot_read_is_unavailable_to_ask_again(
    tmp_path: Path, policy_dir: Path
) -> None:
    if os.environ.get("NATS_URL"):
        pytest.skip("kills its own nats-server; unset NATS_URL to run it")
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    port = urlparse(url).port
    (policy_dir / "deadlines.yaml").write_text(DEADLINES)
    config = config_for_tests(policy={"dir": str(policy_dir)})
    try:
        async with (
            gateway_for_tests(url, config) as running,
            DutyLinkClient(running.address, token=TOKENS["ecology"], retry=NO_RETRY) as ecology,
        ):
            warning = extreme_warning()
            await ecology.publish(warning)
            await status_once_tracked(ecology, warning.id)
            server.kill()
            refused = await refusal(ecology.status(warning.id, timeout=30))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            assert "reading the status failed" in (refused.details() or "")
            # Back before the gateway stops, which would otherwise wait out its reconnects.
            server = NatsServer(tmp_path / "nats", port=port)
            await server.start()
    finally:
        await server.stop()


async def test_the_cli_prints_the_summary_then_each_recipient_or_one_json_object(
    tracking_gateway: Gateway,
) -> None:
    async with agency_clients(tracking_gateway.address) as client_for:
        ecology = await client_for("ecology")
        warning = extreme_warning()
        await ecology.publish(warning)
        await (await client_for("fire")).publish(acknowledgement_of(warning, by="duty 3"))
        await status_once_tracked(ecology, warning.id, answered=1)
    as_command = ("--target", tracking_gateway.address, "--token", TOKENS["command"])

    code, out, err = await dutylink("status", warning.id, "--sender", "ecology", *as_command)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "delivered 1 of 3, acknowledged 1, declined 0, pending 2: police, transport"
    assert lines[1].startswith("  fire: acknowledged ") and lines[1].endswith(" by duty 3")
    assert lines[2:4] == ["  police: pending", "  transport: pending"]
    assert lines[4].startswith("deadline extreme-warning-acknowledged: due ")

    code, out, err = await dutylink(
        "status", warning.id, "--sender", "ecology", "--json", *as_command
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["summary"]["text"] == lines[0]
    assert [r["agency"] for r in answer["recipients"]] == ["fire", "police", "transport"]

    code, out, err = await dutylink("pending", "--json", *as_command)
    assert code == 0, err
    assert [m["eventId"] for m in json.loads(out)["messages"]] == [warning.id]
    code, out, err = await dutylink("pending", *as_command)
    assert code == 0 and out.splitlines() == [f"ecology/{warning.id} (warning.alert): {lines[0]}"]

    as_health = ("--target", tracking_gateway.address, "--token", TOKENS["health"])
    code, out, err = await dutylink("status", warning.id, "--sender", "ecology", *as_health)
    assert code == 1 and not out
    assert err.strip() == (
        f"error: NOT_FOUND: no tracked message ecology/{warning.id} on the actual plane"
    )
