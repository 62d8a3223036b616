"""Evidence bundles: every kind of tampering an auditor's copy can suffer is caught.

One real gateway run (a refused event, incident events, another incident's event) is exported
once per module, as a full bundle and as an incident bundle, with `dutylink audit export`. Each
tamper class below copies a bundle, changes it as a forger (or accident) would — most of them
then "reseal" the manifest, recomputing its counts and hashes as anyone can — and runs
`dutylink audit verify --bundle --key <trusted key>`: it must exit 1 and name the file (and
entry) in a one-line reason. An untouched bundle verifies.

Reasons that name the log's size (or lines past its end) are written with `str.format` fields,
filled from the exported bundles (see `layout`): how many entries an accepted publish leaves
(ACCEPTED, then STORED) is the gateway's business, not this table's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from typer.testing import CliRunner

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2
from gateway.audit import merkle
from gateway.audit.bundle import PROFILE_FIELD, readable
from gateway.audit.note import Checkpoint, Signer, sign_note, unverified_text
from gateway.cli.audit import audit_app
from gateway.core.crypto import crypto_profile
from gateway.server import Gateway
from gateway.store.audit_reader import AuditReader
from gateway.testkit.inprocess import config_for_tests
from tests.cli_support import running_nats
from tests.conftest import TOKENS
from tests.factories import incident_event

INCIDENT = "INC-2026-0815-001"
OTHER_INCIDENT = "INC-2026-0815-002"
runner = CliRunner()


@dataclass(frozen=True)
class Exported:
    full: Path
    incident: Path
    key: str  # the trusted verifier key string


async def _exchange(url: str, data_dir: Path, profile: str) -> None:
    """Entries: 0 start, 1 INVALID (incident), 2-4 ACCEPTED (incident), 5 ACCEPTED (another
    incident), 6-8 STORED (incident), 9 STORED (another incident), 10 stop; checkpoints: one
    covering 0-9 (so the stop entry is the only one after it), one after the stop entry.

    The STORED entries wait in the gateway for the next append: the flush before a checkpoint,
    or the stop entry's append. Waiting for a checkpoint that covers all of them before the stop
    keeps them out of the stop's append, however late the checkpoint loop runs under load."""
    config = config_for_tests(
        nats={"data_dir": str(data_dir)},
        audit={"checkpoint_seconds": 0.05, "crypto_profile": profile},
        # No ring to seal or open with, so no key ring entry: the layout above stays as it is.
        personal_data={"seal": False, "key_file": str(data_dir / "no-ring.keys")},
    )
    events = [incident_event(incident_id=INCIDENT) for _ in range(4)]
    events[0].incident.title = ""  # refused: audited INVALID
    for update in events[2:]:  # INCIDENT is reported once (events[1]), then updated
        update.type = "incident.updated"
    events.append(incident_event(incident_id=OTHER_INCIDENT))
    async with (
        Gateway(config, nats_url=url) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        results = await fire.publish_batch(events)
        stored = sum(result.HasField("receipt") for result in results)
        assert stored == len(events) - 1, results
        client = await nats.connect(url)
        try:
            reader = AuditReader(client.jetstream())
            for _ in range(400):  # up to 20 s
                latest = await reader.latest_checkpoint("gw-1")
                if latest is not None:
                    signed = [
                        audit_pb2.AuditEntry.FromString(data).outcome
                        async for _, data in reader.entries("gw-1", 0, latest.checkpoint.size)
                    ]
                    if signed.count(audit_pb2.AUDIT_OUTCOME_STORED) == stored:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no checkpoint covered the events stored")
        finally:
            await client.close()


def audit(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(audit_app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module", params=["international", "national"])
def exported(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Exported:
    """The bundles of one exchange's log, under each crypto profile: every tamper class below
    is caught under both."""
    data_dir = tmp_path_factory.mktemp("gateway")
    with running_nats(data_dir) as (loop, url):
        loop.run(_exchange(url, data_dir, request.param))
        for name, extra in (("full", []), ("incident", ["--incident", INCIDENT])):
            out = data_dir / name
            code, _, err = audit(
                "export",
                "--gateway-id",
                "gw-1",
                "--out",
                str(out),
                "--data-dir",
                str(data_dir),
                *extra,
            )
            assert code == 0, err
    return Exported(
        data_dir / "full",
        data_dir / "incident",
        (data_dir / "audit" / "gw-1.pub").read_text().strip(),
    )


# --- what a forger does -----------------------------------------------------------------------

FORGER = Signer("dutylink/audit/gw-1", bytes([7]) * 32)


def rows(bundle: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / name).read_text().splitlines()]


def write_rows(bundle: Path, name: str, values: list[dict[str, Any]]) -> None:
    (bundle / name).write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values))


def manifest(bundle: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return value


def write_manifest(bundle: Path, value: dict[str, Any]) -> None:
    (bundle / "manifest.json").write_text(json.dumps(value, indent=2) + "\n")


def reseal(bundle: Path) -> None:
    """Make the manifest agree with the files again: counts and digests (its crypto profile's
    hash) of what it lists."""
    value = manifest(bundle)
    hashing = crypto_profile(value.get(PROFILE_FIELD, "international")).hash
    for field, name in (("entries", "entries.jsonl"), ("checkpoints", "checkpoints.jsonl")):
        if (bundle / name).is_file():
            value[field] = len((bundle / name).read_text().splitlines())
    value["files"] = {
        name: hashing.digest((bundle / name).read_bytes()).hex()
        for name in value["files"]
        if (bundle / name).is_file()
    }
    write_manifest(bundle, value)


def decoded(row: dict[str, Any]) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry.FromString(base64.b64decode(row["data"]))


def with_entry(row: dict[str, Any], entry: audit_pb2.AuditEntry) -> dict[str, Any]:
    """The line rewritten consistently: stored bytes and their readable view."""
    data = entry.SerializeToString()
    return {"index": row["index"], "data": base64.b64encode(data).decode(), "entry": readable(data)}


def forged(index: int) -> dict[str, Any]:
    entry = audit_pb2.AuditEntry(
        sequence=index,
        gateway_id="gw-1",
        actor_agency="police",
        action=audit_pb2.AUDIT_ACTION_PUBLISH,
        outcome=audit_pb2.AUDIT_OUTCOME_ACCEPTED,
        event_id="forged-event",
    )
    return with_entry({"index": index}, entry)


def rewrite_from(bundle: Path, start: int) -> None:
    """Entries from `start` on say police published them (bytes and views alike)."""
    values = rows(bundle, "entries.jsonl")
    for row in values[start:]:
        entry = decoded(row)
        entry.actor_agency = "police"
        row.update(with_entry(row, entry))
    write_rows(bundle, "entries.jsonl", values)


def checkpoint_sizes(bundle: Path) -> list[int]:
    return [
        Checkpoint.parse(unverified_text(r["note"])).size for r in rows(bundle, "checkpoints.jsonl")
    ]


def edit_view(field: str, value: object, line: int = 1) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        values = rows(bundle, "entries.jsonl")
        values[line]["entry"][field] = value
        write_rows(bundle, "entries.jsonl", values)
        reseal(bundle)

    return tamper


def edit_line(
    name: str, line: int, change: Callable[[dict[str, Any]], None]
) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        values = rows(bundle, name)
        change(values[line])
        write_rows(bundle, name, values)
        reseal(bundle)

    return tamper


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        value = manifest(bundle)
        change(value)
        write_manifest(bundle, value)

    return tamper


def rearrange(name: str, order: Callable[[list[Any]], list[Any]]) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        write_rows(bundle, name, order(rows(bundle, name)))
        reseal(bundle)

    return tamper


def truncate(name: str) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        data = (bundle / name).read_bytes()
        (bundle / name).write_bytes(data[: len(data) - 40])
        reseal(bundle)

    return tamper


def delete(name: str, *, unlist: bool = True) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        (bundle / name).unlink()
        if unlist and name != "manifest.json":
            value = manifest(bundle)
            del value["files"][name]
            write_manifest(bundle, value)
            reseal(bundle)

    return tamper


# --- full-bundle tamper classes ---------------------------------------------------------------


def flip_data_byte(bundle: Path) -> None:  # no reseal: the manifest's hash shows it
    values = rows(bundle, "entries.jsonl")
    data = bytearray(base64.b64decode(values[3]["data"]))
    data[-1] ^= 1
    values[3]["data"] = base64.b64encode(bytes(data)).decode()
    write_rows(bundle, "entries.jsonl", values)


def invalid_made_ok(bundle: Path) -> None:
    values = rows(bundle, "entries.jsonl")
    entry = decoded(values[1])
    entry.outcome, entry.reason = audit_pb2.AUDIT_OUTCOME_OK, ""
    values[1] = with_entry(values[1], entry)
    write_rows(bundle, "entries.jsonl", values)
    reseal(bundle)


def other_gateways_entry(bundle: Path) -> None:
    values = rows(bundle, "entries.jsonl")
    entry = decoded(values[2])
    entry.gateway_id = "gw-2"
    values[2] = with_entry(values[2], entry)
    write_rows(bundle, "entries.jsonl", values)
    reseal(bundle)


def duplicate_outcome_key(bundle: Path) -> None:
    """Parsers where the first of two equal keys wins read the INVALID entry as OK."""
    lines = (bundle / "entries.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"entry": {', '"entry": {"outcome": "AUDIT_OUTCOME_OK", ', 1)
    (bundle / "entries.jsonl").write_text("".join(lines))
    reseal(bundle)


def all_checkpoints_removed_entries_rewritten(bundle: Path) -> None:
    rewrite_from(bundle, 1)
    (bundle / "checkpoints.jsonl").write_text("")
    reseal(bundle)


def first_checkpoint_kept_later_entries_rewritten(bundle: Path) -> None:
    first = rows(bundle, "checkpoints.jsonl")[0]
    rewrite_from(bundle, checkpoint_sizes(bundle)[0])
    write_rows(bundle, "checkpoints.jsonl", [first])
    reseal(bundle)


def forged_entries_appended(bundle: Path) -> None:
    values = rows(bundle, "entries.jsonl")
    values += [forged(len(values)), forged(len(values) + 1)]
    write_rows(bundle, "entries.jsonl", values)
    reseal(bundle)


def newest_checkpoint_removed(bundle: Path) -> None:
    write_rows(bundle, "checkpoints.jsonl", rows(bundle, "checkpoints.jsonl")[:-1])
    reseal(bundle)


def resigned_by_another_key(bundle: Path) -> None:
    rewrite_from(bundle, 1)
    leaves = [merkle.leaf_hash(base64.b64decode(r["data"])) for r in rows(bundle, "entries.jsonl")]
    notes = [
        sign_note(Checkpoint(FORGER.name, size, merkle.root(leaves[:size])).to_text(), [FORGER])
        for size in checkpoint_sizes(bundle)
    ]
    write_rows(bundle, "checkpoints.jsonl", [{"note": n} for n in notes])
    reseal(bundle)


def signature_edited(row: dict[str, Any]) -> None:
    note: str = row["note"]
    cut = note.rindex(" ") + 10
    row["note"] = note[:cut] + ("A" if note[cut] != "A" else "B") + note[cut + 1 :]


def size_edited(row: dict[str, Any]) -> None:
    origin, size, rest = row["note"].split("\n", 2)
    row["note"] = f"{origin}\n{int(size) - 1}\n{rest}"


def key_replaced(bundle: Path) -> None:
    (bundle / "keys" / "gw-1.pub").write_text(FORGER.verifier().key_string() + "\n")
    reseal(bundle)


def readme_edited(bundle: Path) -> None:
    readme = bundle / "README.md"
    readme.write_text(readme.read_text().replace("Exit code 0", "Any exit code"))
    reseal(bundle)


def extra_file(*, listed: bool, name: str = "notes.txt") -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        (bundle / name).write_text("nothing to see\n")
        if listed:
            value = manifest(bundle)
            value["files"][name] = "0" * 64
            write_manifest(bundle, value)
            reseal(bundle)

    return tamper


def symlinked_readme(bundle: Path) -> None:
    target = bundle.parent / "elsewhere.md"
    shutil.move(bundle / "README.md", target)
    (bundle / "README.md").symlink_to(target)


def set_field(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(row: dict[str, Any]) -> None:
        row[field] = value

    return change


def drop_field(field: str) -> Callable[[dict[str, Any]], None]:
    def change(row: dict[str, Any]) -> None:
        del row[field]

    return change


def scope_changed(bundle: Path) -> None:
    value = manifest(bundle)
    value["scope"] = f"incident {INCIDENT}"
    write_manifest(bundle, value)
    readme = bundle / "README.md"
    readme.write_text(readme.read_text().replace("scope: full", f"scope: incident {INCIDENT}"))
    reseal(bundle)


# (class, tamper, the file the reason must start with, a phrase of the reason)
FULL_CLASSES: list[tuple[str, Callable[[Path], None], str, str]] = [
    (
        "entry bytes edited",
        flip_data_byte,
        "entries.jsonl:",
        "differs from the one manifest.json lists",
    ),
    (
        "entry bytes and view rewritten (INVALID made OK)",
        invalid_made_ok,
        "checkpoints.jsonl:",
        "root mismatch",
    ),
    (
        "entry of another gateway swapped in",
        other_gateways_entry,
        "entries.jsonl:",
        "gateway_id field says 'gw-2'",
    ),
    (
        "entry removed",
        rearrange("entries.jsonl", lambda r: r[:2] + r[3:]),
        "entries.jsonl:3",
        "index 3, expected 2",
    ),
    (
        "last entry removed",
        rearrange("entries.jsonl", lambda r: r[:-1]),
        "checkpoints.jsonl: checkpoint",
        "(size {size}) covers more entries than the log holds ({last})",
    ),
    (
        "entries reordered",
        rearrange("entries.jsonl", lambda r: [r[0], r[2], r[1], *r[3:]]),
        "entries.jsonl:2",
        "index 2, expected 1",
    ),
    (
        "entry duplicated",
        rearrange("entries.jsonl", lambda r: [*r[:3], r[2], *r[3:]]),
        "entries.jsonl:4",
        "index 2, expected 3",
    ),
    (
        "entry index edited",
        edit_line("entries.jsonl", 4, set_field("index", 9)),
        "entries.jsonl:5",
        "index 9, expected 4",
    ),
    (
        "all checkpoints removed, entries rewritten",
        all_checkpoints_removed_entries_rewritten,
        "checkpoints.jsonl:",
        "no checkpoint signed by the trusted key",
    ),
    (
        "first checkpoint kept, later entries rewritten",
        first_checkpoint_kept_later_entries_rewritten,
        "entries.jsonl:",
        "unsigned tail",
    ),
    (
        "forged entries appended after the last checkpoint",
        forged_entries_appended,
        "entries.jsonl:{past} (entry {size})",
        "unsigned tail",
    ),
    ("newest checkpoint removed", newest_checkpoint_removed, "entries.jsonl:", "unsigned tail"),
    (
        "view: outcome INVALID -> OK",
        edit_view("outcome", "AUDIT_OUTCOME_OK"),
        "entries.jsonl:2 (entry 1)",
        "field outcome says",
    ),
    (
        "view: another agency",
        edit_view("actorAgency", "police"),
        "entries.jsonl:2 (entry 1)",
        "field actorAgency says",
    ),
    (
        "view: another event id",
        edit_view("eventId", "another-event", 2),
        "entries.jsonl:3 (entry 2)",
        "field eventId says",
    ),
    (
        "view: a field removed",
        edit_line("entries.jsonl", 1, lambda r: r["entry"].pop("reason")),
        "entries.jsonl:2 (entry 1)",
        "field reason is missing",
    ),
    (
        "view: a field added",
        edit_view("comment", "checked"),
        "entries.jsonl:2 (entry 1)",
        "field comment is not in the stored bytes",
    ),
    (
        "view: a list item edited",
        edit_line("entries.jsonl", 2, lambda r: r["entry"]["incidentIds"].__setitem__(0, "INC-X")),
        "entries.jsonl:3 (entry 2)",
        "field incidentIds[0] says",
    ),
    (
        "view deleted",
        edit_line("entries.jsonl", 1, drop_field("entry")),
        "entries.jsonl:2 (entry 1)",
        "readable view (field 'entry') is gone",
    ),
    (
        "view replaced by 'undecodable'",
        edit_line("entries.jsonl", 1, set_field("entry", {"undecodable": True})),
        "entries.jsonl:2 (entry 1)",
        "readable view differs",
    ),
    (
        "view: a duplicate key shows some readers another outcome",
        duplicate_outcome_key,
        "entries.jsonl:2",
        "not JSON (duplicate key 'outcome')",
    ),
    (
        "field added to an entry line",
        edit_line("entries.jsonl", 1, set_field("verified", True)),
        "entries.jsonl:2",
        "unknown field 'verified'",
    ),
    (
        "entry data not base64",
        edit_line("entries.jsonl", 1, set_field("data", "not base64!")),
        "entries.jsonl:2",
        "bad base64",
    ),
    (
        "entry line not JSON",
        lambda b: (b / "entries.jsonl").write_text(
            (b / "entries.jsonl").read_text().replace('"index": 3', '"index": 3,,')
        ),
        "entries.jsonl:4",
        "not JSON",
    ),
    ("entries.jsonl truncated", truncate("entries.jsonl"), "entries.jsonl:{size}", "truncated"),
    ("entries.jsonl deleted", delete("entries.jsonl"), "entries.jsonl", "missing"),
    (
        "checkpoint signature edited",
        edit_line("checkpoints.jsonl", 0, signature_edited),
        "checkpoints.jsonl: checkpoint 0",
        "signature does not verify",
    ),
    (
        "checkpoint body edited",
        edit_line("checkpoints.jsonl", 0, size_edited),
        "checkpoints.jsonl: checkpoint 0",
        "signature does not verify",
    ),
    (
        "checkpoints re-signed by another key",
        resigned_by_another_key,
        "checkpoints.jsonl: checkpoint 0",
        "no signature by a trusted key",
    ),
    (
        "checkpoints reordered",
        rearrange("checkpoints.jsonl", lambda r: r[::-1]),
        "checkpoints.jsonl: checkpoint",
        "rollback",
    ),
    (
        "checkpoints.jsonl truncated",
        truncate("checkpoints.jsonl"),
        "checkpoints.jsonl:",
        "truncated",
    ),
    ("checkpoints.jsonl deleted", delete("checkpoints.jsonl"), "checkpoints.jsonl", "missing"),
    (
        "manifest: entry count edited",
        edit_manifest(lambda m: m.update(entries=m["entries"] + 1)),
        "manifest.json",
        "says {past} entries, entries.jsonl holds {size}",
    ),
    (
        "manifest: checkpoint count edited",
        edit_manifest(lambda m: m.update(checkpoints=m["checkpoints"] - 1)),
        "manifest.json",
        "checkpoints, checkpoints.jsonl holds",
    ),
    (
        "manifest: gateway id edited",
        edit_manifest(lambda m: m.update(gateway_id="gw-2")),
        "keys/gw-1.pub",
        "not part of a full bundle",
    ),
    (
        "manifest: origin edited",
        edit_manifest(lambda m: m.update(origin="dutylink/audit/gw-2")),
        "manifest.json",
        "origin 'dutylink/audit/gw-2' is not the trusted key's name",
    ),
    ("manifest: scope edited (README too)", scope_changed, "proofs.jsonl", "missing"),
    (
        "manifest: unknown format",
        edit_manifest(lambda m: m.update(format="dutylink-audit-bundle/9")),
        "manifest.json",
        "not a dutylink-audit-bundle/2",
    ),
    (
        "manifest: field removed",
        edit_manifest(lambda m: m.pop("entries")),
        "manifest.json",
        "no field 'entries'",
    ),
    (
        "manifest: field added",
        edit_manifest(lambda m: m.update(verified=True)),
        "manifest.json",
        "unknown field 'verified'",
    ),
    (
        "manifest: count of the wrong type",
        edit_manifest(lambda m: m.update(entries=str(m["entries"]))),
        "manifest.json",
        "field 'entries' is not a int",
    ),
    (
        "manifest: a file's hash edited",
        edit_manifest(lambda m: m["files"].update({"README.md": "0" * 64})),
        "README.md",
        "differs from the one manifest.json lists",
    ),
    (
        "manifest: a file unlisted",
        edit_manifest(lambda m: m["files"].pop("README.md")),
        "manifest.json",
        "does not list README.md",
    ),
    ("manifest deleted", delete("manifest.json"), "manifest.json", "missing"),
    (
        "manifest not JSON",
        lambda b: (b / "manifest.json").write_text("{"),
        "manifest.json",
        "not JSON",
    ),
    ("extra file, unlisted", extra_file(listed=False), "notes.txt", "an added file"),
    ("extra file, listed in the manifest", extra_file(listed=True), "notes.txt", "an added file"),
    (
        "extra key file",
        extra_file(listed=False, name="keys/gw-2.pub"),
        "keys/gw-2.pub",
        "an added file",
    ),
    (
        "README edited",
        readme_edited,
        "README.md",
        "differs from the text derived from manifest.json",
    ),
    ("README replaced by a symbolic link", symlinked_readme, "README.md", "not a regular file"),
    ("key file replaced by another key", key_replaced, "keys/gw-1.pub", "not the trusted key"),
    ("key file deleted", delete("keys/gw-1.pub"), "keys/gw-1.pub", "missing"),
]


# --- incident-bundle tamper classes -----------------------------------------------------------


def proof_hash_edited(row: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(row["proof"][0]))
    raw[3] ^= 8
    row["proof"][0] = base64.b64encode(bytes(raw)).decode()


def first_entry_of(bundle: Path, incident: str) -> int:
    return next(
        r["index"]
        for r in rows(bundle, "entries.jsonl")
        if incident in r["entry"].get("incidentIds", [])
    )


def line_it_would_take(bundle: Path, index: int) -> int:
    """The 1-based line of entries.jsonl an entry with `index` takes when put in index order."""
    return 1 + sum(r["index"] < index for r in rows(bundle, "entries.jsonl"))


def another_incidents_entry_with_a_valid_proof(full: Path) -> Callable[[Path], None]:
    """The other incident's first entry, put in index order (so only its incident is wrong)."""

    def tamper(bundle: Path) -> None:
        every = rows(full, "entries.jsonl")
        leaves = [merkle.leaf_hash(base64.b64decode(r["data"])) for r in every]
        size = rows(bundle, "proofs.jsonl")[0]["tree_size"]
        index = first_entry_of(full, OTHER_INCIDENT)
        proof = merkle.inclusion_proof(leaves[:size], index)
        at = line_it_would_take(bundle, index) - 1
        entries, proofs = rows(bundle, "entries.jsonl"), rows(bundle, "proofs.jsonl")
        entries.insert(at, every[index])
        proofs.insert(
            at,
            {
                "index": index,
                "tree_size": size,
                "proof": [base64.b64encode(h).decode() for h in proof],
            },
        )
        write_rows(bundle, "entries.jsonl", entries)
        write_rows(bundle, "proofs.jsonl", proofs)
        reseal(bundle)

    return tamper


def older_checkpoint(full: Path) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        write_rows(bundle, "checkpoints.jsonl", rows(full, "checkpoints.jsonl")[:1])
        reseal(bundle)

    return tamper


def incident_entry_duplicated(bundle: Path) -> None:
    for name in ("entries.jsonl", "proofs.jsonl"):
        values = rows(bundle, name)
        write_rows(bundle, name, [*values[:2], values[1], *values[2:]])
    reseal(bundle)


def incident_checkpoint_resigned(bundle: Path) -> None:
    row = rows(bundle, "checkpoints.jsonl")[0]
    write_rows(
        bundle, "checkpoints.jsonl", [{"note": sign_note(unverified_text(row["note"]), [FORGER])}]
    )
    reseal(bundle)


def incident_scope_changed(bundle: Path) -> None:
    value = manifest(bundle)
    value["scope"] = f"incident {OTHER_INCIDENT}"
    write_manifest(bundle, value)
    readme = bundle / "README.md"
    readme.write_text(readme.read_text().replace(INCIDENT, OTHER_INCIDENT))
    reseal(bundle)


INCIDENT_CLASSES: list[tuple[str, Callable[[Path], None], str, str]] = [
    (
        "proof hash edited",
        edit_line("proofs.jsonl", 0, proof_hash_edited),
        "proofs.jsonl:1 (entry 1)",
        "not in the signed tree",
    ),
    (
        "proof removed",
        rearrange("proofs.jsonl", lambda r: r[1:]),
        "proofs.jsonl:1",
        "proof of entry 2, but entries.jsonl:1 is entry 1",
    ),
    (
        "proofs reordered",
        rearrange("proofs.jsonl", lambda r: [r[1], r[0], *r[2:]]),
        "proofs.jsonl:1",
        "proof of entry 2, but entries.jsonl:1 is entry 1",
    ),
    (
        "proof tree size edited",
        edit_line("proofs.jsonl", 2, set_field("tree_size", 6)),
        "proofs.jsonl:3 (entry 3)",
        "proof is for size 6",
    ),
    ("proofs.jsonl deleted", delete("proofs.jsonl"), "proofs.jsonl", "missing"),
    (
        "incident entry index edited",
        edit_line("entries.jsonl", 1, set_field("index", 5)),
        "entries.jsonl:2 (entry 5)",
        "sequence field says 2",
    ),
    (
        "incident entry duplicated with its proof",
        incident_entry_duplicated,
        "entries.jsonl:3 (entry 2)",
        "not after entry 2",
    ),
    (
        "incident view edited",
        edit_view("eventId", "another-event", 0),
        "entries.jsonl:1 (entry 1)",
        "field eventId says",
    ),
    (
        "incident checkpoint re-signed by another key",
        incident_checkpoint_resigned,
        "checkpoints.jsonl:1",
        "no signature by a trusted key",
    ),
    (
        "incident scope changed to another incident",
        incident_scope_changed,
        "entries.jsonl:1 (entry 1)",
        f"not an entry of incident {OTHER_INCIDENT!r}",
    ),
]
# These need the full bundle (from the fixture) to forge with.
INCIDENT_CLASSES_FROM_FULL: list[tuple[str, Callable[[Path], Callable[[Path], None]], str, str]] = [
    (
        "another incident's entry added with a valid proof",
        another_incidents_entry_with_a_valid_proof,
        "entries.jsonl:{other_line} (entry {other})",
        f"not an entry of incident {INCIDENT!r}",
    ),
    (
        "checkpoint replaced by an older signed one",
        older_checkpoint,
        "proofs.jsonl:1 (entry 1)",
        "proof is for size {size}, the checkpoint's is",
    ),
]


@pytest.fixture(scope="module")
def layout(exported: Exported) -> dict[str, int]:
    """The `str.format` fields of the reasons, read from the exported bundles."""
    size: int = manifest(exported.full)["entries"]
    assert checkpoint_sizes(exported.full)[-1] == size  # the whole log is signed
    other = first_entry_of(exported.full, OTHER_INCIDENT)
    return {
        "size": size,
        "last": size - 1,  # the stop entry's index; how many entries are left without it
        "past": size + 1,  # one more than the log holds
        "other": other,  # the other incident's first entry
        "other_line": line_it_would_take(exported.incident, other),
    }


def copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target, symlinks=True)
    return target


def assert_caught(bundle: Path, key: str, where: str, phrase: str, layout: dict[str, int]) -> None:
    where, phrase = where.format(**layout), phrase.format(**layout)
    code, out, err = audit("verify", "--bundle", str(bundle), "--key", key)
    assert code == 1, (out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[-1].startswith("error: ")
    assert any(line.startswith(where) and phrase in line for line in lines), err


@pytest.mark.parametrize(
    ("tamper", "where", "phrase"), [c[1:] for c in FULL_CLASSES], ids=[c[0] for c in FULL_CLASSES]
)
def test_a_tampered_full_bundle_fails_with_a_reason_naming_the_file(
    exported: Exported,
    layout: dict[str, int],
    tmp_path: Path,
    tamper: Callable[[Path], None],
    where: str,
    phrase: str,
) -> None:
    bundle = copy(exported.full, tmp_path)
    tamper(bundle)
    assert_caught(bundle, exported.key, where, phrase, layout)


@pytest.mark.parametrize(
    ("tamper", "where", "phrase"),
    [c[1:] for c in INCIDENT_CLASSES],
    ids=[c[0] for c in INCIDENT_CLASSES],
)
def test_a_tampered_incident_bundle_fails_with_a_reason_naming_the_file(
    exported: Exported,
    layout: dict[str, int],
    tmp_path: Path,
    tamper: Callable[[Path], None],
    where: str,
    phrase: str,
) -> None:
    bundle = copy(exported.incident, tmp_path)
    tamper(bundle)
    assert_caught(bundle, exported.key, where, phrase, layout)


@pytest.mark.parametrize(
    ("forge", "where", "phrase"),
    [c[1:] for c in INCIDENT_CLASSES_FROM_FULL],
    ids=[c[0] for c in INCIDENT_CLASSES_FROM_FULL],
)
def test_an_incident_bundle_forged_from_the_full_log_fails_with_a_reason_naming_the_file(
    exported: Exported,
    layout: dict[str, int],
    tmp_path: Path,
    forge: Callable[[Path], Callable[[Path], None]],
    where: str,
    phrase: str,
) -> None:
    bundle = copy(exported.incident, tmp_path)
    forge(exported.full)(bundle)
    assert_caught(bundle, exported.key, where, phrase, layout)


def test_there_are_at_least_37_tamper_classes() -> None:
    assert len(FULL_CLASSES) + len(INCIDENT_CLASSES) + len(INCIDENT_CLASSES_FROM_FULL) >= 37


@pytest.mark.parametrize("scope", ["full", "incident"])
def test_an_untouched_bundle_verifies(
    exported: Exported, layout: dict[str, int], tmp_path: Path, scope: str
) -> None:
    bundle = copy(exported.full if scope == "full" else exported.incident, tmp_path)
    code, out, err = audit("verify", "--bundle", str(bundle), "--key", exported.key)
    assert (code, err) == (0, "")
    assert out.startswith("audit log gw-1: ")
    assert f", all verified; latest checkpoint size {layout['size']} " in out


def test_an_unsigned_tail_is_accepted_only_when_allowed_and_is_then_reported(
    exported: Exported, tmp_path: Path
) -> None:
    bundle = copy(exported.full, tmp_path)
    newest_checkpoint_removed(bundle)
    code, out, err = audit(
        "verify", "--bundle", str(bundle), "--key", exported.key, "--allow-unsigned-tail"
    )
    assert (code, err) == (0, "")
    # The stop entry: `_exchange` waited for a checkpoint covering every entry before it.
    assert out.rstrip().endswith("; 1 newer entry not yet signed")


def test_allowing_an_unsigned_tail_still_needs_a_signed_checkpoint(
    exported: Exported, layout: dict[str, int], tmp_path: Path
) -> None:
    bundle = copy(exported.full, tmp_path)
    all_checkpoints_removed_entries_rewritten(bundle)
    code, _, err = audit(
        "verify", "--bundle", str(bundle), "--key", exported.key, "--allow-unsigned-tail"
    )
    assert code == 1
    assert (
        "checkpoints.jsonl: no checkpoint signed by the trusted key: "
        f"none of the {layout['size']} entries is signed"
    ) in err


def test_a_format_1_bundle_still_verifies_its_readme_by_hash_alone(
    exported: Exported, tmp_path: Path
) -> None:
    bundle = copy(exported.full, tmp_path)
    value = manifest(bundle)
    value["format"] = "dutylink-audit-bundle/1"
    write_manifest(bundle, value)
    readme_edited(bundle)  # format 1 READMEs held the export time: not derivable
    code, _, err = audit("verify", "--bundle", str(bundle), "--key", exported.key)
    assert (code, err) == (0, "")


async def _export_while_running(url: str, data_dir: Path, out: Path) -> tuple[int, str, str]:
    """A gateway that signs only when it stops: its second run's start and key ring entries
    are unsigned."""
    config = config_for_tests(nats={"data_dir": str(data_dir)}, audit={"checkpoint_seconds": 3600})
    async with Gateway(config, nats_url=url):
        pass
    async with Gateway(config, nats_url=url):
        args = ["export", "--gateway-id", "gw-1", "--out", str(out), "--data-dir", str(data_dir)]
        return await asyncio.to_thread(audit, *args)


def test_export_leaves_out_the_entries_no_checkpoint_signs_yet(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with running_nats(tmp_path) as (loop, url):
        code, stdout, err = loop.run(_export_while_running(url, tmp_path, out))
    assert code == 0, err
    line = next(line for line in stdout.splitlines() if line.startswith("exported "))
    assert line.startswith("exported 3 entries and 1 checkpoint of gw-1 (full) to ")
    assert line.endswith(
        "; left out 2 newer entries no checkpoint signs yet (export again after the next one)"
    )
    key = (tmp_path / "audit" / "gw-1.pub").read_text().strip()
    assert audit("verify", "--bundle", str(out), "--key", key)[0] == 0
