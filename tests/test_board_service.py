"""The duty board over gRPC on a real NATS: the demo's incident as every sample agency sees it
(nothing its policy withholds, on the full access matrix), a board rebuilt after a restart equal
to the live one, live changes, NOT_FOUND for what an agency may not see, and every answer in the
audit log."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.adapters.sdk.retry import NO_RETRY
from dutylink.policies.redaction import redact
from dutylink.v1 import audit_pb2, board_pb2, event_pb2
from gateway.access.auth import Principal
from gateway.cli.demo_scenario import scenario
from gateway.core.projections.board import IncidentKey
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests, nats_for_tests
from tests.conftest import TOKENS
from tests.test_audit_facts import logged
from tests.test_cli_exchange import dutylink

EXERCISE = event_pb2.PLANE_EXERCISE


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    async with nats_for_tests(tmp_path / "nats") as url:
        yield url


async def play_the_demo(gateway: Gateway) -> tuple[str, list[event_pb2.Event], int]:
    """The demo's story through the gateway, each step as its agency: the incident's id, the
    events as stored (in order) and the last stream sequence, once the board holds them all."""
    clients: dict[str, DutyLinkClient] = {}
    stored: list[event_pb2.Event] = []
    last = 0
    try:
        for step in scenario(datetime.now(UTC)):
            if step.agency not in clients:
                clients[step.agency] = DutyLinkClient(gateway.address, token=TOKENS[step.agency])
            receipt = await clients[step.agency].publish(step.event)
            last = max(last, receipt.stream_sequence)
            stored.append(step.event)
    finally:
        for client in clients.values():
            await client.close()
    assert await gateway.board.folded_up_to(last, timeout=30)
    return scenario_incident(stored), stored, last


async def tracked_in(
    client: DutyLinkClient, incident_id: str, *, messages: int
) -> board_pb2.BoardIncident:
    """The incident once the tracker has taken in its `messages` tracked messages and their
    answers (it reads the stream moments after the board does)."""
    async with asyncio.timeout(30):
        while True:
            incident = await client.incident(incident_id, plane=EXERCISE)
            statuses = incident.acknowledgements
            answered = sum(m.summary.acknowledged + m.summary.declined for m in statuses)
            if len(statuses) == messages and answered >= 5:
                return incident
            await asyncio.sleep(0.1)


def scenario_incident(events: list[event_pb2.Event]) -> str:
    return events[0].incident.incident_id


async def test_every_agency_sees_the_incident_folded_from_what_it_may_receive_redacted(
    nats_url: str, policy_dir: Path
) -> None:
    config = config_for_tests(policy={"dir": str(policy_dir)})  # the sample policies
    async with gateway_for_tests(nats_url, config) as gateway:
        incident_id, _, _ = await play_the_demo(gateway)
        authorizer = gateway._deps.authorizer  # type: ignore[union-attr]
        policy = authorizer.policy
        board = gateway.board.board
        seen_any = False  # some agency is shown less than everything: the matrix bites
        for agency in sorted(policy.agency_ids):
            async with DutyLinkClient(gateway.address, token=TOKENS[agency], retry=NO_RETRY) as c:
                stored_events = [
                    s.event for s in board.timeline(IncidentKey(EXERCISE, incident_id))
                ]  # as stored: stamped with source and receive time
                profile = policy.agency(agency)
                principal = Principal(agency, profile.roles if profile else frozenset())
                expected = []
                for event in stored_events:
                    if event.source == agency:
                        expected.append(event)
                        continue
                    decision = authorizer.decide(principal, "receive", event, datetime.now(UTC))
                    if decision.allowed:
                        sent, _ = redact(event, decision.redacted_fields)
                        expected.append(sent)
                seen_any = seen_any or len(expected) < len(stored_events)
                if not expected:
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await c.incident(incident_id, plane=EXERCISE)
                    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, agency
                    continue
                incident = await c.incident(incident_id, plane=EXERCISE)
                assert [e.event for e in incident.timeline] == expected, agency
                for entry in incident.timeline:  # nothing left that the policy withholds
                    if entry.event.source != agency:
                        decision = authorizer.decide(
                            principal, "receive", entry.event, datetime.now(UTC)
                        )
                        assert redact(entry.event, decision.redacted_fields)[1] == (), agency
        assert seen_any
        async with DutyLinkClient(gateway.address, token=TOKENS["transport"]) as transport:
            seen = await transport.incident(incident_id, plane=EXERCISE)
            reports = [e.event for e in seen.timeline if e.event.type == "incident.reported"]
            assert reports and not any(r.incident.HasField("reporter") for r in reports)


async def test_the_board_rebuilt_after_a_restart_equals_the_live_one(nats_url: str) -> None:
    config = config_for_tests()
    async with gateway_for_tests(nats_url, config) as gateway:
        incident_id, _, last = await play_the_demo(gateway)
        live = gateway.board.board.fingerprint()
        live_metrics = gateway.metrics.registry
        async with DutyLinkClient(gateway.address, token=TOKENS["command"]) as command:
            before = await command.board(plane=EXERCISE, include_finished=True)
            detail = await tracked_in(command, incident_id, messages=6)
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            own = (await fire.incident(incident_id, plane=EXERCISE)).acknowledgements
            assert {m.sender for m in own} == {"fire"}, "its own messages only"
    (assignment,) = [m for m in detail.acknowledgements if m.event_type == "incident.assigned"]
    assert assignment.sender == "command" and assignment.summary.acknowledged == 5
    async with gateway_for_tests(nats_url, config) as restarted:
        assert await restarted.board.folded_up_to(last, timeout=30)
        assert restarted.board.board.fingerprint() == live
        restarted_metrics = restarted.metrics.registry
        async with DutyLinkClient(restarted.address, token=TOKENS["command"]) as command:
            after = await command.board(plane=EXERCISE, include_finished=True)
            assert await command.incident(incident_id, plane=EXERCISE) == detail
        as_command = ("--target", restarted.address, "--token", TOKENS["command"])
        code, out, err = await dutylink("board", "31", "--plane", "EXERCISE", *as_command)
        assert (code, out) == (0, "no incidents\n"), err  # closed: off the board of open ones
        code, out, err = await dutylink("board", "--all", "--plane", "EXERCISE", *as_command)
        assert code == 0, err
        assert out.startswith(f"{incident_id} [310115] {detail.title}: closed, lead fire")
        code, out, err = await dutylink("incident", incident_id, "--plane", "EXERCISE", *as_command)
        lines = out.splitlines()
        assert code == 0 and lines[0].startswith(f"{incident_id} [310115] {detail.title}: closed")
        assert lines[1].startswith("agencies: fire, ")
        assert any(
            line.startswith(f"  taken: command/{assignment.event_id} (incident.assigned): ")
            for line in lines
        )
        events = [line for line in lines if not line.startswith(" ")]
        assert events[-1].endswith(" command: incident.closed (EXERCISE)")
        # Under each event, whom it went to (the command centre is shown every event's).
        closing = lines[lines.index(events[-1]) + 1 :]
        assert "    transport: receives by anyone-receives-anything" in closing
        assert any(line.startswith("    audit: withheld (unknown agency") for line in closing)
        code, out, err = await dutylink("incident", "INC-NONE", "--plane", "EXERCISE", *as_command)
        assert code != 0 and "no incident INC-NONE on the exercise plane" in err
    assert [i.incident_id for i in before.incidents] == [incident_id]
    (closed,) = after.incidents
    assert closed == before.incidents[0]
    assert [s.step for s in closed.loop] == ["verify", "assign", "first_ack", "handle", "close"]
    assert closed.loop[-1].agency == "command" and closed.loop[-1].since_report.ToNanoseconds() > 0
    # The loop's metric: each step once per incident, again after a rebuild (from the stream).
    for metrics in (live_metrics, restarted_metrics):
        labels = {"step": "close", "agency": "command",
                  "category": "hazardous_chemicals", "severity": "large"}  # fmt: skip
        assert metrics.get_sample_value("dutylink_loop_seconds_count", labels) == 1
    assert closed.stage.state == "closed" and not closed.open
    assert closed.stage.lead == "fire" and closed.division_code == "310115"
    assert {"fire", "police", "command"} <= set(closed.agencies)


async def test_a_new_incident_appears_on_a_watching_board_and_every_answer_is_audited(
    nats_url: str,
) -> None:
    async with gateway_for_tests(nats_url, config_for_tests()) as gateway:
        story = scenario(datetime.now(UTC))
        report = story[0]
        async with (
            DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
            DutyLinkClient(gateway.address, token=TOKENS[report.agency]) as reporter,
        ):
            assert (await police.board(plane=EXERCISE)).incidents == []
            watching = police.watch_board("3101", plane=EXERCISE)
            first = asyncio.ensure_future(anext(watching))
            await asyncio.sleep(0.5)  # the watch is open before the report is stored
            await reporter.publish(report.event)
            async with asyncio.timeout(20):
                changed = await first
            await watching.aclose()
            assert changed.incident_id == report.event.incident.incident_id
            assert changed.stage.state == "reported" and changed.open
            board = await police.board("3101", plane=EXERCISE)
            assert [i.incident_id for i in board.incidents] == [changed.incident_id]
            assert (await police.board("4403", plane=EXERCISE)).incidents == []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await police.board("310", plane=EXERCISE)  # odd digits: not a division prefix
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    queries = [e for e in await logged(nats_url) if e.action == audit_pb2.AUDIT_ACTION_BOARD_QUERY]
    answered = [e for e in queries if e.outcome == audit_pb2.AUDIT_OUTCOME_OK]
    assert all(e.actor_agency == "police" for e in queries)
    digests = {e.event_digest for e in answered if e.event_digest}
    expected = board_pb2.GetBoardResponse(incidents=[board.incidents[0]]).SerializeToString()
    assert hashlib.sha256(expected).digest() in digests
    assert any(changed.incident_id in e.incident_ids for e in answered)
    assert [e.outcome for e in queries].count(audit_pb2.AUDIT_OUTCOME_INVALID) == 1


async def test_as_of_replay_shows_what_the_agency_was_entitled_to_then(
    nats_url: str, policy_dir: Path
) -> None:
    config = config_for_tests(policy={"dir": str(policy_dir), "reload_seconds": 0.1})
    async with gateway_for_tests(nats_url, config) as gateway:
        report = scenario(datetime.now(UTC))[0]
        async with (
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
            DutyLinkClient(gateway.address, token=TOKENS["transport"], retry=NO_RETRY) as transport,
        ):
            receipt = await fire.publish(report.event)
            assert await gateway.board.folded_up_to(receipt.stream_sequence, timeout=30)
            incident_id = report.event.incident.incident_id
            then = datetime.now(UTC)
            before = await transport.incident(incident_id, plane=EXERCISE)
            # The policy changes: transport no longer receives incidents.
            rules = policy_dir / "rules.yaml"
            rules.write_text(
                rules.read_text(encoding="utf-8").replace(
                    "agencies: [police, fire, health, emergency, transport, command]\n"
                    "    types: incident.*",
                    "agencies: [police, fire, health, emergency, command]\n    types: incident.*",
                ),
                encoding="utf-8",
            )
            old_version = gateway._deps.authorizer.policy.version  # type: ignore[union-attr]
            async with asyncio.timeout(20):
                while gateway._deps.authorizer.policy.version == old_version:  # type: ignore[union-attr]  # noqa: ASYNC110 (no event to wait on)
                    await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await transport.incident(incident_id, plane=EXERCISE)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            replayed = await transport.incident(incident_id, plane=EXERCISE, as_of=then)
            assert replayed == before, "as transport was entitled to see it then"
            assert not replayed.timeline[0].event.incident.HasField("reporter")
            board_then = await transport.board(plane=EXERCISE, as_of=then)
            assert [i.incident_id for i in board_then.incidents] == [incident_id]
            as_transport = ("--target", gateway.address, "--token", TOKENS["transport"])
            code, out, err = await dutylink(
                "incident", incident_id, "--plane", "EXERCISE", "--as-of", then.isoformat(),
                *as_transport,
            )  # fmt: skip
            assert code == 0 and out.startswith(f"{incident_id} [310115] "), err
            for moment, code in (
                (datetime(2020, 1, 1, tzinfo=UTC), grpc.StatusCode.FAILED_PRECONDITION),
                (datetime.now(UTC) + timedelta(days=1), grpc.StatusCode.INVALID_ARGUMENT),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await transport.incident(incident_id, plane=EXERCISE, as_of=moment)
                assert caught.value.code() == code, moment
    reasons = [
        e.reason for e in await logged(nats_url) if e.action == audit_pb2.AUDIT_ACTION_BOARD_QUERY
    ]
    assert any(f"under policy {old_version[:12]}" in r for r in reasons)
