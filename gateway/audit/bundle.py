"""Evidence bundles: a gateway's audit log (or one incident's part of it) as plain files an
auditor can archive and check without DutyLink's operators, years later.

A bundle is a directory:
    manifest.json       what it holds: gateway id, origin, scope, sizes, SHA-256 of every file
    entries.jsonl       one entry per line: {"index", "data" (base64 of the stored bytes), "entry"
                        (the same decoded, for reading)}; leaf = SHA-256(0x00 || data)
    checkpoints.jsonl   signed checkpoints, one {"note": ...} per line, in stored order
    proofs.jsonl        (incident bundles) one inclusion proof per entry against the bundle's
                        last checkpoint: {"index", "tree_size", "proof": [base64 hashes]}
    keys/<id>.pub       the gateway's verifier key, as exported (compare it with the one you hold)
    README.md           how to check it, by tool or by hand

A full bundle is checked like the live log (`verify_log`); an incident bundle by verifying the
last checkpoint's signature and each entry's inclusion proof against it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from dutylink.v1 import audit_pb2
from gateway.audit.merkle import ProofError, leaf_hash, verify_inclusion
from gateway.audit.note import Checkpoint, NoteError, Verifier, open_note
from gateway.audit.verify import Report, verify_log

FORMAT = "dutylink-audit-bundle/1"
FULL = "full"


class BundleError(Exception):
    """The bundle cannot be read: a file is missing, malformed or altered. Names file and line."""


@dataclass(frozen=True)
class Proof:
    index: int
    tree_size: int
    hashes: tuple[bytes, ...]


@dataclass
class Bundle:
    gateway_id: str
    origin: str
    scope: str  # FULL or "incident <id>"
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    proofs: list[Proof] = field(default_factory=list)
    key: str = ""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _readable(data: bytes) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(audit_pb2.AuditEntry.FromString(data))
    except DecodeError:
        return {"undecodable": True}


_README = """# DutyLink audit evidence bundle

Gateway `{gateway_id}`, log origin `{origin}`, scope: {scope}. Exported {exported}.

## Check it with DutyLink

    dutylink audit verify --bundle . --key <the gateway's verifier key you hold>

Exit code 0 means everything below holds; otherwise each problem is printed, earliest first.
Without `--key` the key shipped in `keys/` is used: then compare its key id with the one you
were given out of band, or the check proves only that the bundle agrees with itself.

## Check it by hand (any language)

- Each line of `entries.jsonl` has `data`, the base64 of the entry exactly as stored (a
  protobuf `dutylink.v1.AuditEntry`, see `audit.proto`). Its leaf hash is
  SHA-256(0x00 || data) (RFC 6962 / RFC 9162 §2.1.1); never re-serialise `entry`.
- `checkpoints.jsonl` holds C2SP signed notes (`signed-note`) carrying C2SP
  `tlog-checkpoint`s: origin line, tree size, base64 Merkle root. The signature is Ed25519 under
  the key in `keys/` (a C2SP verifier key: name+key id+base64 of 0x01 || public key).
- Full bundle: the Merkle root of the first N leaves must equal each checkpoint's root for its
  size N, sizes must never go down, and no size may have two roots.
- Incident bundle: `proofs.jsonl` gives, per entry, an RFC 9162 §2.1.3 inclusion proof against
  the last checkpoint of `checkpoints.jsonl`.
- `manifest.json` lists the SHA-256 of every file: a changed file shows there first.

