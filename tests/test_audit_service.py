"""The Audit service (auditors only) and the Checkpoint service (every agency), over gRPC,
checked the way an auditor would: every proof verified against a signed checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2, audit_service_pb2, audit_service_pb2_grpc
from gateway.audit import commitments, merkle
from gateway.audit.note import Checkpoint, Verifier, open_note
from gateway.core import subjects
from gateway.core.crypto import SHA256
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

S = audit_service_pb2


@pytest.fixture
async def gateway(nats_url: str, tmp_path: Path, policy_dir: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests(
        nats={"data_dir": str(tmp_path / "data")},
        audit={"checkpoint_seconds": 0.1},
        policy={"dir": str(policy_dir)},
    )
    async with gateway_for_tests(nats_url, config) as running:
        yield running


def metadata(agency: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[agency]}"),)


def verifier(tmp_path: Path) -> Verifier:
    return Verifier.from_key_string((tmp_path / "data" / "audit" / "gw-1.pub").read_text().strip())


def verified(signed: audit_service_pb2.SignedCheckpoint, key: Verifier) -> Checkpoint:
    text, _ = open_note(signed.note, [key])
    checkpoint = Checkpoint.parse(text)
    assert (checkpoint.size, checkpoint.root_hash) == (signed.tree_size, signed.root_hash)
    return checkpoint


async def covered(
    stub: audit_service_pb2_grpc.CheckpointServiceStub, size: int
) -> S.SignedCheckpoint:
    """The latest checkpoint, once it covers `size` entries."""
    for _ in range(100):
        try:
            response = await stub.GetCheckpoint(S.GetCheckpointRequest(), metadata=metadata("fire"))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        else:
            checkpoint: S.SignedCheckpoint = response.checkpoint
            if checkpoint.tree_size >= size:
                return checkpoint
        await asyncio.sleep(0.05)
    pytest.fail(f"no checkpoint covered {size} entries")


async def test_only_auditors_read_entries_and_each_proof_verifies_against_a_signed_checkpoint(
    gateway: Gateway, tmp_path: Path
) -> None:
    events = [incident_event() for _ in range(5)]
    async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
        await fire.publish_batch(events)
    assert gateway.audit is not None
    key = verifier(tmp_path)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        checkpoints = audit_service_pb2_grpc.CheckpointServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await audit.ListEntries(S.ListEntriesRequest(), metadata=metadata("fire"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "auditor" in (refused.value.details() or "")

        latest = await covered(checkpoints, gateway.audit.size)
        found = await audit.ListEntries(
            S.ListEntriesRequest(event_id=events[3].id), metadata=metadata("audit")
        )
        stored = found.entries[0]  # ACCEPTED (the store's answer follows with a later append)
        assert stored.entry.action == audit_pb2.AUDIT_ACTION_PUBLISH
        assert stored.entry.event_id == events[3].id and stored.entry.actor_agency == "fire"
        assert audit_pb2.AuditEntry.FromString(stored.data) == stored.entry

        proof = await audit.GetInclusionProof(
            S.GetInclusionProofRequest(index=stored.index), metadata=metadata("audit")
        )
        checkpoint = verified(proof.checkpoint, key)
        assert proof.tree_size == checkpoint.size >= latest.tree_size
        merkle.verify_inclusion(
            stored.index,
            checkpoint.size,
            merkle.leaf_hash(proof.entry.data),
            list(proof.proof),
            checkpoint.root_hash,
        )
        tampered = audit_pb2.AuditEntry.FromString(proof.entry.data)
        tampered.actor_agency = "police"
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(
                stored.index,
                checkpoint.size,
                merkle.leaf_hash(tampered.SerializeToString()),
                list(proof.proof),
                checkpoint.root_hash,
            )

        # Any agency can check that a later checkpoint extends the one it holds.
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            await fire.publish(incident_event())
        newer = await covered(checkpoints, checkpoint.size + 1)
        consistency = await checkpoints.GetConsistencyProof(
            S.GetConsistencyProofRequest(old_size=checkpoint.size), metadata=metadata("transport")
        )
        new = verified(consistency.checkpoint, key)
        assert new.size >= newer.tree_size > checkpoint.size
        merkle.verify_consistency(
            checkpoint.size, new.size, list(consistency.proof), checkpoint.root_hash, new.root_hash
        )

        with pytest.raises(grpc.aio.AioRpcError) as out_of_range:
            await audit.GetInclusionProof(
                S.GetInclusionProofRequest(index=10_000), metadata=metadata("audit")
            )
        assert out_of_range.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_entries_page_and_filter_by_action_and_agency(gateway: Gateway) -> None:
    async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
        await fire.publish_batch([incident_event() for _ in range(5)])
        invalid = incident_event()
        invalid.jurisdiction.division_code = "x"
        # Its refusal's append takes the 5 STORED facts along: 5 + 5 + 1 entries.
        await fire.publish_batch([invalid])
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        request = S.ListEntriesRequest(
            actions=[audit_pb2.AUDIT_ACTION_PUBLISH], agency="fire", page_size=2
        )
        pages = []
        while True:
            page = await audit.ListEntries(request, metadata=metadata("audit"))
            pages.append([e.index for e in page.entries])
            if page.next_index >= page.log_size:
                break
            request.start_index = page.next_index
    indices = [i for page in pages for i in page]
    assert [len(p) for p in pages[:2]] == [2, 2] and len(indices) == 11
    assert indices == sorted(set(indices)), "pages neither overlap nor skip"


async def test_salts_let_an_auditor_prove_what_was_withheld_from_whom(gateway: Gateway) -> None:
    event = incident_event()
    async with (
        DutyLinkClient(gateway.address, token=TOKENS["transport"]) as transport,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        roads = transport.subscribe("roads", families=["incident"])
        await roads.open()
        await fire.publish(event)
        delivery = await roads.next(timeout=10)
        assert delivery is not None and delivery.withheld_fields
        await roads.close()
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        found = await audit.ListEntries(
            S.ListEntriesRequest(event_id=event.id, actions=[audit_pb2.AUDIT_ACTION_DELIVER]),
            metadata=metadata("audit"),
        )
        stored = found.entries[0]  # ACCEPTED (the store's answer follows with a later append)
        revealed = await audit.RevealCommitmentSalts(
            S.RevealCommitmentSaltsRequest(index=stored.index), metadata=metadata("audit")
        )
    (salt,) = revealed.salts
    (commitment,) = stored.entry.withheld_commitments
    assert salt.path == commitment.path == "incident.reporter"
    assert commitments.commitment(salt.salt, event, salt.path, SHA256) == commitment.commitment


async def test_a_salt_reveal_is_audited_naming_the_auditor_the_event_and_its_recipient(
    gateway: Gateway,
) -> None:
    event = incident_event()
    async with (
        DutyLinkClient(gateway.address, token=TOKENS["transport"]) as transport,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        roads = transport.subscribe("roads", families=["incident"])
        await roads.open()
        await fire.publish(event)
        assert await roads.next(timeout=10) is not None
        await roads.close()
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        found = await audit.ListEntries(
            S.ListEntriesRequest(event_id=event.id, actions=[audit_pb2.AUDIT_ACTION_DELIVER]),
            metadata=metadata("audit"),
        )
        (stored,) = found.entries
        await audit.RevealCommitmentSalts(
            S.RevealCommitmentSaltsRequest(index=stored.index), metadata=metadata("audit")
        )
        reveals = await audit.ListEntries(
            S.ListEntriesRequest(actions=[audit_pb2.AUDIT_ACTION_SALT_REVEAL]),
            metadata=metadata("audit"),
        )
    (reveal,) = [e.entry for e in reveals.entries]
    assert (reveal.actor_agency, reveal.recipient_agency, reveal.subscription) == (
        "audit", "transport", "roads",
    )  # fmt: skip
    assert reveal.event_id == event.id and list(reveal.withheld_fields) == ["incident.reporter"]
    assert f"salts of entry {stored.index} of audit log gw-1 revealed to audit" == reveal.reason


async def test_every_agency_watches_checkpoints_as_they_are_signed(
    gateway: Gateway, tmp_path: Path
) -> None:
    key = verifier(tmp_path)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        watch = audit_service_pb2_grpc.CheckpointServiceStub(channel).WatchCheckpoints(
            S.WatchCheckpointsRequest(), metadata=metadata("police")
        )
        first = await asyncio.wait_for(watch.read(), 10)
        start = verified(first.checkpoint, key)
        async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
            await fire.publish(incident_event())
        for _ in range(20):
            later = await asyncio.wait_for(watch.read(), 10)
            if later.checkpoint.tree_size > start.size:
                break
        else:
            pytest.fail("no larger checkpoint was delivered")
        assert later.checkpoint.gateway_id == "gw-1"
        verified(later.checkpoint, key)
        watch.cancel()


async def test_a_damaged_log_is_refused_as_data_loss(gateway: Gateway, nats_url: str) -> None:
    connection = await nats.connect(nats_url)
    await connection.jetstream().publish(subjects.audit_entries("gw-9"), b"\xff")
    await connection.close()
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as damaged:
            await audit.ListEntries(
                S.ListEntriesRequest(gateway_id="gw-9"), metadata=metadata("audit")
            )
    assert damaged.value.code() == grpc.StatusCode.DATA_LOSS
    assert "does not decode" in (damaged.value.details() or "")
