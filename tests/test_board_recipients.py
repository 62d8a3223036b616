"""Whom each event of an incident's timeline went to and what the policy withheld from whom, over
gRPC on a real NATS with the sample policies: the command centre sees it for every event, a
sender for its own, nobody else at all; a policy change does not rewrite what was decided; a
recipient's acknowledgement shows on its line."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import board_pb2, event_pb2, gateway_pb2
from gateway.cli.demo_scenario import scenario
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.test_board_service import play_the_demo, tracked_in
from tests.test_tracker_scenarios import next_of_type

EXERCISE = event_pb2.PLANE_EXERCISE
RECEIVES = board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES
REDACTED = board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES_REDACTED
WITHHELD = board_pb2.BOARD_RECIPIENT_OUTCOME_WITHHELD


def entry_of(
    incident: board_pb2.BoardIncident, event_type: str, source: str
) -> board_pb2.BoardEntry:
    return next(
        e for e in incident.timeline if (e.event.type, e.event.source) == (event_type, source)
    )


def by_agency(entry: board_pb2.BoardEntry) -> dict[str, board_pb2.BoardRecipient]:
    return {recipient.agency: recipient for recipient in entry.recipients}


async def health_on_the_assignment(
    command: DutyLinkClient, incident_id: str, event_id: str, status: int
) -> gateway_pb2.TrackedRecipient:
    """Health's tracked status on the assignment's line, once it reads `status` (the tracker
    takes deliveries and answers in moments after they happen)."""
    async with asyncio.timeout(30):
        while True:
            incident = await command.incident(incident_id, plane=EXERCISE)
            entries = [e for e in incident.timeline if e.event.id == event_id]
            health = by_agency(entries[0]).get("health") if entries else None
            if health is not None and health.tracked.status == status:
                return health.tracked
            await asyncio.sleep(0.1)


def decisions(recipients: Sequence[board_pb2.BoardRecipient]) -> list[tuple[str, int, str]]:
    """What was decided for each agency, without the tracker's status (which moves on)."""
    return [(r.agency, r.outcome, ", ".join(r.rule_ids) or r.reason) for r in recipients]


async def test_the_command_centre_sees_who_received_each_event_and_what_was_withheld_by_rule(
    nats_url: str, policy_dir: Path
) -> None:
    config = config_for_tests(policy={"dir": str(policy_dir)})  # the sample policies
    async with gateway_for_tests(nats_url, config) as gateway:
        incident_id, _, _ = await play_the_demo(gateway)
        version = gateway._deps.authorizer.policy.version  # type: ignore[union-attr]
        async with DutyLinkClient(gateway.address, token=TOKENS["command"]) as command:
            seen = await tracked_in(command, incident_id, messages=6)
        report = by_agency(entry_of(seen, "incident.reported", "fire"))
        known = {agency.id for agency in config.agencies}
        assert set(report) == known - {"fire"}, "every agency the gateway knows but the sender"
        transport = report["transport"]
        assert transport.outcome == REDACTED
        assert "incident.reporter" in transport.redacted_fields
        assert list(transport.rule_ids) == ["responders-receive-incidents"]
        assert (report["police"].outcome, list(report["police"].redacted_fields)) == (RECEIVES, [])
        housing = report["housing"]  # a RESTRICTED chemical fire is none of its business
        assert (housing.outcome, list(housing.rule_ids), housing.reason) == (
            WITHHELD,
            [],
            "no rule allows",
        )
        assert report["audit"].outcome == WITHHELD
        assert {r.policy_version for r in report.values()} == {version}
        assert not any(r.policy_not_archived for r in report.values()), "the archive had the policy"
        # A deny rule withholds the public warnings from the auditors, whom they would reach.
        public = [
            e for e in seen.timeline if e.event.classification == event_pb2.CLASSIFICATION_PUBLIC
        ]
        assert public
        for entry in public:
            audit = by_agency(entry)["audit"]
            assert (audit.outcome, list(audit.rule_ids), audit.reason) == (
                WITHHELD,
                ["auditors-receive-no-events"],
                "denied by rule auditors-receive-no-events",
            )

        # The assignment is tracked: those who took it show acknowledged, and when.
        assignment = by_agency(entry_of(seen, "incident.assigned", "command"))
        taken = {
            agency: r.tracked
            for agency, r in assignment.items()
            if r.tracked.status == gateway_pb2.RECIPIENT_STATUS_ACKNOWLEDGED
        }
        assert len(taken) == 5 and all(t.HasField("answered_at") for t in taken.values())
        (message,) = [m for m in seen.acknowledgements if m.event_type == "incident.assigned"]
        assert {r.agency: r for r in message.recipients if r.agency in taken} == taken
        assert not assignment["audit"].HasField("tracked"), "never meant for it"


