"""The house: the import graph of gateway/, adapters/ and policies/ (installed as gateway,
dutylink.adapters and dutylink.policies) keeps its shape.

Parses every module's imports (nothing is imported, no server) and fails on an import cycle, an
arrow from a lower layer up (LAYERS), a server edge importing an adapter (SEPARATE), a pure module
importing the network, files or a clock or calling open/read_*/write_*/now (PURE), a gateway
sub-package over a quarter of gateway's lines or a loose module beside the composition root, and a
module over 400 lines without a "Long because ..." line at the top of its docstring. Lazy imports
inside functions and type-only imports count: an arrow is an arrow. Violations that exist today
are listed in KNOWN_VIOLATIONS, one a line; a test fails when one of them is fixed, so the list
only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Directory -> the package it is installed as (pyproject.toml's package-dir).
ROOTS = {"gateway": "gateway", "adapters": "dutylink.adapters", "policies": "dutylink.policies"}

# Lowest first. A module belongs to the layer of its longest matching prefix (a prefix matches
# itself and everything under it) and may import its own layer and any layer below. The package
# roots `gateway` and `dutylink.adapters` hold only a docstring, so they sit at the bottom; every other module
# must match a longer prefix. Adapters sit below gateway's edges: the SDK and the adapters may lean
# on the proto package, the policies and the pure audit core, never on the server's edges.
# The settings classes are pure declarations every layer may read, so they sit below the core;
# gateway.config, which loads them from files and the environment, is the composition root's.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("dutylink", "buf", "gateway", "dutylink.adapters"),  # proto: generated schemas; package roots
    ("dutylink.policies",),  # pure: model, redaction, engine, loader
    ("gateway.core.settings",),  # pure: the configuration's sections and defaults
    ("gateway.core",),  # pure: envelope, subjects, admission, validation, quotas
    ("gateway.audit",),  # pure: Merkle, notes, entries, verify over bytes, bundles
    # pure record mappings and the standards' codecs beneath the adapters
    (
        "dutylink.adapters.records",
        "dutylink.adapters.options",
        "dutylink.adapters.mapping",
        "dutylink.adapters.xmlsafe",
        "dutylink.adapters.cap.codec",
        "dutylink.adapters.cap.compare",
        "dutylink.adapters.edxl.xml",
        "dutylink.adapters.edxl.rm",
        "dutylink.adapters.edxl.rmdiff",
        "dutylink.adapters.edxl.de",
        "dutylink.adapters.dispatch.fields",
        "dutylink.adapters.dispatch.cad110",
        "dutylink.adapters.dispatch.dispatch119",
        "dutylink.adapters.webhook.signing",
    ),
    ("dutylink.adapters.sdk",),  # client, retry policy, checkpoint keeper
    # the adapter framework, transports, runner and each adapter
    (
        "dutylink.adapters.framework",
        "dutylink.adapters.metrics",
        "dutylink.adapters.transports",
        "dutylink.adapters.runner",
        "dutylink.adapters.registry",
        "dutylink.adapters.cap",
        "dutylink.adapters.edxl",
        "dutylink.adapters.dispatch",
        "dutylink.adapters.filedrop",
        "dutylink.adapters.webhook",
    ),
    ("gateway.access", "gateway.store", "gateway.telemetry"),  # edges: identity, JetStream, metrics
    ("gateway.rpc",),  # servicers and interceptors
    ("gateway.server", "gateway.config"),  # the composition root
    # the faces and the test kit
    (
        "gateway.cli",
        "gateway.console",
        "gateway.bench",
        "gateway.testkit",
        "dutylink.adapters.bench",
        "dutylink.policies.bench",
    ),
)

# Pure modules import no network, no I/O and no clock; they take values and return values.
PURE = ("gateway.core", "gateway.audit", "dutylink.policies", "dutylink.adapters.records")
NOT_PURE = ("dutylink.policies.bench",)  # a face that happens to live beside the policies
IMPURE_IMPORTS = frozenset(
    {
        "grpc",
        "grpc_status",
        "grpc_health",
        "grpc_reflection",
        "nats",
        "aiohttp",
        "asyncio",
        "socket",
        "ssl",
        "subprocess",
        "os",
        "pathlib",
        "shutil",
        "tempfile",
        "time",
        "threading",
    }
)
IMPURE_CALLS = frozenset(
    {"open", "read_text", "read_bytes", "write_text", "write_bytes", "now", "utcnow", "today"}
)

# The layers are one order, so a few arrows it would allow are refused here: the server's edges
# serve every department the same way and never lean on the SDK or an adapter.
SEPARATE: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        (
            "gateway.access",
            "gateway.store",
            "gateway.telemetry",
            "gateway.rpc",
            "gateway.server",
            "gateway.config",
        ),
        ("dutylink.adapters",),
    ),
)

LOOSE_MODULES_ALLOWED = frozenset({"gateway", "gateway.server", "gateway.config"})
MAX_SHARE_OF_GATEWAY = 0.25
MAX_LINES = 400
LONG_REASON = "Long because"
REASON_WITHIN_LINES = 12  # the reason sits at the top, beside the summary, not at the bottom

# (kind, module, detail), one line each. Delete a line when its violation is fixed; the
# test_every_known_violation_still_occurs test says which.
KNOWN_VIOLATIONS: frozenset[tuple[str, str, str]] = frozenset(
    {
        # The audit core's revocation entry names the revocation keeper's change type.
        ("upward", "gateway.audit.entries", "gateway.access.revocation"),
        # Admission takes the Principal from the access edge.
        ("upward", "gateway.core.admission", "gateway.access.auth"),
        # The policy loader reads its YAML file itself; parsing the text is the pure part.
        ("impure", "dutylink.policies.loader", "pathlib"),
        ("impure", "dutylink.policies.loader", "read_text()"),
        # Modules over 400 lines with no reason at their top.
        ("long", "dutylink.adapters.sdk.client", ""),
        ("long", "gateway.audit.bundle", ""),
        ("long", "gateway.audit.entries", ""),
        ("long", "gateway.audit.verify", ""),
        ("long", "gateway.rpc.subscribe", ""),
        ("long", "dutylink.policies.engine", ""),
    }
)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    package: str  # the package relative imports start from
    tree: ast.Module

    @property
    def lines(self) -> int:
        return len(self.path.read_text(encoding="utf-8").splitlines())


def _generated(path: Path) -> bool:
    return path.name.endswith(("_pb2.py", "_pb2_grpc.py"))


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for directory, root in ROOTS.items():
        for path in sorted((REPO / directory).rglob("*.py")):
            if _generated(path) or ".venv" in path.parts:
                continue
            parts = [*root.split("."), *path.relative_to(REPO / directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
                package = ".".join(parts)
            else:
                package = ".".join(parts[:-1])
            name = ".".join(parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            found[name] = Module(name, path, package, tree)
    return found


def _internal(name: str) -> str | None:
    """The module of ours `name` loads (the longest existing prefix), or None for a third party."""
    known = modules()
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported_names(module: Module) -> Iterator[tuple[str, int]]:
    """Every dotted name the module imports (at any depth, lazy ones too), with its line."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                # `from package import submodule` loads the submodule, not just the package.
                yield (submodule if submodule in modules() else source), node.lineno


