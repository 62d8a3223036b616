"""Audit log verification: a good log verifies, and each kind of tampering is found and named.

The tamper tests build logs directly with gateway.audit.merkle and gateway.audit.note (no NATS);
one test runs the real `AuditLog` on a real nats-server and reads it back with `read_log`, and
the CLI tests run `dutylink audit verify` against a nats-server on a loop in another thread
(CliRunner runs the command, which calls asyncio.run, on this thread).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from typer.testing import CliRunner

from dutylink.v1 import audit_pb2
from gateway.audit import merkle
from gateway.audit.merkle import SubtreeHashes
from gateway.audit.note import SM2, Checkpoint, Signer, sign_note
from gateway.audit.verify import Report, verify_log
from gateway.cli.audit import audit_app
from gateway.core import subjects
from gateway.store.audit_files import load_or_create_signer
from gateway.store.audit_log import AuditLog
from gateway.store.audit_reader import LogNotFoundError, StoredLog, read_log
from gateway.store.jetstream import EventStore
from gateway.store.nats_auth import redact_url
from gateway.store.nats_server import NatsServer
from gateway.testkit.inprocess import config_for_tests
from tests.cli_support import running_nats

GW = "gw-1"
SIGNER = Signer(f"dutylink/audit/{GW}", bytes(32))
# Same name, another key: what a forger without the gateway's key can sign with.
FORGER = Signer(SIGNER.name, bytes([7]) * 32)
TREE = merkle.SHA256_TREE  # the logs' tree hash: SIGNER's profile's
SIZES = (3, 8, 13, 20)
# The same keys under the national crypto profile (SM2, an SM3 tree).
NATIONAL_KEYS = (Signer.generate(SIGNER.name, SM2), Signer.generate(SIGNER.name, SM2))


@pytest.fixture(autouse=True, params=["international", "national"])
def profile(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every check below holds under both crypto profiles: the log's key, the forger's key and
    the tree hash are the profile's."""
    if request.param == "national":
        signer, forger = NATIONAL_KEYS
        monkeypatch.setattr(sys.modules[__name__], "SIGNER", signer)
        monkeypatch.setattr(sys.modules[__name__], "FORGER", forger)
        monkeypatch.setattr(sys.modules[__name__], "TREE", merkle.SM3_TREE)
    return str(request.param)


def entry(index: int, *, gateway_id: str = GW, event_id: str = "") -> bytes:
    return audit_pb2.AuditEntry(
        sequence=index,
        gateway_id=gateway_id,
        action=audit_pb2.AUDIT_ACTION_PUBLISH,
        outcome=audit_pb2.AUDIT_OUTCOME_ACCEPTED,
        event_id=event_id or f"event-{index:04d}",
    ).SerializeToString()


def checkpoint(
    entries: Sequence[bytes], size: int, *, signer: Signer | None = None, origin: str = ""
) -> str:
    signer = signer or SIGNER
    root = merkle.root([merkle.leaf_hash(data, TREE) for data in entries[:size]], TREE)
    return sign_note(Checkpoint(origin or signer.name, size, root).to_text(), [signer])


def good_log(count: int = 20, sizes: Sequence[int] = SIZES) -> tuple[list[bytes], list[str]]:
    entries = [entry(index) for index in range(count)]
    return entries, [checkpoint(entries, size) for size in sizes]


def verify(entries: Sequence[bytes], checkpoints: Sequence[str]) -> Report:
    return verify_log(entries, checkpoints, SIGNER.verifier(), GW)


def root_of(entries: Sequence[bytes], size: int) -> str:
    return merkle.root([merkle.leaf_hash(data, TREE) for data in entries[:size]], TREE).hex()


# --- good logs --------------------------------------------------------------------------------


def test_a_good_log_with_several_checkpoints_verifies() -> None:
    entries, checkpoints = good_log()
    report = verify(entries, checkpoints)
    assert report.ok, report.problems
    assert (report.entries, report.checkpoints, report.problems) == (20, 4, [])
    assert report.latest_size == 20
    assert report.latest_root == merkle.root([merkle.leaf_hash(e, TREE) for e in entries], TREE)
    assert report.unsigned == 0


def test_entries_after_the_latest_checkpoint_are_fine_but_counted_as_unsigned() -> None:
    entries, checkpoints = good_log(count=25)
    report = verify(entries, checkpoints)
    assert report.ok, report.problems
    assert (report.latest_size, report.unsigned) == (20, 5)


