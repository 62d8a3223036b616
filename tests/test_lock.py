"""requirements-dev.lock, which `tools/bootstrap.py` installs with `--require-hashes`, is the
resolution of pyproject.toml and clients/python/pyproject.toml: every dependency they name, in
every extra, is there at a version they allow, and every pinned file has its hash. The two
projects themselves are not in it: the bootstrap installs them editable, without dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python" / "pyproject.toml"
LOCK = ROOT / "requirements-dev.lock"
OWN = {"dutylink", "dutylink-client"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def locked() -> dict[str, tuple[str, list[str]]]:
    """Name -> (version, its hashes), from the lock."""
    found: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if match := _PIN.match(line):
            current = canonicalize_name(match.group(1))
            found[current] = (match.group(2), [])
        elif line.strip().startswith("--hash=sha256:") and current:
            found[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return found


def project(path: Path) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    return table


def test_every_dependency_of_both_projects_is_locked_at_a_version_it_allows() -> None:
    full, client = project(ROOT / "pyproject.toml"), project(CLIENT)
    wanted = [Requirement(r) for r in (*full["dependencies"], *client["dependencies"])]
    wanted += [Requirement(r) for extra in full["optional-dependencies"].values() for r in extra]
    wanted = [r for r in wanted if canonicalize_name(r.name) not in OWN]
    pins = locked()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements-dev.lock: regenerate it"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements-dev.lock has {name}=={version}, pyproject.toml asks {requirement}"
        )


def test_the_full_project_takes_the_light_client_of_this_repository_not_from_the_lock() -> None:
    full, client = project(ROOT / "pyproject.toml"), project(CLIENT)
    assert f"{client['name']}=={client['version']}" in full["dependencies"]
    assert full["version"] == client["version"]
    assert not OWN & locked().keys()


def test_every_locked_file_is_checked_by_its_hash() -> None:
    pins = locked()
    assert len(pins) > 50
    for name, (_, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