@cache
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {internal module it imports: first line}."""
    graph: dict[str, dict[str, int]] = {}
    for name, module in modules().items():
        targets: dict[str, int] = {}
        for imported, line in _imported_names(module):
            target = _internal(imported)
            if target is not None and target != name:
                targets.setdefault(target, line)
        graph[name] = targets
    return graph


def _prefix_matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, prefix) of the module's longest matching LAYERS prefix."""
    best: tuple[int, str] | None = None
    for rank, layer in enumerate(LAYERS):
        for prefix in layer:
            if _prefix_matches(module, prefix) and (best is None or len(prefix) > len(best[1])):
                best = (rank, prefix)
    return best


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def _cycle_path(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    """One concrete loop through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    while True:
        options = sorted(t for t in graph[path[-1]] if t in members)
        if start in options and len(path) > 1:
            return " -> ".join([*path, start])
        step = next((t for t in options if t not in seen), None)
        if step is None:
            return " -> ".join([*path, start])
        path.append(step)
        seen.add(step)


def cycle_violations() -> dict[tuple[str, str, str], str]:
    graph = import_graph()
    found: dict[tuple[str, str, str], str] = {}
    for component in _strongly_connected(graph):
        key = ("cycle", component[0], " ".join(component))
        found[key] = f"import cycle: {_cycle_path(component, graph)}"
    return found


def upward_violations() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for name, targets in import_graph().items():
        own = layer_of(name)
        if own is None:
            continue
        for target, line in sorted(targets.items()):
            theirs = layer_of(target)
            if theirs is not None and theirs[0] > own[0]:
                found[("upward", name, target)] = (
                    f"{modules()[name].path.relative_to(REPO)}:{line}: {name} imports {target}, "
                    f"but {own[1]} is below {theirs[1]} in LAYERS"
                )
    return found


def across_violations() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for importers, forbidden in SEPARATE:
        for name, targets in import_graph().items():
            if not any(_prefix_matches(name, p) for p in importers):
                continue
            for target, line in sorted(targets.items()):
                if any(_prefix_matches(target, p) for p in forbidden):
                    found[("across", name, target)] = (
                        f"{modules()[name].path.relative_to(REPO)}:{line}: {name} imports "
                        f"{target}; the server's edges never import {', '.join(forbidden)}"
                    )
    return found


def _is_pure(module: str) -> bool:
    return any(_prefix_matches(module, p) for p in PURE) and not any(
        _prefix_matches(module, p) for p in NOT_PURE
    )


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def impurity_violations() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for name, module in modules().items():
        if not _is_pure(name):
            continue
        where = module.path.relative_to(REPO)
        for imported, line in _imported_names(module):
            top = imported.partition(".")[0]
            if top in IMPURE_IMPORTS:
                found.setdefault(
                    ("impure", name, top), f"{where}:{line}: pure module {name} imports {imported}"
                )
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and (called := _called_name(node)) in IMPURE_CALLS:
                found.setdefault(
                    ("impure", name, f"{called}()"),
                    f"{where}:{node.lineno}: pure module {name} calls {called}() (files or clock)",
                )
    return found


def shape_violations() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    gateway = {n: m for n, m in modules().items() if _prefix_matches(n, "gateway")}
    total = sum(m.lines for m in gateway.values())
    by_package: dict[str, int] = {}
    for name, module in gateway.items():
        parts = name.split(".")
        is_package_module = module.path.name == "__init__.py"
        if len(parts) == 2 and not is_package_module and name not in LOOSE_MODULES_ALLOWED:
            found[("loose", name, "")] = (
                f"{module.path.relative_to(REPO)}: loose module {name} in gateway/; only the "
                "composition root (server.py) and config.py sit beside the sub-packages"
            )
        if len(parts) >= 2 and (len(parts) > 2 or is_package_module):
            package = ".".join(parts[:2])
            by_package[package] = by_package.get(package, 0) + module.lines
    for package, lines in sorted(by_package.items()):
        if lines > MAX_SHARE_OF_GATEWAY * total:
            found[("share", package, "")] = (
                f"{package} holds {lines} of gateway's {total} lines ({lines / total:.0%}), over "
                f"{MAX_SHARE_OF_GATEWAY:.0%}: split it"
            )
    return found


def length_violations() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for name, module in modules().items():
        lines = module.lines
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(module.tree) or ""
        top = docstring.splitlines()[:REASON_WITHIN_LINES]
        if not any(line.strip().startswith(LONG_REASON) for line in top):
            found[("long", name, "")] = (
                f"{module.path.relative_to(REPO)}: {lines} lines (over {MAX_LINES}) and no line "
                f"starting {LONG_REASON!r} in the first {REASON_WITHIN_LINES} lines of its module "
                "docstring giving the reason"
            )
    return found


def all_violations() -> dict[tuple[str, str, str], str]:
    return {
        **cycle_violations(),
        **upward_violations(),
        **across_violations(),
        **impurity_violations(),
        **shape_violations(),
        **length_violations(),
    }


def _unexpected(found: dict[tuple[str, str, str], str]) -> list[str]:
    return [message for key, message in sorted(found.items()) if key not in KNOWN_VIOLATIONS]


def test_the_parser_sees_every_package() -> None:
    names = modules()
    assert {
        "gateway.server",
        "gateway.core.envelope",
        "dutylink.adapters.sdk.client",
        "dutylink.policies.engine",
    } <= set(names)
    assert import_graph()["gateway.server"], "the composition root imports the layers below it"


def test_every_module_has_a_layer() -> None:
    unplaced = [
        name
        for name in modules()
        if (layer := layer_of(name)) is None
        or (layer[1] in ("gateway", "dutylink.adapters") and layer[1] != name)
    ]
    assert not unplaced, f"modules with no layer in LAYERS (add their package): {unplaced}"


def test_no_import_cycle() -> None:
    problems = _unexpected(cycle_violations())
    assert not problems, "\n".join(problems)


def test_no_import_runs_from_a_lower_layer_up() -> None:
    problems = _unexpected(upward_violations())
    assert not problems, "\n".join(problems)


def test_the_server_edges_import_no_adapter_or_sdk() -> None:
    problems = _unexpected(across_violations())
    assert not problems, "\n".join(problems)


def test_the_cycle_finder_finds_a_loop_and_names_it() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _cycle_path(["a", "b", "c"], graph) == "a -> b -> c -> a"
    assert _strongly_connected({"a": {"b": 1}, "b": {}}) == []


def test_pure_modules_import_no_network_files_or_clock() -> None:
    problems = _unexpected(impurity_violations())
    assert not problems, "\n".join(problems)


def test_gateway_has_no_oversized_sub_package_and_no_loose_module() -> None:
    problems = _unexpected(shape_violations())
    assert not problems, "\n".join(problems)


def test_long_modules_say_why_at_their_top() -> None:
    problems = _unexpected(length_violations())
    assert not problems, "\n".join(problems)


def test_every_known_violation_still_occurs() -> None:
    fixed = sorted(KNOWN_VIOLATIONS - all_violations().keys())
    assert not fixed, "fixed, so delete from KNOWN_VIOLATIONS:\n" + "\n".join(map(repr, fixed))
