"""The SDK and the adapter mappings import nothing they must not: a department developer gets
the client without the server, and a mapping is a pure function of its record.

Imports are read with `ast` (nothing is imported to check them) and followed transitively
through the repository's own modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Package -> its directory (pyproject.toml's package-dir).
PACKAGES = {"dutylink.adapters": "adapters", "dutylink.policies": "policies", "gateway": "gateway"}

# The pure audit core the SDK may use to verify checkpoints (not followed further: the audit
# core's own purity has its own test).
AUDIT_CORE = ("gateway.audit.merkle", "gateway.audit.note", "gateway.audit.entries", "gateway.audit.verify")  # fmt: skip

SDK = (
    "dutylink.adapters.sdk.client",
    "dutylink.adapters.sdk.checkpoints",
    "dutylink.adapters.sdk.retry",
    "dutylink.adapters.sdk.refusals",
    "dutylink.adapters.sdk.acknowledgements",
)
MAPPINGS = (
    "dutylink.adapters.records",
    "dutylink.adapters.options",
    "dutylink.adapters.mapping",
    "dutylink.adapters.cap.mapping",
    "dutylink.adapters.cap.codec",
    "dutylink.adapters.cap.compare",
    "dutylink.adapters.edxl.mapping",
    "dutylink.adapters.edxl.de",
    "dutylink.adapters.edxl.rm",
    "dutylink.adapters.edxl.rmdiff",
    "dutylink.adapters.dispatch.fields",
    "dutylink.adapters.dispatch.cad110",
    "dutylink.adapters.dispatch.dispatch119",
    "dutylink.adapters.filedrop.mapping",
    "dutylink.adapters.webhook.mapping",
)
# What a mapping may not reach: the network, metrics, the SDK, the adapters' I/O and the gateway.
MAPPING_FORBIDDEN = (
    "grpc", "prometheus_client", "aiohttp", "nats", "stamina", "asyncio",
    "dutylink.adapters.sdk", "dutylink.adapters.framework", "dutylink.adapters.transports", "dutylink.adapters.runner",
    "dutylink.adapters.metrics", "gateway",
)  # fmt: skip


def _path_of(module: str) -> Path | None:
    """The file of an in-repository module, None for a third-party or proto one."""
    package = next((p for p in PACKAGES if _matches(module, [p])), None)
    if package is None:
        return None
    base = ROOT.joinpath(PACKAGES[package], *module.removeprefix(package).split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _direct_imports(module: str) -> set[str]:
    path = _path_of(module)
    assert path is not None, module
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from package import module` imports a module too.
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if _path_of(f"{node.module}.{alias.name}") is not None
            )
    return found


def _closure(roots: Iterable[str], stop: tuple[str, ...] = ()) -> dict[str, str]:
    """Every module reached from `roots` through in-repository imports, with one module that
    imports it (to name the path in a failure). Modules in `stop` are not followed."""
    reached: dict[str, str] = {root: "" for root in roots}
    pending = list(reached)
    while pending:
        module = pending.pop()
        for imported in _direct_imports(module):
            if imported in reached:
                continue
            reached[imported] = module
            if _path_of(imported) is not None and imported not in stop:
                pending.append(imported)
    return reached


def _chain(reached: dict[str, str], module: str) -> str:
    chain = [module]
    while reached.get(chain[-1]):
        chain.append(reached[chain[-1]])
    return " <- ".join(chain)


def _matches(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_sdk_imports_only_the_proto_package_the_audit_core_and_itself() -> None:
    reached = _closure(SDK, stop=AUDIT_CORE)
    outside = [
        _chain(reached, module)
        for module in reached
        if _path_of(module) is not None
        and not _matches(module, ("dutylink.adapters.sdk", *AUDIT_CORE))
        and module not in ("dutylink.adapters", "dutylink.adapters.sdk", "gateway", "gateway.audit")
    ]
    assert outside == []


def test_only_the_checkpoint_keeper_needs_more_than_the_light_client_ships() -> None:
    """dutylink-client (clients/python) ships the SDK and the protos only; the keeper verifies
    checkpoints with the gateway's audit core (and says so when it is missing)."""
    reached = _closure([m for m in SDK if m != "dutylink.adapters.sdk.checkpoints"])
    outside = [
        _chain(reached, module)
        for module in reached
        if _path_of(module) is not None and not _matches(module, ("dutylink.adapters.sdk",))
    ]
    assert outside == []


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_a_mapping_imports_no_network_metrics_sdk_or_gateway(mapping: str) -> None:
    reached = _closure([mapping])
    forbidden = [_chain(reached, m) for m in reached if _matches(m, MAPPING_FORBIDDEN)]
    assert forbidden == []


def test_the_checked_modules_exist() -> None:
    assert [m for m in (*SDK, *MAPPINGS, *AUDIT_CORE) if _path_of(m) is None] == []