def test_empty_logs_and_size_zero_and_re_signed_sizes_verify() -> None:
    assert verify([], []).ok
    assert verify([], []).latest_size is None
    entries, _ = good_log()
    # A restarted gateway signs its current size again: same size, same root, no fork.
    checkpoints = [checkpoint(entries, size) for size in (0, 0, 8, 8, 20)]
    report = verify(entries, checkpoints)
    assert report.ok, report.problems
    assert verify([], [checkpoint([], 0)]).latest_root == TREE.empty_root


# --- tampered entries -------------------------------------------------------------------------


def test_a_changed_byte_in_an_entry_breaks_every_checkpoint_that_covers_it() -> None:
    entries, checkpoints = good_log()
    original = entries[10]
    entries[10] = original[:-1] + bytes([original[-1] ^ 0x01])  # "event-0010" -> "event-0011"
    assert audit_pb2.AuditEntry.FromString(entries[10]).sequence == 10  # still decodes
    report = verify(entries, checkpoints)
    assert not report.ok
    assert report.problems == [
        f"checkpoint 2 (size 13): root mismatch: signed {root_of(good_log()[0], 13)}, entries "
        f"give {root_of(entries, 13)} — one of entries 8 to 12 was changed, removed, inserted "
        "or moved",
        f"checkpoint 3 (size 20): root mismatch: signed {root_of(good_log()[0], 20)}, entries "
        f"give {root_of(entries, 20)} — one of entries 8 to 19 was changed, removed, inserted "
        "or moved",
    ]


def test_an_entry_that_is_not_an_audit_entry_is_named() -> None:
    entries, checkpoints = good_log()
    entries[12] = b"\xff\xff\xff"
    problems = verify(entries, checkpoints).problems
    assert problems[0] == "entry 12: not an AuditEntry (protobuf decode failed)"
    assert problems[1].startswith("checkpoint 2 (size 13): root mismatch: signed ")
    assert problems[1].endswith("— one of entries 8 to 12 was changed, removed, inserted or moved")


def test_a_dropped_entry_is_found_where_it_was_and_at_the_end() -> None:
    entries, checkpoints = good_log()
    del entries[5]
    problems = verify(entries, checkpoints).problems
    assert (
        problems[0]
        == "entries 5 to 18: sequence fields say 6 to 19 (1 entry missing before entry 5)"
    )
    assert problems[1].startswith("checkpoint 1 (size 8): root mismatch")
    assert problems[1].endswith("one of entries 3 to 7 was changed, removed, inserted or moved")
    assert problems[2].startswith("checkpoint 2 (size 13): root mismatch")
    assert problems[3:] == [
        "checkpoint 3 (size 20) covers more entries than the log holds (19): entries were removed"
    ]


def test_an_inserted_entry_is_found() -> None:
    entries, checkpoints = good_log()
    entries.insert(5, entry(5, event_id="forged"))  # even with the sequence a forger would pick
    problems = verify(entries, checkpoints).problems
    assert problems[0] == (
        "entries 6 to 20: sequence fields say 5 to 19 "
        "(1 entry too many before entry 6: inserted or duplicated)"
    )
    assert [p.split(":")[0] for p in problems[1:]] == [
        "checkpoint 1 (size 8)",
        "checkpoint 2 (size 13)",
        "checkpoint 3 (size 20)",
    ]
    assert all("root mismatch" in p and "one of entries 3 to" in p for p in problems[1:])


def test_two_reordered_entries_are_named() -> None:
    entries, checkpoints = good_log()
    entries[4], entries[6] = entries[6], entries[4]
    problems = verify(entries, checkpoints).problems
    assert problems[:2] == ["entry 4: sequence field says 6", "entry 6: sequence field says 4"]
    assert problems[2].startswith("checkpoint 1 (size 8): root mismatch")
    assert problems[2].endswith("one of entries 3 to 7 was changed, removed, inserted or moved")
    assert len(problems) == 5  # and checkpoints 2 and 3, which cover the same entries


def test_a_truncated_log_is_found_by_the_checkpoint_beyond_its_end() -> None:
    entries, checkpoints = good_log()
    report = verify(entries[:15], checkpoints)
    assert report.problems == [
        "checkpoint 3 (size 20) covers more entries than the log holds (15): entries were removed"
    ]
    assert report.latest_size == 20


