"""`dutylink audit export|prove|tail` and `verify --bundle`, against a real gateway's log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import event_pb2
from gateway.cli.audit import audit_app
from gateway.server import Gateway
from gateway.store.nats_server import embedded_dir, running_url
from gateway.testkit.inprocess import config_for_tests
from tests.cli_support import running_nats
from tests.conftest import TOKENS
from tests.factories import incident_event

runner = CliRunner()
INCIDENT = "INC-2026-0815-001"


async def _exchange(url: str, data_dir: Path) -> list[event_pb2.Event]:
    """Run a gateway on `url`: fire publishes three events of INCIDENT and one of another."""
    config = config_for_tests(nats={"data_dir": str(data_dir)}, audit={"checkpoint_seconds": 0.05})
    events = [incident_event(incident_id=INCIDENT) for _ in range(3)]
    for update in events[1:]:  # INCIDENT is reported once, then updated
        update.type = "incident.updated"
    events.append(incident_event(incident_id="INC-2026-0815-002"))
    async with (
        Gateway(config, nats_url=url) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        await fire.publish_batch(events)
        await asyncio.sleep(0.2)  # a checkpoint covers them (and one more at shutdown)
    return events


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[Path, list[event_pb2.Event]]]:
    """A data directory whose embedded NATS runs, holding gateway gw-1's log of an exchange."""
    with running_nats(tmp_path) as (loop, url):
        events = loop.run(_exchange(url, tmp_path))
        yield tmp_path, events


