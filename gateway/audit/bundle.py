"""Evidence bundles: a gateway's audit log (or one incident's part of it) as plain files an
auditor can archive and check without DutyLink's operators, years later.

A bundle is a directory:
    manifest.json       what it holds: format, gateway id, origin, scope, counts, SHA-256 of
                        every other file
    entries.jsonl       one entry per line: {"index", "data" (base64 of the stored bytes), "entry"
                        (the same decoded, for reading)}; leaf = SHA-256(0x00 || data)
    checkpoints.jsonl   signed checkpoints, one {"note": ...} per line, in stored order
    proofs.jsonl        (incident bundles) one inclusion proof per entry against the bundle's
                        only checkpoint: {"index", "tree_size", "proof": [base64 hashes]}
    keys/<id>.pub       the gateway's verifier key, as exported (compare it with the one you hold)
    README.md           how to check it, by tool or by hand

Only the stored entry bytes and the signed checkpoints are evidence; everything else is derived
from them and checked to be exactly that (`check_bundle`): each readable view against its
decoded bytes, the manifest field by field (format 2 has nothing a forger could choose: it needs
no signature of its own), the file set, the key file against the trusted key, the README
against its template. A bundle verifies only if every entry is covered by a checkpoint the
trusted key signed: a full one by `verify_log` plus "the last checkpoint covers every entry"
(an unsigned tail fails unless allowed), an incident one by each entry's inclusion proof
against its checkpoint. Everything here is pure over the files' bytes; reading and writing them is
gateway.store.audit_files'.

Format 1 (before December 2026) differs only in its README, which carried the export time: it
is checked by its SHA-256 in the manifest alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from dutylink.v1 import audit_pb2
from gateway.audit.merkle import ProofError, leaf_hash, tree_for, verify_inclusion
from gateway.audit.note import Checkpoint, NoteError, Verifier, open_note
from gateway.audit.verify import Report, verify_log
from gateway.core.crypto import INTERNATIONAL, NATIONAL

FORMAT = "dutylink-audit-bundle/2"
FORMAT_1 = "dutylink-audit-bundle/1"  # README.md not derivable (it held the export time)
FULL = "full"
INCIDENT = "incident "  # scope prefix: "incident <incident id>"

MANIFEST = "manifest.json"
ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
PROOFS = "proofs.jsonl"
README = "README.md"

# A gateway id names a file (keys/<id>.pub): no path separators, no leading dot.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DIGEST_HEX = re.compile(r"[0-9a-f]{64}")
_MANIFEST_FIELDS: dict[str, type] = {
    "format": str,
    "gateway_id": str,
    "origin": str,
    "scope": str,
    "entries": int,
    "checkpoints": int,
    "files": dict,
}
# Optional (bundles written before crypto profiles lack it: theirs is "international"): the
# profile of the log, whose hash also gives the files' digests (SHA-256 or SM3).
PROFILE_FIELD = "crypto_profile"
_ENTRY_FIELDS = ("index", "data", "entry")
_PROOF_FIELDS = ("index", "tree_size", "proof")


class BundleError(Exception):
    """The bundle cannot be read or written at all (not a directory, unreadable, not empty)."""


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


def key_file(gateway_id: str) -> str:
    return f"keys/{gateway_id}.pub"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def readable(data: bytes) -> dict[str, Any]:
    """The readable view of stored entry bytes, as `entries.jsonl` holds it."""
    try:
        return json_format.MessageToDict(audit_pb2.AuditEntry.FromString(data))
    except DecodeError:
        return {"undecodable": True}


_README = """# DutyLink audit evidence bundle

Gateway `{gateway_id}`, log origin `{origin}`, scope: {scope}.

## Check it with DutyLink

    dutylink audit verify --bundle . --key <the gateway's verifier key you hold>

Exit code 0 means everything below holds; otherwise each problem is printed, one line each
naming its file, earliest first. Without `--key` the key shipped in `keys/` is used: then
compare its key id with the one you were given out of band, or the check proves only that the
bundle agrees with itself.

## Check it by hand (any language)