async def test_only_the_sender_and_the_command_centre_are_told_an_events_recipients(
    nats_url: str,
) -> None:
    async with gateway_for_tests(nats_url, config_for_tests()) as gateway:
        incident_id, _, _ = await play_the_demo(gateway)
        async with (
            DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        ):
            as_police = await police.incident(incident_id, plane=EXERCISE)
            as_fire = await fire.incident(incident_id, plane=EXERCISE)
    for entry in as_police.timeline:
        assert bool(entry.recipients) == (entry.event.source == "police"), entry.event.type
    assert any(e.event.source == "fire" for e in as_police.timeline)
    assert "police" not in by_agency(entry_of(as_police, "incident.progress", "police"))
    for entry in as_fire.timeline:
        assert bool(entry.recipients) == (entry.event.source == "fire"), entry.event.type


async def test_a_policy_change_does_not_rewrite_whom_an_earlier_event_went_to(
    nats_url: str, policy_dir: Path
) -> None:
    config = config_for_tests(policy={"dir": str(policy_dir), "reload_seconds": 0.1})
    async with gateway_for_tests(nats_url, config) as gateway:
        report, verification = scenario(datetime.now(UTC))[:2]
        incident_id = report.event.incident.incident_id
        async with (
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
            DutyLinkClient(gateway.address, token=TOKENS["command"]) as command,
        ):
            receipt = await fire.publish(report.event)
            assert await gateway.board.folded_up_to(receipt.stream_sequence, timeout=30)
            then = datetime.now(UTC)
            before = await command.incident(incident_id, plane=EXERCISE)
            old = gateway._deps.authorizer.policy.version  # type: ignore[union-attr]
            assert by_agency(before.timeline[0])["transport"].outcome == REDACTED
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
            archive = gateway._policy_archive
            assert archive is not None
            async with asyncio.timeout(20):  # in force, and on record in the archive
                while True:
                    in_force = await archive.in_force_at(datetime.now(UTC))
                    if in_force is not None and in_force.version != old:
                        break
                    await asyncio.sleep(0.05)
            receipt = await fire.publish(verification.event)
            assert await gateway.board.folded_up_to(receipt.stream_sequence, timeout=30)
            after = await command.incident(incident_id, plane=EXERCISE)
            replayed = await command.incident(incident_id, plane=EXERCISE, as_of=then)
        earlier, later = after.timeline
        assert decisions(earlier.recipients) == decisions(before.timeline[0].recipients)
        assert by_agency(earlier)["transport"].policy_version == old
        moved = by_agency(later)["transport"]
        assert (moved.outcome, moved.reason) == (WITHHELD, "no rule allows")
        assert moved.policy_version not in ("", old)
        (then_entry,) = replayed.timeline  # as of then: the report only, judged as it was
        assert decisions(then_entry.recipients) == decisions(before.timeline[0].recipients)


async def test_a_tracked_events_line_shows_when_the_recipient_got_it_and_when_it_took_it(
    nats_url: str,
) -> None:
    report, verification, assignment = scenario(datetime.now(UTC))[:3]
    assert "health" in assignment.event.incident.involved_agencies
    incident_id = report.event.incident.incident_id
    async with (
        gateway_for_tests(nats_url, config_for_tests()) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        DutyLinkClient(gateway.address, token=TOKENS["command"]) as command,
        DutyLinkClient(gateway.address, token=TOKENS["health"]) as health,
    ):
        for event in (report.event, verification.event):
            await fire.publish(event)
        async with health.subscribe("desk", families=["incident"], planes=[EXERCISE]) as inbox:
            await command.publish(assignment.event)
            taken = await next_of_type(inbox, "incident.assigned")
        delivered = await health_on_the_assignment(
            command, incident_id, assignment.event.id, gateway_pb2.RECIPIENT_STATUS_DELIVERED
        )
        assert delivered.HasField("delivered_at") and not delivered.HasField("answered_at")
        await health.publish(acknowledgement_of(taken.event, by="desk 2"))
        acknowledged = await health_on_the_assignment(
            command, incident_id, assignment.event.id, gateway_pb2.RECIPIENT_STATUS_ACKNOWLEDGED
        )
    assert acknowledged.delivered_at == delivered.delivered_at
    assert acknowledged.answered_at.ToDatetime() >= acknowledged.delivered_at.ToDatetime()
    assert acknowledged.answered_by == "desk 2"