def audit(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(audit_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_a_full_export_verifies_on_its_own_and_a_changed_entry_is_named(
    logged: tuple[Path, list[event_pb2.Event]], tmp_path: Path
) -> None:
    data_dir, _ = logged
    bundle = tmp_path / "bundle"
    code, out, err = audit("export", "--gateway-id", "gw-1", "--out", str(bundle), "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0, err
    # start, 4 accepted, 4 stored, stop
    assert out.startswith("exported 11 entries and ") and "(full)" in out
    assert {p.name for p in bundle.iterdir()} == {"manifest.json", "entries.jsonl", "checkpoints.jsonl", "keys", "README.md"}  # fmt: skip

    key = (data_dir / "audit" / "gw-1.pub").read_text().strip()
    code, out, err = audit("verify", "--bundle", str(bundle), "--key", key)
    assert code == 0, err
    assert out.startswith("audit log gw-1: 11 entries, ") and "all verified" in out

    lines = (bundle / "entries.jsonl").read_text().splitlines()
    changed = json.loads(lines[2])
    # A trailing tag of wire type 7, which no protobuf decoder accepts, whatever the entry holds.
    changed["data"] = base64.b64encode(base64.b64decode(changed["data"]) + b"\x0f").decode()
    lines[2] = json.dumps(changed)
    (bundle / "entries.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = audit("verify", "--bundle", str(bundle))  # the bundle's own key
    assert code == 1
    problems = err.splitlines()
    assert problems[0].startswith("note: using the key shipped in the bundle (dutylink/audit/gw-1+")
    assert problems[1] == "entries.jsonl: SHA-256 differs from the one manifest.json lists"
    assert problems[2].startswith("entries.jsonl:3 (entry 2): readable view differs from the stored bytes: ")  # fmt: skip
    assert problems[3] == "entries.jsonl: entry 2: not an AuditEntry (protobuf decode failed)"
    assert (
        # The first checkpoint that covers entry 2 (which one depends on when they were signed).
        re.match(r"checkpoints\.jsonl: checkpoint \d+ \(size ", problems[4])
        and ": root mismatch: signed " in problems[4]
    )


def test_an_incident_export_holds_its_entries_with_proofs_that_verify(
    logged: tuple[Path, list[event_pb2.Event]], tmp_path: Path
) -> None:
    data_dir, events = logged
    bundle = tmp_path / "incident"
    code, out, err = audit("export", "--gateway-id", "gw-1", "--incident", INCIDENT, "--out", str(bundle), "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0, err
    # each event's ACCEPTED and STORED entries
    assert out.startswith("exported 6 entries and 1 checkpoint of gw-1 (incident ")
    exported = [json.loads(line) for line in (bundle / "entries.jsonl").read_text().splitlines()]
    assert [e["entry"]["eventId"] for e in exported] == [e.id for e in events[:3]] * 2
    assert len((bundle / "proofs.jsonl").read_text().splitlines()) == 6

    code, out, err = audit("verify", "--bundle", str(bundle), "--data-dir", str(data_dir), "--key", str(data_dir / "audit" / "gw-1.pub"))  # fmt: skip
    assert code == 0, err
    assert "6 entries, 1 checkpoint, all verified" in out

    proofs = (bundle / "proofs.jsonl").read_text().splitlines()
    first = json.loads(proofs[0])
    first["proof"] = list(reversed(first["proof"]))
    proofs[0] = json.dumps(first)
    (bundle / "proofs.jsonl").write_text("\n".join(proofs) + "\n")
    code, _, err = audit("verify", "--bundle", str(bundle), "--key", str(data_dir / "audit" / "gw-1.pub"))  # fmt: skip
    assert code == 1
    index = exported[0]["index"]
    assert f"proofs.jsonl:1 (entry {index}): not in the signed tree" in err

    code, _, err = audit("export", "--gateway-id", "gw-1", "--incident", "INC-NONE", "--out", str(tmp_path / "none"), "--data-dir", str(data_dir))  # fmt: skip
    assert (code, err) == (1, "error: audit log gw-1 has no entries of incident 'INC-NONE'\n")


def test_prove_prints_an_events_entries_with_verified_proofs_and_the_checkpoint(
    logged: tuple[Path, list[event_pb2.Event]],
) -> None:
    data_dir, events = logged
    code, out, err = audit("prove", events[1].id, "--gateway-id", "gw-1", "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("entry 3: ") and " PUBLISH ACCEPTED fire " in lines[0]
    assert f"event={events[1].id}" in lines[0]
    assert lines[1].startswith("  leaf hash ")
    assert any(line.startswith("  proof[0] ") for line in lines)
    at = next(i for i, line in enumerate(lines) if line.startswith("all verified against"))
    assert lines[at + 1] == "dutylink/audit/gw-1"  # the checkpoint note follows, origin first

    code, _, err = audit("prove", "no-such-event", "--gateway-id", "gw-1", "--data-dir", str(data_dir))  # fmt: skip
    assert code == 1 and "no entry of event 'no-such-event'" in err


def test_tail_prints_the_latest_entries_one_line_each(
    logged: tuple[Path, list[event_pb2.Event]],
) -> None:
    data_dir, events = logged
    code, out, err = audit("tail", "--gateway-id", "gw-1", "-n", "3", "--data-dir", str(data_dir))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[0] == "8" and f"event={events[2].id}" in lines[0]
    assert " PUBLISH STORED fire " in lines[0]
    assert " GATEWAY_STOP OK" in lines[2]


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_a_stopped_gateways_log_is_read_from_a_copy_leaving_its_store_untouched(
    tmp_path: Path,
) -> None:
    # The auditor arrives after the gateway stopped: starting it to read the log would add
    # entries to the very log under review.
    with running_nats(tmp_path) as (loop, url):
        loop.run(_exchange(url, tmp_path))
    store = embedded_dir(tmp_path)
    before = _digests(store)

    code, out, err = audit("verify", "--gateway-id", "gw-1", "--data-dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith("audit log gw-1: 11 entries, ") and "all verified" in out
    assert f"note: the gateway of {tmp_path} is stopped: reading a copy of its store" in err
    code, out, err = audit("tail", "--gateway-id", "gw-1", "--count", "3", "--data-dir", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert len(out.splitlines()) == 3

    assert _digests(store) == before
    assert running_url(tmp_path) is None  # and nothing is left running