def test_a_wrong_sequence_field_is_named_even_when_the_checkpoints_cover_it() -> None:
    entries = [entry(index) for index in range(20)]
    entries[7] = entry(70)  # the gateway itself wrote it wrong, then signed
    checkpoints = [checkpoint(entries, size) for size in SIZES]
    assert verify(entries, checkpoints).problems == ["entry 7: sequence field says 70"]


def test_entries_of_another_gateway_are_named_once_per_run() -> None:
    entries = [entry(index, gateway_id="gw-2" if 4 <= index < 9 else GW) for index in range(20)]
    entries[15] = entry(15, gateway_id="")
    checkpoints = [checkpoint(entries, size) for size in SIZES]
    assert verify(entries, checkpoints).problems == [
        "entries 4 to 8: gateway_id fields say 'gw-2', expected 'gw-1'",
        "entry 15: gateway_id field says '', expected 'gw-1'",
    ]


# --- tampered checkpoints ---------------------------------------------------------------------


def test_a_checkpoint_signed_with_another_key_does_not_verify() -> None:
    entries, checkpoints = good_log()
    entries[15] = entry(15, event_id="rewritten")
    checkpoints[3] = checkpoint(entries, 20, signer=FORGER)  # re-signed over the rewritten log
    report = verify(entries, checkpoints)
    assert report.problems == [
        "checkpoint 3: signature does not verify (note has no signature by a trusted key "
        f"(trusted: {SIGNER.name}+{SIGNER.key_id.hex()})); it is signed by key "
        f"{FORGER.name}+{FORGER.key_id.hex()}, not by the log's key "
        f"{SIGNER.name}+{SIGNER.key_id.hex()}, and no key rotation is recorded before it: "
        "undeclared key change"
    ]
    assert report.latest_size == 13  # the last checkpoint that is the gateway's


def test_a_checkpoint_changed_after_signing_does_not_verify() -> None:
    entries, checkpoints = good_log(count=30)
    checkpoints[3] = checkpoints[3].replace("\n20\n", "\n30\n")  # claims more, same signature
    assert verify(entries, checkpoints).problems == [
        f"checkpoint 3: signature does not verify (signature by trusted key "
        f"{SIGNER.name}+{SIGNER.key_id.hex()} does not verify)"
    ]


def test_a_second_root_for_the_same_size_is_a_fork() -> None:
    entries, checkpoints = good_log()
    other = [*entries[:10], entry(10, event_id="the other history"), *entries[11:]]
    checkpoints.insert(3, checkpoint(other, 13))  # signed by the gateway's own key
    problems = verify(entries, checkpoints).problems
    assert problems == [
        f"checkpoint 3 (size 13): root mismatch: signed {root_of(other, 13)}, entries give "
        f"{root_of(entries, 13)} — checkpoint 4 (size 20) matches the entries, so this "
        "checkpoint signs another history",
        "checkpoint 3 (size 13) and checkpoint 2 (size 13) have different roots: fork",
    ]


def test_a_smaller_checkpoint_after_a_larger_one_is_a_rollback() -> None:
    entries, _ = good_log()
    checkpoints = [checkpoint(entries, size) for size in (3, 8, 20, 13, 19)]
    assert verify(entries, checkpoints).problems == [
        "checkpoint 3 (size 13) is smaller than checkpoint 2 (size 20): rollback",
        "checkpoint 4 (size 19) is smaller than checkpoint 2 (size 20): rollback",
    ]


def test_a_checkpoint_of_another_origin_is_named() -> None:
    entries, checkpoints = good_log()
    checkpoints[1] = checkpoint(entries, 8, origin="dutylink/audit/gw-2")
    assert verify(entries, checkpoints).problems == [
        "checkpoint 1 names origin 'dutylink/audit/gw-2', expected 'dutylink/audit/gw-1'"
    ]
    # The expected origin can be given when it is not the key's name.
    report = verify_log(entries, checkpoints, SIGNER.verifier(), GW, origin="dutylink/audit/gw-2")
    assert len(report.problems) == 3


def test_a_signed_note_that_is_not_a_checkpoint_is_named() -> None:
    entries, checkpoints = good_log()
    checkpoints.append(sign_note("just words\n", [SIGNER]))
    assert verify(entries, checkpoints).problems == [
        "checkpoint 4: signed, but not a checkpoint (checkpoint has 1 lines, expected origin, "
        "size and root hash)"
    ]


