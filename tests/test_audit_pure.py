"""The audit core is pure: no module of gateway/audit imports I/O, and a log verifies from bytes.

The import check parses each module's source (nothing is imported to check it) and then imports
the package in a fresh interpreter to see that no transport library comes along indirectly.
Verification runs over frames and notes built in memory: no nats-server.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from dutylink.v1 import audit_pb2
from gateway.audit import merkle
from gateway.audit.entries import decode_frames, encode_frames
from gateway.audit.note import Checkpoint, Signer, sign_note
from gateway.audit.verify import verify_log

AUDIT_PACKAGE = Path(__file__).resolve().parent.parent / "gateway" / "audit"
AUDIT_MODULES = sorted(AUDIT_PACKAGE.glob("*.py"))

# Transports, the event loop, files, processes and clocks; and the layers around the core.
FORBIDDEN = (
    "nats",
    "grpc",
    "asyncio",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "socket",
    "subprocess",
    "time",
    "datetime",
    "gateway.store",
    "gateway.rpc",
    "gateway.cli",
    "gateway.server",
    "gateway.telemetry",
    "gateway.testkit",
)


def _imported(tree: ast.Module) -> list[str]:
    """Every module an import statement names, at any depth (type-only imports included)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(name: str) -> bool:
    return any(name == banned or name.startswith(f"{banned}.") for banned in FORBIDDEN)


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            lines.update(n.lineno for n in ast.walk(node) if isinstance(n, ast.stmt))
    return lines


@pytest.mark.parametrize("module", AUDIT_MODULES, ids=lambda path: path.name)
def test_no_audit_module_imports_transports_files_or_clocks(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    type_only = _type_only(tree)
    found = [
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno not in type_only
        for name in _imported(ast.Module(body=[node], type_ignores=[]))
        if _forbidden(name)
    ]
    assert found == []


@pytest.mark.parametrize("module", AUDIT_MODULES, ids=lambda path: path.name)
def test_no_audit_module_opens_files(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    calls = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
    ]
    assert calls == []


def test_importing_the_audit_core_loads_no_transport() -> None:
    modules = ", ".join(f"gateway.audit.{path.stem}" for path in AUDIT_MODULES)
    script = (
        f"import sys, {modules}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nats', 'grpc')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


# --- verification over bytes ------------------------------------------------------------------

GW = "gw-pure"
SIGNER = Signer(f"dutylink/audit/{GW}", bytes(32))


def _entries(count: int) -> list[bytes]:
    return [
        audit_pb2.AuditEntry(
            sequence=index,
            gateway_id=GW,
            action=audit_pb2.AUDIT_ACTION_PUBLISH,
            outcome=audit_pb2.AUDIT_OUTCOME_ACCEPTED,
            event_id=f"event-{index:04d}",
        ).SerializeToString()
        for index in range(count)
    ]


def _note(entries: list[bytes], size: int) -> str:
    root = merkle.root([merkle.leaf_hash(data) for data in entries[:size]])
    return sign_note(Checkpoint(SIGNER.name, size, root).to_text(), [SIGNER])


def test_a_log_held_as_bytes_verifies_without_a_server() -> None:
    entries = _entries(12)
    frames = encode_frames(entries[:5], 0) + encode_frames(entries[5:], 5)
    unframed = decode_frames(frames)
    report = verify_log(
        unframed.entries,
        [_note(entries, 5), _note(entries, 12)],
        SIGNER.verifier(),
        GW,
        frame_problems=unframed.problems,
    )
    assert report.ok and report.latest_size == 12 and report.entries == 12


def test_a_changed_entry_in_bytes_is_found_without_a_server() -> None:
    entries = _entries(12)
    notes = [_note(entries, 12)]
    entries[3] = entries[3].replace(b"event-0003", b"event-9999")
    unframed = decode_frames(encode_frames(entries, 0))
    report = verify_log(unframed.entries, notes, SIGNER.verifier(), GW)
    assert not report.ok
