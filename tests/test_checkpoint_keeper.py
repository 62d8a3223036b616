"""Agencies keep the checkpoints they see; a rewritten history is caught and proven."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from dutylink.adapters.sdk.checkpoints import CheckpointError, CheckpointKeeper, ForkDetectedError
from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.audit import merkle
from gateway.audit.note import Checkpoint, Signer, Verifier, sign_note
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

SIGNER = Signer.generate("dutylink/audit/gw-1")
LEAVES = [merkle.leaf_hash(bytes([n])) for n in range(20)]


def signed(size: int, leaves: Sequence[bytes] = LEAVES, signer: Signer = SIGNER) -> str:
    return sign_note(
        Checkpoint(signer.name, size, merkle.root(list(leaves[:size]))).to_text(), [signer]
    )


async def honest(gateway_id: str, old: int, new: int) -> list[bytes]:
    return merkle.consistency_proof(LEAVES[:new], old)


async def test_a_growing_log_is_kept_and_reloaded(tmp_path: Path) -> None:
    keeper = CheckpointKeeper(tmp_path, {"gw-1": SIGNER.verifier()})
    assert await keeper.accept("gw-1", signed(3), honest)
    assert await keeper.accept("gw-1", signed(9), honest)
    assert not await keeper.accept("gw-1", signed(9), honest), "the same one again is no news"
    assert not await keeper.accept("gw-1", signed(5), honest), "an older consistent one"
    reloaded = CheckpointKeeper(tmp_path, {"gw-1": SIGNER.verifier()})
    held = reloaded.held("gw-1")
    assert held is not None and held.checkpoint.size == 9
    assert len((tmp_path / "gw-1.checkpoints.jsonl").read_text().splitlines()) == 2


async def test_two_roots_for_one_size_are_a_fork_with_evidence(tmp_path: Path) -> None:
    keeper = CheckpointKeeper(tmp_path, {"gw-1": SIGNER.verifier()})
    await keeper.accept("gw-1", signed(6), honest)
    rewritten = [*LEAVES[:2], merkle.leaf_hash(b"rewritten"), *LEAVES[3:]]
    with pytest.raises(ForkDetectedError) as fork:
        await keeper.accept("gw-1", signed(6, rewritten), honest)
    evidence = json.loads(fork.value.evidence.read_text())
    assert evidence["kind"] == "same size, two roots" and len(evidence["checkpoints"]) == 2
    assert evidence["key"] == SIGNER.verifier().key_string()


async def test_a_larger_tree_that_does_not_extend_the_held_one_is_a_fork(tmp_path: Path) -> None:
    keeper = CheckpointKeeper(tmp_path, {"gw-1": SIGNER.verifier()})
    await keeper.accept("gw-1", signed(6), honest)
    rewritten = [*LEAVES[:2], merkle.leaf_hash(b"rewritten"), *LEAVES[3:]]

    async def from_the_rewritten_log(gateway_id: str, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(rewritten[:new], old)

    with pytest.raises(ForkDetectedError, match="size 12 does not extend size 6") as fork:
        await keeper.accept("gw-1", signed(12, rewritten), from_the_rewritten_log)
    evidence = json.loads(fork.value.evidence.read_text())
    assert evidence["kind"] == "not consistent" and evidence["consistency_proof"]
    held = keeper.held("gw-1")
    assert held is not None and held.checkpoint.size == 6, "the fork is not adopted"


async def test_unverifiable_checkpoints_are_refused(tmp_path: Path) -> None:
    keeper = CheckpointKeeper(tmp_path, {"gw-1": SIGNER.verifier()})
    impostor = Signer.generate("dutylink/audit/gw-1")
    with pytest.raises(CheckpointError, match="no signature by a trusted key"):
        await keeper.accept("gw-1", signed(3, signer=impostor), honest)
    with pytest.raises(CheckpointError, match="no key for gateway 'gw-2'"):
        await keeper.accept("gw-2", signed(3), honest)


async def test_an_agency_follows_a_live_gateway_and_keeps_what_it_saw(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(
        nats={"data_dir": str(tmp_path / "data")}, audit={"checkpoint_seconds": 0.05}
    )
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        key = Verifier.from_key_string(
            (tmp_path / "data" / "audit" / "gw-1.pub").read_text().strip()
        )
        keeper = CheckpointKeeper(tmp_path / "kept", {"gw-1": key})
        following = asyncio.create_task(keeper.follow(police))
        for _ in range(3):
            await fire.publish(incident_event())
            await asyncio.sleep(0.15)
        assert gateway.audit is not None
        size = gateway.audit.size
        for _ in range(50):
            held = keeper.held("gw-1")
            if held is not None and held.checkpoint.size >= size:
                break
            await asyncio.sleep(0.05)
        following.cancel()
    kept = (tmp_path / "kept" / "gw-1.checkpoints.jsonl").read_text().splitlines()
    assert len(kept) >= 3, "each growth of the log was seen, proven consistent and kept"
    assert held is not None and held.checkpoint.size >= size
