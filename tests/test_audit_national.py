"""A gateway's audit log under the national crypto profile (`audit.crypto_profile = "national"`):
an SM3 Merkle tree and SM2-signed checkpoints, recorded in the log's start entry, and every
verifier (`dutylink audit verify|prove|export`, bundles) following the key it trusts; a log's
profile never changes once it started."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2, event_pb2
from gateway.audit import commitments
from gateway.audit.bundle import PROFILE_FIELD
from gateway.audit.entries import bound_entry, schema_version
from gateway.audit.merkle import SM3_TREE, leaf_hash, root
from gateway.audit.note import SM2, Checkpoint, Signer, open_note
from gateway.audit.verify import verify_log
from gateway.cli.audit import audit_app
from gateway.core import subjects
from gateway.core.crypto import INTERNATIONAL, NATIONAL, SM3, sm3
from gateway.core.settings import ConfigError
from gateway.server import Gateway
from gateway.store.audit_reader import StoredLog, read_log
from gateway.testkit.inprocess import config_for_tests, nats_for_tests
from tests.cli_support import running_nats
from tests.conftest import TOKENS
from tests.factories import incident_event

runner = CliRunner()
INCIDENT = "INC-2026-1206-001"


def national(data_dir: Path, **audit: object) -> dict[str, object]:
    return {
        "nats": {"data_dir": str(data_dir)},
        "audit": {"crypto_profile": "national", "checkpoint_seconds": 0.05, **audit},
    }


async def _exchange(url: str, data_dir: Path) -> list[event_pb2.Event]:
    config = config_for_tests(**national(data_dir))
    events = [incident_event(incident_id=INCIDENT), incident_event()]
    async with (
        Gateway(config, nats_url=url) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        await fire.publish_batch(events)
        await asyncio.sleep(0.2)  # a checkpoint covers them (and one more at shutdown)
    return events


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[Path, str, list[event_pb2.Event]]]:
    with running_nats(tmp_path) as (loop, url):
        events = loop.run(_exchange(url, tmp_path))
        yield tmp_path, url, events


def audit(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(audit_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_log_is_an_sm3_tree_under_sm2_checkpoints_and_says_so(
    logged: tuple[Path, str, list[event_pb2.Event]],
) -> None:
    data_dir, url, _ = logged
    signer = Signer.from_key_string((data_dir / "audit" / "gw-1.key").read_text().strip())
    verifier = signer.verifier()
    assert verifier.key_type is SM2
    stored = asyncio.run(_read(url))
    start = audit_pb2.AuditEntry.FromString(stored.entries[0])
    assert start.action == audit_pb2.AUDIT_ACTION_GATEWAY_START
    assert start.crypto_profile == "national"
    assert start.schema_version == schema_version(SM3)  # no SHA-256 under this profile
    text, signers = open_note(stored.checkpoints[-1], [verifier])
    checkpoint = Checkpoint.parse(text)
    leaves = [leaf_hash(data, SM3_TREE) for data in stored.entries[: checkpoint.size]]
    assert checkpoint.root_hash == root(leaves, SM3_TREE) and signers == [verifier.name]
    assert leaves[0] == sm3(b"\x00" + stored.entries[0])
    assert verify_log(stored.entries, stored.checkpoints, verifier, "gw-1").ok
    international = Signer.generate(verifier.name).verifier()
    assert not verify_log(stored.entries, stored.checkpoints, international, "gw-1").ok


async def _read(url: str) -> StoredLog:
    client = await nats.connect(url)
    try:
        return await read_log(client.jetstream(), "gw-1")
    finally:
        await client.close()


def test_entries_record_the_sm3_digest_of_the_stored_bytes_and_the_store_check_agrees(
    logged: tuple[Path, str, list[event_pb2.Event]],
) -> None:
    data_dir, url, _ = logged
    stored = asyncio.run(_read(url))
    entries = [audit_pb2.AuditEntry.FromString(data) for data in stored.entries]
    kept = [e for e in entries if e.outcome == audit_pb2.AUDIT_OUTCOME_STORED]
    assert len(kept) == 2
    events = asyncio.run(_stored_events(url, [e.stream_sequence for e in kept]))
    assert [e.event_digest for e in kept] == [sm3(data) for data in events]
    code, out, err = audit("verify", "--store", "--gateway-id", "gw-1", "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0, err
    assert "all verified" in out


async def _stored_events(url: str, sequences: list[int]) -> list[bytes]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        return [(await js.get_msg(subjects.EVENTS_STREAM, seq=s)).data or b"" for s in sequences]
    finally:
        await client.close()


def test_withheld_field_commitments_use_the_profiles_hash() -> None:
    event, key, path = incident_event(), bytes(32), "incident.reporter"
    salt = commitments.salt(key, event.id, "transport", path, NATIONAL.hash)
    assert salt == NATIONAL.hash.mac(key, b"\x00".join((b"dutylink/commitment/v1", event.id.encode(), b"transport", path.encode())))  # fmt: skip
    (committed,) = commitments.commit(key, event, "transport", [path], NATIONAL.hash)
    assert committed.commitment == sm3(salt + commitments.withheld_value(event, path))
    (international,) = commitments.commit(key, event, "transport", [path], INTERNATIONAL.hash)
    assert international.commitment != committed.commitment


def test_verify_prove_and_bundles_follow_the_sm2_key(
    logged: tuple[Path, str, list[event_pb2.Event]], tmp_path: Path
) -> None:
    data_dir, _, events = logged
    code, out, err = audit("verify", "--gateway-id", "gw-1", "--data-dir", str(data_dir))
    assert code == 0, err
    assert "all verified" in out
    code, out, err = audit("prove", events[0].id, "--gateway-id", "gw-1", "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0, err
    assert "all verified against checkpoint size" in out
    for scope in ([], ["--incident", INCIDENT]):
        bundle = tmp_path / f"bundle{len(scope)}"
        code, out, err = audit("export", "--gateway-id", "gw-1", *scope, "--out", str(bundle), "--data-dir", str(data_dir))  # fmt: skip
        assert code == 0, err
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest[PROFILE_FIELD] == "national"
        assert "## National crypto profile" in (bundle / "README.md").read_text()
        assert manifest["files"]["entries.jsonl"] == sm3((bundle / "entries.jsonl").read_bytes()).hex()  # fmt: skip
        key = str(data_dir / "audit" / "gw-1.pub")
        code, out, err = audit("verify", "--bundle", str(bundle), "--key", key)
        assert code == 0, err
        assert "all verified" in out
        other = Signer.generate("dutylink/audit/gw-1").verifier().key_string()
        code, _, err = audit("verify", "--bundle", str(bundle), "--key", other)
        assert (
            code == 1 and "crypto profile 'national', but the trusted key is an Ed25519 key" in err
        )


async def test_a_log_started_national_refuses_an_international_restart(tmp_path: Path) -> None:
    async with nats_for_tests(tmp_path / "nats") as url:
        async with Gateway(config_for_tests(**national(tmp_path)), nats_url=url):
            pass
        back = config_for_tests(nats={"data_dir": str(tmp_path)})  # the international default
        with pytest.raises(ConfigError, match="holds an SM2 key, but the crypto profile 'international'"):  # fmt: skip
            async with Gateway(back, nats_url=url):
                pass
        national_ring = {"key_file": config_for_tests(**national(tmp_path)).personal_data.key_file}
        with pytest.raises(ConfigError, match="keys are for the national profile; this deployment is international"):  # fmt: skip
            async with Gateway(config_for_tests(personal_data=national_ring), nats_url=url):
                pass
        elsewhere = config_for_tests(
            nats={"data_dir": str(tmp_path)}, audit={"key_file": str(tmp_path / "new.key")}
        )
        with pytest.raises(ConfigError, match="started with the national crypto profile"):
            async with Gateway(elsewhere, nats_url=url):
                pass


def test_a_bounded_field_names_its_sm3_digest() -> None:
    entry = audit_pb2.AuditEntry(reason="x" * 2000, incident_ids=[f"INC-{i}" for i in range(9)])
    bound_entry(entry, 256, 4, SM3)
    assert entry.reason.endswith(f"…[2000 bytes, sm3:{sm3(b'x' * 2000).hex()}]")
    assert (
        entry.incident_ids[-1]
        == f"…[6 more, sm3:{sm3(chr(10).join(f'INC-{i}' for i in range(3, 9)).encode()).hex()}]"
    )
