"""Audit signing keys: a log keeps the key of its first checkpoint unless a rotation is declared
and recorded in the log; tests keep their keys in temporary directories."""

from __future__ import annotations

import shutil
from pathlib import Path

import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.audit import merkle
from gateway.audit.log import SigningKeyChangedError
from gateway.audit.note import Checkpoint, Signer, Verifier, sign_note
from gateway.audit.verify import Report, verify_log
from gateway.core import subjects
from gateway.core.settings import ConfigError
from gateway.store.audit_files import declared_rotation, load_or_create_signer
from gateway.store.audit_reader import read_log
from gateway.testkit.inprocess import (
    GatewayProcess,
    GatewayProcessError,
    config_for_tests,
    gateway_for_tests,
)
from tests.conftest import TOKENS
from tests.factories import incident_event


async def test_a_test_gateway_writes_nothing_into_the_working_directory(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    working = tmp_path / "cwd"
    working.mkdir()
    monkeypatch.chdir(working)
    async with gateway_for_tests(nats_url, config_for_tests()) as gateway:
        assert gateway.audit is not None and gateway.audit.size > 0
    assert sorted(p.name for p in working.rglob("*")) == []


async def _run(nats_url: str, data_dir: Path, **audit: object) -> None:
    """Start gw-1 with its files in `data_dir`, let fire publish, stop (a last checkpoint)."""
    config = config_for_tests(nats={"data_dir": str(data_dir)}, audit=dict(audit))
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        await fire.publish(incident_event())


async def _verify(nats_url: str, key_file: Path) -> Report:
    client = await nats.connect(nats_url)
    try:
        stored = await read_log(client.jetstream(), "gw-1")
    finally:
        await client.close()
    return verify_log(
        stored.entries,
        stored.checkpoints,
        _key(key_file),
        "gw-1",
        frame_problems=stored.frame_problems,
    )


def _key(key_file: Path) -> Verifier:
    return Verifier.from_key_string(key_file.read_text().strip())


def _key_id(key_file: Path) -> str:
    return _key(key_file).key_id.hex()


async def test_a_gateway_with_another_key_refuses_to_continue_the_log_and_says_what_to_do(
    nats_url: str, tmp_path: Path
) -> None:
    await _run(nats_url, tmp_path / "old")
    size = (await _verify(nats_url, tmp_path / "old" / "audit" / "gw-1.pub")).entries
    config = config_for_tests(nats={"data_dir": str(tmp_path / "new")})
    with pytest.raises(SigningKeyChangedError) as refused:
        async with gateway_for_tests(nats_url, config):
            pass
    message = str(refused.value)
    old_id, new_id = (
        _key_id(tmp_path / "old/audit/gw-1.pub"),
        _key_id(tmp_path / "new/audit/gw-1.pub"),
    )
    assert "\n" not in message and "gateway gw-1" in message
    assert old_id in message and new_id in message and str(tmp_path / "new") in message
    assert f'rotate_from_key = "{old_id}"' in message
    report = await _verify(nats_url, tmp_path / "old" / "audit" / "gw-1.pub")
    assert report.ok and report.entries == size, "nothing was appended with the other key"


async def test_a_rotation_endorsed_by_the_old_key_file_verifies_with_either_key(
    nats_url: str, tmp_path: Path
) -> None:
    old, new = tmp_path / "old" / "audit", tmp_path / "new" / "audit"
    await _run(nats_url, tmp_path / "old")
    await _run(nats_url, tmp_path / "new", rotate_from_key=str(old / "gw-1.key"))
    with pytest.raises(SigningKeyChangedError, match="signed by dutylink/audit/gw-1\\+"):
        await _run(nats_url, tmp_path / "old")  # the former key, put back, may not sign on
    await _run(nats_url, tmp_path / "new", rotate_from_key=str(old / "gw-1.key"))  # recorded once
    await _run(nats_url, tmp_path / "new")  # the log's key is now the new one
    for key in (old / "gw-1.pub", new / "gw-1.pub"):
        report = await _verify(nats_url, key)
        assert report.problems == []
        assert report.latest_size == report.entries
    (rotated,) = [n for n in report.notes if n.startswith("key rotated")]
    assert f"from dutylink/audit/gw-1+{_key_id(old / 'gw-1.pub')}" in rotated
    assert rotated.endswith("(endorsed by the former key)")


async def test_a_rotation_declared_by_the_lost_keys_id_verifies_with_the_new_key_only(
    nats_url: str, tmp_path: Path
) -> None:
    await _run(nats_url, tmp_path / "old")
    old_pub = tmp_path / "old.pub"
    shutil.copy(tmp_path / "old" / "audit" / "gw-1.pub", old_pub)
    old_id = _key_id(old_pub)
    shutil.rmtree(tmp_path / "old")  # the old key is lost; its id is in the refusal message
    await _run(nats_url, tmp_path / "new", rotate_from_key=old_id)
    report = await _verify(nats_url, tmp_path / "new" / "audit" / "gw-1.pub")
    assert report.problems == [] and report.latest_size == report.entries
    assert any("declared, not endorsed" in n for n in report.notes)
    assert any("not checked" in n for n in report.notes), "the old key's checkpoints"
    with_old = await _verify(nats_url, old_pub)
    (problem,) = with_old.problems
    assert "without the former key's endorsement: give --key dutylink/audit/gw-1+" in problem


async def test_verify_rejects_a_key_change_no_rotation_declares(
    nats_url: str, tmp_path: Path
) -> None:
    await _run(nats_url, tmp_path)
    report = await _verify(nats_url, tmp_path / "audit" / "gw-1.pub")
    assert report.ok and report.latest_size is not None
    # What the gateway used to do: sign on with a new key under the same name.
    intruder = Signer.generate("dutylink/audit/gw-1")
    client = await nats.connect(nats_url)
    try:
        stored = await read_log(client.jetstream(), "gw-1")
        root = merkle.root([merkle.leaf_hash(e) for e in stored.entries])
        note = sign_note(
            Checkpoint("dutylink/audit/gw-1", len(stored.entries), root).to_text(), [intruder]
        )
        await client.jetstream().publish(
            subjects.audit_checkpoints("gw-1"), note.encode(), stream=subjects.AUDIT_STREAM
        )
    finally:
        await client.close()
    report = await _verify(nats_url, tmp_path / "audit" / "gw-1.pub")
    (problem,) = report.problems
    assert problem.startswith("checkpoint ") and ": signature does not verify" in problem
    assert problem.endswith(
        f"; it is signed by key dutylink/audit/gw-1+{intruder.key_id.hex()}, not by the log's "
        f"key dutylink/audit/gw-1+{_key_id(tmp_path / 'audit' / 'gw-1.pub')}, and no key "
        "rotation is recorded before it: undeclared key change"
    )


async def test_serve_with_another_key_exits_with_one_line_naming_the_gateway_and_the_keys(
    nats_url: str, tmp_path: Path
) -> None:
    await _run(nats_url, tmp_path / "old")
    process = GatewayProcess(nats_url, tmp_path / "new")
    with pytest.raises(GatewayProcessError):
        await process.start()
    assert process.returncode == 2
    output = process.log_file.read_text()
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    old_id = _key_id(tmp_path / "old" / "audit" / "gw-1.pub")
    assert line.startswith("error: audit log of gateway gw-1: this gateway's key is ")
    assert old_id in line and _key_id(tmp_path / "new" / "audit" / "gw-1.pub") in line


def test_a_rotation_is_declared_by_key_id_public_key_or_key_file_never_an_inline_private_key(
    tmp_path: Path,
) -> None:
    signer = load_or_create_signer(tmp_path / "old.key", "dutylink/audit/gw-1")
    by_id = declared_rotation(signer.key_id.hex())
    by_key = declared_rotation(signer.verifier().key_string())
    by_file = declared_rotation(str(tmp_path / "old.key"))
    assert by_id.key_id == by_key.key_id == by_file.key_id == signer.key_id
    assert by_id.key is None and by_key.signer is None
    assert by_file.signer is not None, "the key file lets the old key endorse the new one"
    with pytest.raises(ConfigError, match="never the key itself"):
        declared_rotation(signer.key_string())
    with pytest.raises(ConfigError, match=r"audit\.rotate_from_key: 'nope' is neither"):
        declared_rotation("nope")
