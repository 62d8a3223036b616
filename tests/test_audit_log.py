"""The gateway's signed audit log: audit first, fail closed, one log continued across restarts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

import grpc
import nats
import pytest

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient
from dutylink.v1 import audit_pb2, event_pb2
from gateway.audit import merkle
from gateway.audit.entries import decode_frames, gateway_entry
from gateway.audit.log import AuditEntryRefusedError, AuditUnavailableError
from gateway.audit.note import Checkpoint, Signer, Verifier, open_note
from gateway.core import subjects
from gateway.store.audit_log import AuditLog
from gateway.store.jetstream import EventStore
from gateway.store.streams import stored_messages
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event


async def stored(nats_url: str, subject: str, stream: str) -> list[bytes]:
    client = await nats.connect(nats_url)
    found = [raw.data or b"" async for raw in stored_messages(client.jetstream(), stream, subject)]
    await client.close()
    return found


def entries_of(frames: Sequence[bytes]) -> list[audit_pb2.AuditEntry]:
    return [audit_pb2.AuditEntry.FromString(data) for data in decode_frames(frames).entries]


async def test_every_publish_is_recorded_with_the_digest_of_the_stored_bytes(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        receipt = await fire.publish(incident_event())
        invalid = incident_event()
        invalid.jurisdiction.division_code = "x"
        with pytest.raises(grpc.aio.AioRpcError):
            await fire.publish(invalid)
    (event_bytes,) = await stored(nats_url, ">", subjects.EVENTS_STREAM)
    log = entries_of(await stored(nats_url, subjects.audit_entries("gw-1"), subjects.AUDIT_STREAM))
    actions = [(e.action, e.outcome) for e in log]
    assert actions == [
        (audit_pb2.AUDIT_ACTION_GATEWAY_START, audit_pb2.AUDIT_OUTCOME_OK),
        (audit_pb2.AUDIT_ACTION_SEALING_KEYS, audit_pb2.AUDIT_OUTCOME_OK),
        (audit_pb2.AUDIT_ACTION_PUBLISH, audit_pb2.AUDIT_OUTCOME_ACCEPTED),
        # The store's answer rides with the next append (the refusal's): no extra round trip.
        (audit_pb2.AUDIT_ACTION_PUBLISH, audit_pb2.AUDIT_OUTCOME_STORED),
        (audit_pb2.AUDIT_ACTION_PUBLISH, audit_pb2.AUDIT_OUTCOME_INVALID),
        (audit_pb2.AUDIT_ACTION_GATEWAY_STOP, audit_pb2.AUDIT_OUTCOME_OK),
    ]
    accepted, stored_fact = log[2], log[3]
    assert accepted.event_digest == hashlib.sha256(event_bytes).digest()
    assert stored_fact.event_digest == accepted.event_digest
    assert stored_fact.stream_sequence == receipt.stream_sequence
    assert accepted.actor_agency == "fire" and accepted.rule_ids and accepted.policy_version
    assert event_pb2.Event.FromString(event_bytes).id == accepted.event_id
    assert receipt.stream_sequence == 1
    assert [e.sequence for e in log] == [0, 1, 2, 3, 4, 5]
    assert b"Zhang San" not in b"".join(e.SerializeToString() for e in log), (
        "no personal data in the log"
    )


async def test_when_the_audit_log_cannot_be_appended_nothing_is_accepted(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with gateway_for_tests(nats_url, config) as gateway:
        assert gateway.audit is not None

        async def unavailable(entries: Sequence[audit_pb2.AuditEntry]) -> list[int]:
            raise AuditUnavailableError("audit stream full")

        gateway.audit.append = unavailable  # type: ignore[method-assign]
        # No retries: each refusal is the answer (the SDK would retry UNAVAILABLE for a minute).
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=NO_RETRY) as fire:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await fire.publish(incident_event())
            results = await fire.publish_batch([incident_event(), incident_event()])
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [r.error.code for r in results] == [grpc.StatusCode.UNAVAILABLE.value[0]] * 2
    assert await stored(nats_url, ">", subjects.EVENTS_STREAM) == [], "nothing stored unlogged"


async def test_a_restarted_gateway_continues_the_same_log_with_consistent_signed_checkpoints(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)}, audit={"checkpoint_seconds": 0.1})
    for _ in range(2):
        async with (
            gateway_for_tests(nats_url, config) as gateway,
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        ):
            await fire.publish_batch([incident_event() for _ in range(5)])
    raw = await stored(nats_url, subjects.audit_entries("gw-1"), subjects.AUDIT_STREAM)
    assert [e.sequence for e in entries_of(raw)] == list(range(26)), (
        "start, key ring, 5 accepted, 5 stored, stop; the same again"
    )
    notes = [
        n.decode()
        for n in await stored(nats_url, subjects.audit_checkpoints("gw-1"), subjects.AUDIT_STREAM)
    ]
    verifier = Verifier.from_key_string((tmp_path / "audit" / "gw-1.pub").read_text().strip())
    leaves = [merkle.leaf_hash(data) for data in decode_frames(raw).entries]
    previous: Checkpoint | None = None
    for note in notes:
        text, signers = open_note(note, [verifier])
        checkpoint = Checkpoint.parse(text)
        assert signers == [verifier.name]
        assert checkpoint.root_hash == merkle.root(leaves[: checkpoint.size])
        if previous is not None:
            assert checkpoint.size > previous.size
            proof = merkle.consistency_proof(leaves[: checkpoint.size], previous.size)
            merkle.verify_consistency(
                previous.size, checkpoint.size, proof, previous.root_hash, checkpoint.root_hash
            )
        previous = checkpoint
    assert previous is not None and previous.size == 26, "a last checkpoint is signed at shutdown"


async def test_concurrent_appends_are_committed_together_in_one_gapless_order(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with gateway_for_tests(nats_url, config) as gateway:
        audit = gateway.audit
        assert audit is not None
        before = audit.size
        batches = [
            [
                audit_pb2.AuditEntry(action=audit_pb2.AUDIT_ACTION_PUBLISH, event_id=f"{n}-{k}")
                for k in range(3)
            ]
            for n in range(40)
        ]
        positions = await asyncio.gather(*(audit.append(batch) for batch in batches))
    assert sorted(p for batch in positions for p in batch) == list(range(before, before + 120))
    assert all(batch == list(range(batch[0], batch[0] + 3)) for batch in positions), (
        "a batch stays contiguous"
    )
    frames = await stored(nats_url, subjects.audit_entries("gw-1"), subjects.AUDIT_STREAM)
    log = entries_of(frames)
    assert [e.sequence for e in log] == list(range(len(log)))
    assert len(frames) < 40, "concurrent appends share frames (group commit)"
    by_event = {e.event_id: e.sequence for e in log}
    assert all(by_event[f"{n}-{k}"] == positions[n][k] for n in range(40) for k in range(3))


async def test_a_refused_megabyte_id_is_audited_in_bounded_form_and_fails_nobody_else(
    nats_url: str, tmp_path: Path
) -> None:
    huge = incident_event()
    huge.id = "x" * 1_000_000
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        DutyLinkClient(gateway.address, token=TOKENS["health"]) as health,
    ):
        others = [c.publish(incident_event()) for c in (police, health) for _ in range(15)]
        outcomes = await asyncio.gather(fire.publish(huge), *others, return_exceptions=True)
    refused, *published = outcomes
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [type(o).__name__ for o in published] == ["Receipt"] * 30
    log = entries_of(await stored(nats_url, subjects.audit_entries("gw-1"), subjects.AUDIT_STREAM))
    (refusal,) = [e for e in log if e.outcome == audit_pb2.AUDIT_OUTCOME_INVALID]
    assert refusal.actor_agency == "fire"
    assert len(refusal.SerializeToString()) < 16 * 1024
    assert refusal.event_id.startswith("xxx")
    assert refusal.event_id.endswith(
        f"[1000000 bytes, sha256:{hashlib.sha256(huge.id.encode()).hexdigest()}]"
    )
    accepted = [e for e in log if e.outcome == audit_pb2.AUDIT_OUTCOME_ACCEPTED]
    assert len(accepted) == 30


async def test_after_a_failed_append_the_log_resyncs_by_reading_only_the_frames_after_its_last(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    signer = Signer.generate("dutylink/audit/gw-1")
    ours_store, other_store = EventStore(config), EventStore(config)
    await ours_store.connect(nats_url)
    await other_store.connect(nats_url)

    def entry() -> audit_pb2.AuditEntry:
        return gateway_entry(audit_pb2.AUDIT_ACTION_POLICY_RELOAD)

    try:
        ours = AuditLog(ours_store, "gw-1", signer, origin=signer.name, replicas=1)
        await ours.start()
        for _ in range(40):
            await ours.append([entry()])
        other = AuditLog(other_store, "gw-1", signer, origin=signer.name, replicas=1)
        await other.start()
        assert await other.append([entry()]) == [40]  # behind our back: our next append fails
        with pytest.raises(AuditUnavailableError, match="append failed"):
            await ours.append([entry()])
        read_before = ours.frames_read
        assert await ours.append([entry()]) == [41]
        assert ours.frames_read - read_before == 1, "only the other writer's frame, not all 41"
    finally:
        await ours_store.close()
        await other_store.close()
    raw = await stored(nats_url, subjects.audit_entries("gw-1"), subjects.AUDIT_STREAM)
    assert [e.sequence for e in entries_of(raw)] == list(range(42))
    assert ours.size == 42


async def test_an_entry_too_large_for_a_frame_fails_its_own_append_and_no_other_in_the_group(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    signer = Signer.generate("dutylink/audit/gw-1")
    store = EventStore(config)
    await store.connect(nats_url)
    try:
        # Unbounded fields, so that the entry itself is larger than any frame may be.
        audit = AuditLog(
            store, "gw-1", signer, origin=signer.name, replicas=1, max_field_bytes=10**7
        )
        await audit.start()
        huge = gateway_entry(audit_pb2.AUDIT_ACTION_POLICY_RELOAD, reason="r" * 2_000_000)
        small = [gateway_entry(audit_pb2.AUDIT_ACTION_POLICY_RELOAD) for _ in range(20)]
        outcomes = await asyncio.gather(
            *(audit.append([e]) for e in small[:10]),
            audit.append([huge]),
            *(audit.append([e]) for e in small[10:]),
            return_exceptions=True,
        )
    finally:
        await store.close()
    assert isinstance(outcomes[10], AuditEntryRefusedError)
    assert sorted(i for o in outcomes if isinstance(o, list) for i in o) == list(range(20))
    raw = await stored(nats_url, subjects.audit_entries("gw-1"), subjects.AUDIT_STREAM)
    assert [e.sequence for e in entries_of(raw)] == list(range(20))