def test_consistency_proofs_are_checked_between_consecutive_checkpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second path besides the prefix roots: a proof that does not lead from one signed root
    to the next is reported, even though both roots equal the recomputed ones."""
    entries, checkpoints = good_log()
    calls: list[tuple[int, int]] = []
    genuine = SubtreeHashes.consistency_proof

    def broken(self: SubtreeHashes, size1: int, size2: int) -> list[bytes]:
        calls.append((size1, size2))
        proof = genuine(self, size1, size2)
        return [bytes(32), *proof[1:]] if size2 == 13 else proof

    monkeypatch.setattr(SubtreeHashes, "consistency_proof", broken)
    problems = verify(entries, checkpoints).problems
    assert calls == [(3, 8), (8, 13), (13, 20)]
    assert len(problems) == 1
    assert problems[0].startswith(
        "checkpoint 2 (size 13) is not consistent with checkpoint 1 (size 8): calculated "
    )


def test_a_large_log_is_checked_quickly_and_one_removal_reads_as_one_entry_problem() -> None:
    entries = [entry(index) for index in range(20_000)]
    checkpoints = [checkpoint(entries, size) for size in range(250, 20_001, 250)]
    assert verify(entries, checkpoints).ok
    del entries[12_345]
    problems = verify(entries, checkpoints).problems
    assert problems[0] == (
        "entries 12345 to 19998: sequence fields say 12346 to 19999 "
        "(1 entry missing before entry 12345)"
    )
    assert problems[1].startswith("checkpoint 49 (size 12500): root mismatch")
    assert problems[1].endswith("one of entries 12250 to 12499 was changed, removed, inserted or moved")  # fmt: skip
    assert problems[-1] == (
        "checkpoint 79 (size 20000) covers more entries than the log holds (19999): "
        "entries were removed"
    )


# --- against a real nats-server ---------------------------------------------------------------


def audit_entry(event_id: str) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        action=audit_pb2.AUDIT_ACTION_PUBLISH,
        outcome=audit_pb2.AUDIT_OUTCOME_ACCEPTED,
        event_id=event_id,
    )


async def test_the_audit_log_in_jetstream_verifies_across_a_restart(tmp_path: Path) -> None:
    gateway_id = "gw-test"
    signer = Signer.generate(f"dutylink/audit/{gateway_id}")
    async with NatsServer(tmp_path / "nats") as server:
        client = await nats.connect(server.url)
        store = EventStore(config_for_tests())
        await store.connect(server.url)
        try:
            js = client.jetstream()
            with pytest.raises(LogNotFoundError):
                await read_log(js, gateway_id)

            def new_log() -> AuditLog:
                return AuditLog(store, gateway_id, signer, origin=signer.name, replicas=1)

            log = new_log()
            await log.start()
            await log.append([audit_entry(f"e{n}") for n in range(5)])
            assert await log.checkpoint() is not None
            await log.append([audit_entry("e5")])
            assert await log.checkpoint() is not None

            stored = await read_log(js, gateway_id)
            report = verify_log(stored.entries, stored.checkpoints, signer.verifier(), gateway_id)
            assert report.ok, report.problems
            assert (report.entries, report.checkpoints, report.latest_size) == (6, 2, 6)
            assert (await read_log(js, "gw-other")) == StoredLog([], [], [])

            restarted = new_log()  # a restart rebuilds the tree from the stored entries
            await restarted.start()
            assert restarted.size == 6
            await restarted.append([audit_entry(f"after-{n}") for n in range(3)])
            assert await restarted.checkpoint() is not None

            stored = await read_log(js, gateway_id)
            report = verify_log(stored.entries, stored.checkpoints, signer.verifier(), gateway_id)
            assert report.ok, report.problems
            assert (report.entries, report.checkpoints, report.latest_size) == (9, 3, 9)
            assert report.latest_root == merkle.root([merkle.leaf_hash(e) for e in stored.entries])

            # What the stream cannot refuse, the verifier finds: an extra message on the subject.
            await js.publish(subjects.audit_checkpoints(gateway_id), b"\xff not a note\n")
            frame = audit_pb2.AuditFrame(
                first_sequence=9, entries=[entry(9, gateway_id="gw-test"), b"\x08"]
            )
            await js.publish(subjects.audit_entries(gateway_id), frame.SerializeToString())
            await js.publish(subjects.audit_entries(gateway_id), b"\xff")
            stored = await read_log(js, gateway_id)
            report = verify_log(
                stored.entries,
                stored.checkpoints,
                signer.verifier(),
                gateway_id,
                frame_problems=stored.frame_problems,
            )
            assert report.problems == [
                "frame 4: does not decode as an AuditFrame",
                "entry 10: not an AuditEntry (protobuf decode failed)",
                "checkpoint 3: signature does not verify "
                "(note is not valid UTF-8 (lone surrogate at 0))",
            ]
        finally:
            await client.close()
            await store.close()


# --- dutylink audit verify --------------------------------------------------------------------

T = TypeVar("T")
runner = CliRunner()


async def write_log(url: str, signer: Signer, gateway_id: str, *, garbage: bool = False) -> None:
    client = await nats.connect(url)
    store = EventStore(config_for_tests())
    await store.connect(url)
    try:
        log = AuditLog(store, gateway_id, signer, origin=signer.name, replicas=1)
        await log.start()
        await log.append([audit_entry(f"e{n}") for n in range(4)])
        await log.checkpoint()
        if garbage:
            await client.jetstream().publish(subjects.audit_entries(gateway_id), b"\xff")
    finally:
        await client.close()
        await store.close()


def test_cli_verifies_a_good_log_and_names_problems(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "audit" / "gw-cli.key", "dutylink/audit/gw-cli")
    with running_nats(tmp_path) as (loop, url):
        loop.run(write_log(url, signer, "gw-cli"))
        result = runner.invoke(audit_app, ["verify", "--gateway-id", "gw-cli", "--data-dir", str(tmp_path)])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(
            "audit log gw-cli: 4 entries, 1 checkpoint, all verified; latest checkpoint size 4 root "
        )
        assert result.stderr == ""

        # --nats-url and --key (as a string) instead of the data directory's defaults.
        key = signer.verifier().key_string()
        result = runner.invoke(audit_app, ["verify", "--gateway-id", "gw-cli", "--nats-url", url, "--key", key, "--data-dir", str(tmp_path / "elsewhere")])  # fmt: skip
        assert result.exit_code == 0, result.output

        loop.run(write_log(url, signer, "gw-cli", garbage=True))
        result = runner.invoke(audit_app, ["verify", "--gateway-id", "gw-cli", "--data-dir", str(tmp_path)])  # fmt: skip
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "frame 2: does not decode as an AuditFrame",
            "error: audit log gw-cli: 8 entries, 2 checkpoints: 1 problem (listed earliest first)",
        ]


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    def verify_cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(audit_app, ["verify", "--gateway-id", "gw-cli", *args])
        return result.exit_code, result.stderr

    signer = load_or_create_signer(tmp_path / "audit" / "gw-cli.key", "dutylink/audit/gw-cli")
    assert verify_cli("--data-dir", str(tmp_path)) == (
        2,
        f"error: no NATS to talk to: give --nats-url, or a --data-dir holding a gateway's store "
        f"({tmp_path / 'nats'} has none)\n",
    )
    assert verify_cli("--data-dir", str(tmp_path / "none")) == (
        2,
        f"error: no verifier key: {tmp_path / 'none' / 'audit' / 'gw-cli.pub'} does not exist "
        "(give --key)\n",
    )
    code, stderr = verify_cli("--key", "not-a-key")
    assert code == 2 and stderr.startswith(
        "error: --key: not a verifier key (nor an existing file)"
    )
    code, stderr = verify_cli("--key", str(tmp_path / "audit" / "gw-cli.key"))
    assert code == 2 and "private signing key" in stderr
    code, stderr = verify_cli("--data-dir", str(tmp_path), "--nats-url", "nats://127.0.0.1:1")
    assert code == 2 and stderr.startswith("error: cannot connect to NATS at nats://127.0.0.1:1")

    with running_nats(tmp_path) as (loop, url):
        # The CLI reads as the auditor user, and never shows its password.
        shown = redact_url(url).replace("gateway:", "auditor:")
        code, stderr = verify_cli("--data-dir", str(tmp_path))
        assert (code, stderr) == (
            2,
            f"error: {shown}: stream DUTYLINK_AUDIT does not exist: no gateway has written an "
            "audit log there\n",
        )
        loop.run(write_log(url, signer, "gw-other"))
        code, stderr = verify_cli("--data-dir", str(tmp_path))
        assert (code, stderr) == (
            2,
            f"error: {shown}: no audit log for gateway 'gw-cli' in stream DUTYLINK_AUDIT "
            "(gateways with a log: gw-other)\n",
        )