- Each line of `entries.jsonl` has `data`, the base64 of the entry exactly as stored (a
  protobuf `dutylink.v1.AuditEntry`, see `audit.proto`). Its leaf hash is
  SHA-256(0x00 || data) (RFC 6962 / RFC 9162 §2.1.1); never re-serialise `entry`, which is
  only `data` decoded (protobuf JSON mapping) and must equal it.
- `checkpoints.jsonl` holds C2SP signed notes (`signed-note`) carrying C2SP
  `tlog-checkpoint`s: origin line, tree size, base64 Merkle root. The signature is Ed25519 under
  the key in `keys/` (a C2SP verifier key: name+key id+base64 of 0x01 || public key).
- Only what a checkpoint signs is evidence: every entry must be covered by one.
- Full bundle: the Merkle root of the first N leaves must equal each checkpoint's root for its
  size N, sizes must never go down, no size may have two roots, and the last checkpoint's size
  must be the number of entries.
- Incident bundle: `proofs.jsonl` gives, per entry, an RFC 9162 §2.1.3 inclusion proof against
  the one checkpoint of `checkpoints.jsonl`; each entry names the incident in `incident_ids`.
- `manifest.json` lists the SHA-256 of every other file; its other fields (gateway id, origin =
  the key's name, scope, counts) and this README are derived from the rest: nothing in them
  needs a signature of its own.

No personal data is in the log: events appear by id and digest, withheld fields by path and a
salted commitment (the gateway's AuditService reveals a salt to auditors).
"""


# Appended to a national-profile bundle's README: what to read in place of SHA-256 and Ed25519.
_NATIONAL_README = """
## National crypto profile (manifest.json: "crypto_profile": "national")

Read SM3 (GB/T 32905) wherever the above says SHA-256: the leaf hash SM3(0x00 || data), the node
hash SM3(0x01 || left || right), the empty tree's root SM3(""), the digests of manifest.json.
Checkpoints are signed with SM2 (GB/T 32918.2) over SM3, the signer's ID being the default
"1234567812345678" (GB/T 35276); each signature is DER (a SEQUENCE of r and s) after the 4-byte
key id. The key in `keys/` is name+key id+base64 of 0xff "dutylink.sm2-sm3" || the 64-byte public
key (x || y), and its key id is SM3(name || 0x0A || 0xff "dutylink.sm2-sm3" || public key)[:4].
"""


def _readme(gateway_id: str, origin: str, scope: str, profile: str) -> str:
    text = _README.format(gateway_id=gateway_id, origin=origin, scope=scope)
    return text + _NATIONAL_README if profile == NATIONAL.name else text


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def render(bundle: Bundle) -> dict[str, bytes]:
    """Every file of `bundle` (relative path: bytes), the manifest included."""
    profile = Verifier.from_key_string(bundle.key).profile
    files = {
        ENTRIES: _jsonl(
            [{"index": i, "data": _b64(d), "entry": readable(d)} for i, d in bundle.entries]
        ),
        CHECKPOINTS: _jsonl([{"note": note} for note in bundle.checkpoints]),
        key_file(bundle.gateway_id): (bundle.key + "\n").encode(),
        README: _readme(bundle.gateway_id, bundle.origin, bundle.scope, profile.name).encode(),
    }
    if bundle.scope != FULL:
        files[PROOFS] = _jsonl(
            [
                {"index": p.index, "tree_size": p.tree_size, "proof": [_b64(h) for h in p.hashes]}
                for p in bundle.proofs
            ]
        )
    manifest = {
        "format": FORMAT,
        PROFILE_FIELD: profile.name,
        "gateway_id": bundle.gateway_id,
        "origin": bundle.origin,
        "scope": bundle.scope,
        "entries": len(bundle.entries),
        "checkpoints": len(bundle.checkpoints),
        "files": {name: profile.hash.digest(data).hex() for name, data in sorted(files.items())},
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    return files


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        # Parsers differ on which of two equal keys wins: a reader could see another value.
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _json(data: str | bytes) -> Any:
    """Strict JSON: no duplicate keys."""
    return json.loads(data, object_pairs_hook=_unique_keys)


def manifest_gateway_id(files: Mapping[str, bytes | None]) -> str | None:
    """The gateway id the manifest names, if it names a usable one (to find the shipped key)."""
    try:
        manifest = _json(files.get(MANIFEST) or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    gateway_id = manifest.get("gateway_id") if isinstance(manifest, dict) else None
    return gateway_id if isinstance(gateway_id, str) and _GATEWAY_ID.fullmatch(gateway_id) else None


# --- checking ---------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _difference(view: object, derived: object, path: str = "") -> str | None:
    """Where the readable `view` first differs from the one `derived` from the bytes."""
    if isinstance(view, dict) and isinstance(derived, dict):
        for key in sorted(set(view) | set(derived)):
            where = f"{path}.{key}" if path else str(key)
            if key not in derived:
                return f"field {where} is not in the stored bytes"
            if key not in view:
                return f"field {where} is missing (the stored bytes say {_short(derived[key])})"
            if (found := _difference(view[key], derived[key], where)) is not None:
                return found
        return None
    if isinstance(view, list) and isinstance(derived, list) and len(view) == len(derived):
        for number, (one, other) in enumerate(zip(view, derived, strict=True)):
            if (found := _difference(one, other, f"{path}[{number}]")) is not None:
                return found
        return None
    if view == derived and type(view) is type(derived):
        return None
    return f"field {path or '(all)'} says {_short(view)}, the stored bytes say {_short(derived)}"


@dataclass
class _Line:
    number: int  # 1-based line of its file
    value: dict[str, Any]


class _Checker:
    """One check of one bundle: problems in the order found, each naming its file."""

    def __init__(self, files: Mapping[str, bytes | None], verifier: Verifier) -> None:
        self.files, self.verifier = files, verifier
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def lines(self, name: str, fields: Sequence[str], required: int | None = None) -> list[_Line]:
        """The JSON object lines of `name` with (the first `required` of) `fields`; a line
        without them is named and left out; any other field is named."""
        data = self.files.get(name)
        if data is None:
            return []
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            self.problem(f"{name}: not UTF-8 (byte {error.start})")
            return []
        rows = text.split("\n")
        if rows[-1]:
            self.problem(f"{name}:{len(rows)}: truncated (the last line has no newline)")
        found = []
        for number, row in enumerate(rows[:-1] if not rows[-1] else rows, start=1):
            try:
                value = _json(row)
            except ValueError as error:
                self.problem(f"{name}:{number}: not JSON ({error})")
                continue
            if not isinstance(value, dict):
                self.problem(f"{name}:{number}: not a JSON object")
                continue
            for unknown in sorted(set(value) - set(fields)):
                self.problem(f"{name}:{number}: unknown field {unknown!r}")
            missing = [f for f in fields[:required] if f not in value]
            if missing:
                self.problem(f"{name}:{number}: no field {missing[0]!r}")
                continue
            found.append(_Line(number, value))
        return found

    def b64(self, where: str, value: object) -> bytes | None:
        try:
            if not isinstance(value, str):
                raise ValueError("not a string")
            return base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error) as error:
            self.problem(f"{where}: bad base64 ({error})")
            return None


def _manifest(checker: _Checker) -> dict[str, Any] | None:
    """The manifest's fields, each of the right type, or None if it is no bundle manifest."""
    data = checker.files.get(MANIFEST)
    if data is None:
        checker.problem(
            f"{MANIFEST}: missing" + (" (not a regular file)" if MANIFEST in checker.files else "")
        )
        return None
    try:
        manifest = _json(data)
    except (ValueError, UnicodeDecodeError) as error:
        checker.problem(f"{MANIFEST}: not JSON ({error})")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, FORMAT_1):
        checker.problem(f"{MANIFEST}: not a {FORMAT} (or {FORMAT_1}) manifest")
        return None
    profile = manifest.pop(PROFILE_FIELD, INTERNATIONAL.name)
    if profile != checker.verifier.profile.name:
        checker.problem(
            f"{MANIFEST}: crypto profile {profile!r}, but the trusted key is an "
            f"{checker.verifier.key_type.name} key ({checker.verifier.profile.name!r})"
        )
    for name in sorted(set(manifest) - set(_MANIFEST_FIELDS)):
        checker.problem(f"{MANIFEST}: unknown field {name!r}")
    for name, kind in _MANIFEST_FIELDS.items():
        value = manifest.get(name)
        if name not in manifest:
            checker.problem(f"{MANIFEST}: no field {name!r}")
        elif not isinstance(value, kind) or (kind is int and not _is_int(value)):
            checker.problem(f"{MANIFEST}: field {name!r} is not a {kind.__name__}")
        else:
            continue
        manifest[name] = kind()
    if not _GATEWAY_ID.fullmatch(manifest["gateway_id"]):
        checker.problem(f"{MANIFEST}: gateway_id {manifest['gateway_id']!r} is not a gateway id")
    if manifest["origin"] != checker.verifier.name:
        checker.problem(
            f"{MANIFEST}: origin {manifest['origin']!r} is not the trusted key's name "
            f"{checker.verifier.name!r}"
        )
    scope = manifest["scope"]
    if scope != FULL and not (scope.startswith(INCIDENT) and scope[len(INCIDENT) :].strip()):
        checker.problem(f"{MANIFEST}: scope {scope!r} is neither {FULL!r} nor 'incident <id>'")
    return manifest


def _files(checker: _Checker, manifest: dict[str, Any]) -> None:
    """The bundle holds exactly its files, each with the digest the manifest lists (its
    profile's hash: SHA-256 or SM3)."""
    expected = {ENTRIES, CHECKPOINTS, README, key_file(manifest["gateway_id"])}
    if manifest["scope"] != FULL:
        expected.add(PROOFS)
    present = set(checker.files) - {MANIFEST}
    listed: dict[str, object] = manifest["files"]
    for name in sorted(present - expected):
        checker.problem(f"{name}: not part of a {manifest['scope']} bundle (an added file)")
    for name in sorted(expected - present):
        checker.problem(f"{name}: missing")
    for name in sorted(set(listed) - expected):
        checker.problem(
            f"{MANIFEST}: lists {name}, which is not part of a {manifest['scope']} bundle"
        )
    for name in sorted(expected - set(listed)):
        checker.problem(f"{MANIFEST}: does not list {name}")
    for name in sorted(expected & set(listed) & present):
        digest, data = listed[name], checker.files[name]
        hash_name = checker.verifier.profile.hash.name
        if not isinstance(digest, str) or not _DIGEST_HEX.fullmatch(digest):
            checker.problem(f"{MANIFEST}: the {hash_name} of {name} is not 64 lowercase hex digits")  # fmt: skip
        elif data is None:
            checker.problem(f"{name}: not a regular file")
        elif checker.verifier.profile.hash.digest(data).hex() != digest:
            checker.problem(f"{name}: {hash_name} differs from the one {MANIFEST} lists")


def _derived_files(checker: _Checker, manifest: dict[str, Any]) -> None:
    """The key file holds the trusted key; the README is its template's text (format 2)."""
    name = key_file(manifest["gateway_id"])
    shipped = checker.files.get(name)
    if shipped is not None and shipped != (checker.verifier.key_string() + "\n").encode():
        held = shipped.decode("utf-8", "replace").strip()
        checker.problem(
            f"{name}: holds {_short(held)}, not the trusted key {checker.verifier.key_string()}"
        )
    readme = checker.files.get(README)
    derived = _readme(
        manifest["gateway_id"],
        manifest["origin"],
        manifest["scope"],
        checker.verifier.profile.name,
    ).encode()
    if manifest["format"] == FORMAT and readme is not None and readme != derived:
        checker.problem(f"{README}: differs from the text derived from {MANIFEST} (edited)")


def _entries(checker: _Checker, manifest: dict[str, Any]) -> list[tuple[_Line, int, bytes]]:
    """Each entry line's (line, index, stored bytes); its readable view checked against them."""
    found = []
    lines = checker.lines(ENTRIES, _ENTRY_FIELDS, required=2)  # a missing view: named below
    for line in lines:
        where = f"{ENTRIES}:{line.number}"
        index, data = line.value["index"], checker.b64(where, line.value["data"])
        if not _is_int(index) or index < 0:
            checker.problem(f"{where}: index {_short(index)} is not a leaf index")
            continue
        if data is None:
            continue
        if "entry" not in line.value:
            checker.problem(f"{where} (entry {index}): its readable view (field 'entry') is gone")
        elif (difference := _difference(line.value["entry"], readable(data))) is not None:
            checker.problem(
                f"{where} (entry {index}): readable view differs from the stored bytes: {difference}"
            )
        found.append((line, index, data))
    if checker.files.get(ENTRIES) is not None and manifest["entries"] != len(lines):
        checker.problem(
            f"{MANIFEST}: says {manifest['entries']} entries, {ENTRIES} holds {len(lines)}"
        )
    return found


def _checkpoints(checker: _Checker, manifest: dict[str, Any]) -> list[str]:
    notes = []
    lines = checker.lines(CHECKPOINTS, ("note",))
    for line in lines:
        if not isinstance(note := line.value["note"], str):
            checker.problem(f"{CHECKPOINTS}:{line.number}: note is not a string")
            continue
        notes.append(note)
    if checker.files.get(CHECKPOINTS) is not None and manifest["checkpoints"] != len(lines):
        checker.problem(
            f"{MANIFEST}: says {manifest['checkpoints']} checkpoints, {CHECKPOINTS} holds {len(lines)}"
        )
    return notes


def _full(
    checker: _Checker,
    report: Report,
    entries: list[tuple[_Line, int, bytes]],
    notes: list[str],
    allow_unsigned_tail: bool,
) -> None:
    for position, (line, index, _) in enumerate(entries):
        if index != position:
            checker.problem(
                f"{ENTRIES}:{line.number}: index {index}, expected {position} "
                "(entries removed, inserted, duplicated or reordered)"
            )
            break
    logged = verify_log(
        [data for _, _, data in entries],
        notes,
        checker.verifier,
        report.gateway_id,
        origin=checker.verifier.name,
    )
    for text in logged.problems:
        checker.problem(f"{CHECKPOINTS if text.startswith('checkpoint') else ENTRIES}: {text}")
    report.latest_size, report.latest_root = logged.latest_size, logged.latest_root
    count = len(entries)
    if logged.latest_size is None:
        checker.problem(
            f"{CHECKPOINTS}: no checkpoint signed by the trusted key: "
            f"none of the {count} entries is signed"
        )
    elif logged.latest_size < count and not allow_unsigned_tail:
        first = entries[logged.latest_size][0].number
        checker.problem(
            f"{ENTRIES}:{first} (entry {logged.latest_size}): entries {logged.latest_size} to "
            f"{count - 1} are after the last signed checkpoint (size {logged.latest_size}): "
            "an unsigned tail (accepted only with --allow-unsigned-tail)"
        )


def _incident(
    checker: _Checker,
    report: Report,
    scope: str,
    entries: list[tuple[_Line, int, bytes]],
    notes: list[str],
) -> None:
    incident = scope[len(INCIDENT) :]
    if len(notes) != 1:
        checker.problem(
            f"{CHECKPOINTS}: an incident bundle holds one checkpoint, this one {len(notes)}"
        )
        if not notes:
            return
    try:
        checkpoint = Checkpoint.parse(open_note(notes[-1], [checker.verifier])[0])
    except NoteError as error:
        checker.problem(
            f"{CHECKPOINTS}:{len(notes)}: not a checkpoint signed by the trusted key ({error})"
        )
        return
    if checkpoint.origin != checker.verifier.name:
        checker.problem(
            f"{CHECKPOINTS}:{len(notes)}: origin {checkpoint.origin!r}, expected {checker.verifier.name!r}"
        )
    report.latest_size, report.latest_root = checkpoint.size, checkpoint.root_hash
    proofs = _proofs(checker)
    previous = -1
    for position, (line, index, data) in enumerate(entries):
        where = f"{ENTRIES}:{line.number} (entry {index})"
        if index <= previous:
            checker.problem(f"{where}: not after entry {previous} (duplicated or reordered)")
        previous = max(previous, index)
        try:
            entry = audit_pb2.AuditEntry.FromString(data)
        except DecodeError:
            checker.problem(f"{where}: not an AuditEntry (protobuf decode failed)")
            entry = audit_pb2.AuditEntry()
        if entry.sequence != index:
            checker.problem(f"{where}: sequence field says {entry.sequence}")
        if entry.gateway_id != report.gateway_id:
            checker.problem(
                f"{where}: gateway_id field says {entry.gateway_id!r}, expected {report.gateway_id!r}"
            )
        if incident not in entry.incident_ids:
            checker.problem(
                f"{where}: not an entry of incident {incident!r} (it names {list(entry.incident_ids)})"
            )
        if position >= len(proofs):
            checker.problem(f"{where}: no inclusion proof in {PROOFS}")
            continue
        number, proof = proofs[position]
        if proof.index != index:
            checker.problem(
                f"{PROOFS}:{number}: proof of entry {proof.index}, but {ENTRIES}:{line.number} is entry {index}"
            )
        elif proof.tree_size != checkpoint.size:
            checker.problem(
                f"{PROOFS}:{number} (entry {index}): proof is for size {proof.tree_size}, the checkpoint's is {checkpoint.size}"
            )
        else:
            try:
                tree = tree_for(checker.verifier.profile)
                verify_inclusion(
                    index,
                    checkpoint.size,
                    leaf_hash(data, tree),
                    proof.hashes,
                    checkpoint.root_hash,
                    tree,
                )
            except ProofError as error:
                checker.problem(
                    f"{PROOFS}:{number} (entry {index}): not in the signed tree ({error})"
                )
    for number, proof in proofs[len(entries) :]:
        checker.problem(
            f"{PROOFS}:{number}: proof of entry {proof.index}, which the bundle does not hold"
        )


def _proofs(checker: _Checker) -> list[tuple[int, Proof]]:
    found = []
    for line in checker.lines(PROOFS, _PROOF_FIELDS):
        where = f"{PROOFS}:{line.number}"
        index, size, hashes = (line.value[name] for name in _PROOF_FIELDS)
        if not _is_int(index) or not _is_int(size) or not isinstance(hashes, list):
            checker.problem(f"{where}: index and tree_size must be integers, proof a list")
            continue
        decoded = [checker.b64(where, h) for h in hashes]
        if any(h is None for h in decoded):
            continue
        found.append((line.number, Proof(index, size, tuple(h for h in decoded if h is not None))))
    return found


def check_bundle(
    files: Mapping[str, bytes | None], verifier: Verifier, *, allow_unsigned_tail: bool = False
) -> Report:
    """Check a bundle's files (from `read_files`) with the gateway's trusted key. The report's
    problems name their file (and line and entry), in the order: manifest and file set, then
    what each file holds. It is ok only if every entry is covered by a checkpoint the key
    signed; `allow_unsigned_tail` accepts entries after a full bundle's last checkpoint (the
    report counts them as `unsigned`)."""
    checker = _Checker(files, verifier)
    manifest = _manifest(checker)
    if manifest is None:
        report = Report("(unknown: no manifest)", 0, 0)
        report.problems.extend(checker.problems)
        return report
    _files(checker, manifest)
    _derived_files(checker, manifest)
    entries = _entries(checker, manifest)
    notes = _checkpoints(checker, manifest)
    report = Report(manifest["gateway_id"], len(entries), len(notes))
    if manifest["scope"] == FULL:
        _full(checker, report, entries, notes, allow_unsigned_tail)
    elif manifest["scope"].startswith(INCIDENT):
        _incident(checker, report, manifest["scope"], entries, notes)
    report.problems.extend(checker.problems)
    return report
