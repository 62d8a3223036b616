"""Every fact the gateway handles leaves its audit entry: deliveries (with the digest of the
exact bytes sent and commitments to what was withheld), acks, nacks, redeliveries, dead
letters, withheld events, subscriptions, policy reloads, break-glass, start."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import grpc
import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.access.authorization import PolicyHolder
from gateway.audit import commitments
from gateway.audit.entries import schema_version
from gateway.cli.operator_audit import operator_name
from gateway.core.crypto import SHA256
from gateway.server import Gateway
from gateway.store import audit_files
from gateway.store.audit_reader import read_log
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event, warning_event

A = audit_pb2


@pytest.fixture
async def gateway(nats_url: str, policy_dir: Path, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests(
        policy={"dir": str(policy_dir), "reload_seconds": 0.1},
        nats={"data_dir": str(tmp_path / "data")},
        subscriptions={"ack_wait_seconds": 1.0, "max_deliveries": 2},
    )
    async with gateway_for_tests(nats_url, config) as running:
        yield running


def client(gateway: Gateway, agency: str) -> DutyLinkClient:
    return DutyLinkClient(gateway.address, token=TOKENS[agency])


async def logged(nats_url: str) -> list[audit_pb2.AuditEntry]:
    connection = await nats.connect(nats_url)
    try:
        stored = await read_log(connection.jetstream(), "gw-1")
    finally:
        await connection.close()
    assert not stored.frame_problems
    return [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]


async def eventually(
    nats_url: str, found: Callable[[list[audit_pb2.AuditEntry]], bool]
) -> list[audit_pb2.AuditEntry]:
    """The log once `found` holds (acks are recorded concurrently with the next delivery)."""
    for _ in range(50):
        entries = await logged(nats_url)
        if found(entries):
            return entries
        await asyncio.sleep(0.1)
    pytest.fail("the expected audit entries never appeared")


def facts(
    entries: list[audit_pb2.AuditEntry], event_id: str, recipient: str
) -> list[tuple[int, int, int]]:
    return [
        (e.action, e.outcome, e.attempt)
        for e in entries
        if e.event_id == event_id and e.recipient_agency == recipient
    ]


async def test_a_delivery_is_logged_with_the_digest_of_the_bytes_sent_and_commitments_to_what_was_withheld(
    gateway: Gateway, nats_url: str, tmp_path: Path
) -> None:
    event = incident_event(incident_id="INC-2026-0815-001")
    event.incident.reporter.phone = "13812345678"
    event.incident.reporter.name = "Wang Fang"
    async with client(gateway, "transport") as transport, client(gateway, "police") as police:
        roads = transport.subscribe("roads", families=["incident"])
        desk = police.subscribe("desk", families=["incident"])
        await roads.open()
        await desk.open()
        async with client(gateway, "fire") as fire:
            await fire.publish(event)
        to_transport = await roads.next(timeout=10)
        original = await desk.next(timeout=10)
        assert to_transport is not None and original is not None
        await roads.ack(to_transport)
        await desk.nack(original)
        again = await desk.next(timeout=10)
        assert again is not None and again.attempt == 2
        await desk.ack(again)
        entries = await eventually(
            nats_url, lambda log: (A.AUDIT_ACTION_ACK, A.AUDIT_OUTCOME_OK, 2) in facts(log, event.id, "police")
        )  # fmt: skip
        await roads.close()
        await desk.close()

    assert facts(entries, event.id, "transport") == [
        (A.AUDIT_ACTION_DELIVER, A.AUDIT_OUTCOME_OK, 1),
        (A.AUDIT_ACTION_ACK, A.AUDIT_OUTCOME_OK, 1),
    ]
    assert facts(entries, event.id, "police") == [
        (A.AUDIT_ACTION_DELIVER, A.AUDIT_OUTCOME_OK, 1),
        (A.AUDIT_ACTION_NACK, A.AUDIT_OUTCOME_OK, 1),
        (A.AUDIT_ACTION_REDELIVER, A.AUDIT_OUTCOME_OK, 2),
        (A.AUDIT_ACTION_ACK, A.AUDIT_OUTCOME_OK, 2),
    ]
    (delivered,) = [
        e for e in entries if e.action == A.AUDIT_ACTION_DELIVER and e.recipient_agency == "transport"
    ]  # fmt: skip
    assert delivered.event_digest == hashlib.sha256(to_transport.event.SerializeToString()).digest()
    assert (
        delivered.subscription == "roads" and delivered.stream_sequence == original.stream_sequence
    )
    assert list(delivered.rule_ids) == list(to_transport.rule_ids)
    assert delivered.policy_version == to_transport.policy_version
    assert list(delivered.withheld_fields) == ["incident.reporter"]
    incident_entries = [e for e in entries if list(e.incident_ids) == ["INC-2026-0815-001"]]
    assert {e.action for e in incident_entries} >= {
        A.AUDIT_ACTION_PUBLISH, A.AUDIT_ACTION_DELIVER, A.AUDIT_ACTION_ACK, A.AUDIT_ACTION_NACK
    }  # fmt: skip
    serialized = b"".join(e.SerializeToString() for e in entries)
    assert b"13812345678" not in serialized and b"Wang Fang" not in serialized, "no personal data"

    # An auditor given the original event and the salt proves what was withheld from transport...
    key = audit_files.load_or_create_key(tmp_path / "data" / "audit" / "commitment.key")
    (commitment,) = delivered.withheld_commitments
    salt = commitments.salt(key, event.id, "transport", "incident.reporter", SHA256)
    assert commitment.path == "incident.reporter"
    assert (
        commitments.commitment(salt, original.event, "incident.reporter", SHA256)
        == commitment.commitment
    )
    # ...and any other value fails to match.
    forged = event_pb2.Event()
    forged.CopyFrom(original.event)
    forged.incident.reporter.phone = "13900000000"
    assert (
        commitments.commitment(salt, forged, "incident.reporter", SHA256) != commitment.commitment
    )
    police_delivery = next(e for e in entries if e.recipient_agency == "police")
    assert not police_delivery.withheld_commitments


async def test_an_event_the_policy_keeps_from_a_subscriber_is_logged_as_withheld(
    gateway: Gateway, nats_url: str
) -> None:
    restricted = incident_event()
    restricted.classification = event_pb2.CLASSIFICATION_RESTRICTED  # above weather's clearance
    async with client(gateway, "weather") as weather, client(gateway, "ecology") as ecology:
        everything = weather.subscribe("everything")
        await everything.open()
        async with client(gateway, "fire") as fire:
            await fire.publish(restricted)
        public = warning_event()
        await ecology.publish(public)
        delivery = await everything.next(timeout=10)
        assert delivery is not None and delivery.event.id == public.id
        await everything.close()
    entries = await logged(nats_url)
    (withheld,) = [e for e in entries if e.event_id == restricted.id and e.recipient_agency == "weather"]  # fmt: skip
    assert (withheld.action, withheld.outcome) == (A.AUDIT_ACTION_DELIVER, A.AUDIT_OUTCOME_DENIED)
    assert withheld.reason and withheld.policy_version and not withheld.event_digest


async def test_an_event_never_acked_is_logged_at_every_delivery_and_when_dead_lettered(
    gateway: Gateway, nats_url: str
) -> None:
    event = warning_event()
    async with client(gateway, "transport") as transport, client(gateway, "ecology") as ecology:
        poison = transport.subscribe("poison", families=["warning"])
        await poison.open()
        await ecology.publish(event)
        for attempt in (1, 2):
            delivery = await poison.next(timeout=10)
            assert delivery is not None and delivery.attempt == attempt  # never acked
        entries = await eventually(
            nats_url,
            lambda log: any(e.action == A.AUDIT_ACTION_DEAD_LETTER for e in log),
        )
        await poison.close()
    assert facts(entries, event.id, "transport") == [
        (A.AUDIT_ACTION_DELIVER, A.AUDIT_OUTCOME_OK, 1),
        (A.AUDIT_ACTION_REDELIVER, A.AUDIT_OUTCOME_OK, 2),
        (A.AUDIT_ACTION_DEAD_LETTER, A.AUDIT_OUTCOME_OK, 3),
    ]
    dead = next(e for e in entries if e.action == A.AUDIT_ACTION_DEAD_LETTER)
    assert dead.reason == "not acknowledged after 2 deliveries"


async def test_a_dead_letter_replay_is_logged_with_who_which_and_to_whom(
    gateway: Gateway, nats_url: str, tmp_path: Path
) -> None:
    event = warning_event()
    async with client(gateway, "transport") as transport, client(gateway, "ecology") as ecology:
        poison = transport.subscribe("poison", families=["warning"])
        await poison.open()
        await ecology.publish(event)
        for _ in (1, 2):
            assert await poison.next(timeout=10) is not None  # never acked
        await eventually(
            nats_url, lambda log: any(e.action == A.AUDIT_ACTION_DEAD_LETTER for e in log)
        )
        await poison.close()
    operator_dir = tmp_path / "operator"
    replay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "deadletter", "replay", "1",
        "--nats-url", nats_url, "--data-dir", str(operator_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, errors = await replay.communicate()
    assert replay.returncode == 0, errors.decode()
    assert f"event {event.id} replayed to transport/poison" in output.decode()

    connection = await nats.connect(nats_url)
    try:
        stored = await read_log(connection.jetstream(), "gw-1-operator")
    finally:
        await connection.close()
    (entry,) = [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]
    assert entry.action == A.AUDIT_ACTION_DEAD_LETTER_REPLAY
    assert entry.outcome == A.AUDIT_OUTCOME_ACCEPTED
    assert entry.actor_agency == operator_name()  # who
    assert (entry.event_id, entry.event_type) == (event.id, event.type)  # which
    assert (entry.recipient_agency, entry.subscription) == ("transport", "poison")  # to whom
    assert entry.reason == f"dead letter 1 replayed by {operator_name()}"
    assert (operator_dir / "audit" / "gw-1-operator.key").stat().st_mode & 0o777 == 0o600
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "audit", "verify", "--gateway-id", "gw-1-operator",
        "--nats-url", nats_url, "--data-dir", str(operator_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    verified, problems = await verify.communicate()
    assert verify.returncode == 0, (verified + problems).decode()


async def test_subscriptions_policy_reloads_and_break_glass_are_logged(
    gateway: Gateway, nats_url: str, policy_dir: Path
) -> None:
    async with client(gateway, "transport") as transport:
        fine = transport.subscribe("fine", families=["warning"])
        await fine.open()
        await fine.close()
        broad = transport.subscribe("broad", jurisdiction_prefixes=[f"31{n:02}" for n in range(99)])
        with pytest.raises(grpc.aio.AioRpcError):
            await broad.open()

    rules = policy_dir / "rules.yaml"
    rules.write_text(rules.read_text() + "\n  # a reviewed change\n")
    await asyncio.sleep(0.4)
    rules.write_text("rules:\n  - id: broken\n    effect: maybe\n")
    await asyncio.sleep(0.4)

    async with grpc.aio.insecure_channel(gateway.address) as channel:
        breakglass = gateway_pb2_grpc.BreakGlassServiceStub(channel)
        request = gateway_pb2.DeclareEmergencyRequest(
            incident_id="INC-2026-0815-001", agencies=["transport"], fields=["incident.reporter"],
            reason="Trapped workers: escorts need the caller's phone (Wang Fang)",
        )  # fmt: skip
        request.duration.FromTimedelta(timedelta(minutes=5))
        with pytest.raises(grpc.aio.AioRpcError):
            await breakglass.DeclareEmergency(
                request, metadata=(("authorization", f"Bearer {TOKENS['fire']}"),)
            )
        declared = await breakglass.DeclareEmergency(
            request, metadata=(("authorization", f"Bearer {TOKENS['command']}"),)
        )

    entries = await logged(nats_url)
    start = entries[0]
    assert start.action == A.AUDIT_ACTION_GATEWAY_START
    assert start.schema_version == schema_version() and len(start.schema_version) == 64
    assert start.policy_version == PolicyHolder(SAMPLE_DIR).version

    subscribes = [(e.actor_agency, e.subscription, e.outcome) for e in entries if e.action == A.AUDIT_ACTION_SUBSCRIBE]  # fmt: skip
    assert subscribes == [
        ("transport", "fine", A.AUDIT_OUTCOME_OK),
        ("transport", "broad", A.AUDIT_OUTCOME_INVALID),
    ]

    reloads = [e for e in entries if e.action == A.AUDIT_ACTION_POLICY_RELOAD]
    assert [e.outcome for e in reloads] == [A.AUDIT_OUTCOME_OK, A.AUDIT_OUTCOME_INVALID]
    assert reloads[0].policy_version != start.policy_version
    assert reloads[1].policy_version == reloads[0].policy_version, "the old version stays"
    assert "effect" in reloads[1].reason

    glass = [e for e in entries if e.action == A.AUDIT_ACTION_BREAK_GLASS]
    assert [(e.actor_agency, e.outcome) for e in glass] == [
        ("fire", A.AUDIT_OUTCOME_DENIED),
        ("command", A.AUDIT_OUTCOME_ACCEPTED),
    ]
    assert glass[1].grant_id == declared.grant.id
    assert glass[1].event_digest == hashlib.sha256(declared.grant.SerializeToString()).digest()
    assert b"Wang Fang" not in glass[1].SerializeToString(), "free text stays in the grant record"