No personal data is in the log: events appear by id and digest, withheld fields by path and a
salted commitment (the gateway's AuditService reveals a salt to auditors).
"""


def write_bundle(directory: Path, bundle: Bundle) -> None:
    """Write `bundle` as files under `directory` (created; must be empty or absent)."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise BundleError(f"{directory}: not empty; export into a new directory")
    files: dict[str, str] = {
        "entries.jsonl": "".join(
            json.dumps({"index": i, "data": _b64(d), "entry": _readable(d)}, ensure_ascii=False)
            + "\n"
            for i, d in bundle.entries
        ),
        "checkpoints.jsonl": "".join(json.dumps({"note": n}) + "\n" for n in bundle.checkpoints),
        f"keys/{bundle.gateway_id}.pub": bundle.key + "\n",
        "README.md": _README.format(
            gateway_id=bundle.gateway_id,
            origin=bundle.origin,
            scope=bundle.scope,
            exported=datetime.now(UTC).isoformat(timespec="seconds"),
        ),
    }
    if bundle.proofs:
        files["proofs.jsonl"] = "".join(
            json.dumps(
                {"index": p.index, "tree_size": p.tree_size, "proof": [_b64(h) for h in p.hashes]}
            )
            + "\n"
            for p in bundle.proofs
        )
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    manifest = {
        "format": FORMAT,
        "gateway_id": bundle.gateway_id,
        "origin": bundle.origin,
        "scope": bundle.scope,
        "entries": len(bundle.entries),
        "checkpoints": len(bundle.checkpoints),
        "files": {
            name: hashlib.sha256(text.encode("utf-8")).hexdigest()
            for name, text in sorted(files.items())
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        return []
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise BundleError(f"{path}:{number}: not JSON: {error.msg}") from None
        if not isinstance(value, dict):
            raise BundleError(f"{path}:{number}: expected a JSON object")
        found.append((number, value))
    return found


def _unb64(path: Path, number: int, value: object) -> bytes:
    try:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return base64.b64decode(value, validate=True)
    except ValueError as error:
        raise BundleError(f"{path}:{number}: bad base64: {error}") from None


def read_bundle(directory: Path) -> tuple[Bundle, list[str]]:
    """The bundle under `directory`, and the files whose SHA-256 differs from the manifest's."""
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest_path}: cannot read: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: not a {FORMAT} manifest")
    altered = []
    for name, expected in dict(manifest.get("files", {})).items():
        path = directory / name
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if actual != expected:
            altered.append(f"{name}: " + ("missing" if actual == "missing" else "SHA-256 differs"))
    gateway_id = str(manifest.get("gateway_id", ""))
    bundle = Bundle(gateway_id, str(manifest.get("origin", "")), str(manifest.get("scope", "")))
    entries_path = directory / "entries.jsonl"
    for number, line in _lines(entries_path):
        bundle.entries.append(
            (int(line.get("index", -1)), _unb64(entries_path, number, line.get("data")))
        )
    bundle.checkpoints = [str(line.get("note", "")) for _, line in _lines(directory / "checkpoints.jsonl")]  # fmt: skip
    proofs_path = directory / "proofs.jsonl"
    for number, line in _lines(proofs_path):
        bundle.proofs.append(
            Proof(
                int(line.get("index", -1)),
                int(line.get("tree_size", -1)),
                tuple(_unb64(proofs_path, number, h) for h in line.get("proof", [])),
            )
        )
    key_path = directory / "keys" / f"{gateway_id}.pub"
    bundle.key = key_path.read_text(encoding="utf-8").strip() if key_path.is_file() else ""
    return bundle, altered


def verify_bundle(bundle: Bundle, verifier: Verifier, altered: Sequence[str] = ()) -> Report:
    """Check a bundle with the gateway's key: a full one as the live log, an incident one by its
    inclusion proofs against its last checkpoint."""
    if bundle.scope == FULL:
        positions = [index for index, _ in bundle.entries]
        report = verify_log(
            [data for _, data in bundle.entries],
            bundle.checkpoints,
            verifier,
            bundle.gateway_id,
            origin=bundle.origin or None,
            frame_problems=[f"file {name}" for name in altered]
            + (
                ["entries.jsonl: indices are not 0, 1, 2, ..."]
                if positions != list(range(len(positions)))
                else []
            ),
        )
        return report
    report = Report(bundle.gateway_id, len(bundle.entries), len(bundle.checkpoints))
    report.problems.extend(f"file {name}" for name in altered)
    if not bundle.checkpoints:
        report.problems.append("no checkpoint in the bundle: nothing to prove against")
        return report
    try:
        text, _ = open_note(bundle.checkpoints[-1], [verifier])
        checkpoint = Checkpoint.parse(text)
    except NoteError as error:
        report.problems.append(f"checkpoint: signature does not verify ({error})")
        return report
    if bundle.origin and checkpoint.origin != bundle.origin:
        report.problems.append(
            f"checkpoint: origin {checkpoint.origin!r}, expected {bundle.origin!r}"
        )
    report.latest_size, report.latest_root = checkpoint.size, checkpoint.root_hash
    proofs = {proof.index: proof for proof in bundle.proofs}
    for index, data in bundle.entries:
        proof = proofs.get(index)
        if proof is None:
            report.problems.append(f"entry {index}: no inclusion proof")
            continue
        if proof.tree_size != checkpoint.size:
            report.problems.append(
                f"entry {index}: proof is for size {proof.tree_size}, "
                f"the checkpoint's is {checkpoint.size}"
            )
            continue
        try:
            verify_inclusion(
                index, checkpoint.size, leaf_hash(data), proof.hashes, checkpoint.root_hash
            )
        except ProofError as error:
            report.problems.append(f"entry {index}: not in the signed tree ({error})")
    return report
