"""Set up and run DutyLink with nothing but Python 3.11+ (standard library only).

    python3 tools/bootstrap.py demo    # the gateway on an embedded NATS, with simulated agencies
    python3 tools/bootstrap.py serve   # just the gateway (extra arguments go to `dutylink serve`)
    python3 tools/bootstrap.py test    # the test suite but its slow tests (arguments go to pytest)
    python3 tools/bootstrap.py test --all   # every test: the failure drills and cluster too
    python3 tools/bootstrap.py check   # lint, types, schema lint, generated-code freshness,
                                       # deploy/'s manifests, policies and configurations

Creates `.venv` beside the repo on first use and reinstalls only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".dutylink-installed"
# Every dependency, the development tools' included, at the exact version and hashes last
# resolved (regenerate after changing pyproject.toml: see the file's first lines).
LOCK = ROOT / "requirements-dev.lock"
# dutylink-client, the SDK and protos without the server: a project of its own in this repository.
CLIENT = ROOT / "clients" / "python"
CHROMIUM = Path("/usr/bin/chromium")
# checkov (deploy/'s policy checks) pins its own versions of libraries the gateway uses too:
# it lives in a virtual environment of its own inside .venv.
CHECKOV = "checkov==3.3.30"
CHECKOV_VENV = VENV / "tools" / "checkov"


def run(*command: str | Path) -> None:
    result = subprocess.run([str(c) for c in command], cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def install(*command: str | Path) -> None:
    """Run an installer with its output held back: shown only if it fails (a build backend's
    notices are not the newcomer's business)."""
    result = subprocess.run(
        [str(c) for c in command], cwd=ROOT, check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(result.returncode)


def replace_with(*command: str | Path) -> None:
    """Become `command` (exec): a signal sent to this process (Ctrl-C, SIGTERM from a
    supervisor) then reaches the gateway or pytest itself, and nothing is left holding a port."""
    os.chdir(ROOT)
    arguments = [str(c) for c in command]
    if os.name == "nt":  # no exec that keeps the process on Windows
        run(*arguments)
        sys.exit(0)
    os.execv(arguments[0], arguments)


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"DutyLink needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    projects = (ROOT / "pyproject.toml", CLIENT / "pyproject.toml")
    wanted = hashlib.sha256(b"".join(p.read_bytes() for p in (*projects, LOCK))).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        print("installing DutyLink and its development tools into .venv", flush=True)
        install(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        # Reproducible: the lock's versions, each file checked against its hash.
        pip = (BIN / "python", "-m", "pip", "install", "--quiet")
        install(*pip, "--require-hashes", "--requirement", LOCK)
        # The light client first: it owns the protos and the SDK the full project depends on.
        install(*pip, "--no-deps", "--editable", CLIENT)
        install(*pip, "--no-deps", "--editable", ".")
        STAMP.write_text(wanted)


def ensure_checkov() -> Path:
    """checkov in its own environment, installed on first use (and when CHECKOV changes)."""
    directory = CHECKOV_VENV
    scripts = directory / BIN.name
    stamp = directory / ".installed"
    if not stamp.exists() or stamp.read_text().strip() != CHECKOV:
        print(f"installing {CHECKOV} into {directory}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(directory)
        install(scripts / "python", "-m", "pip", "install", "--quiet", CHECKOV)
        stamp.write_text(CHECKOV)
    return scripts / "checkov"


def apt_get(*arguments: str) -> subprocess.CompletedProcess[str]:
    # Never a question on the terminal (debconf): CI has no one to answer it.
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            ["apt-get", *arguments], check=False, capture_output=True, text=True, env=environment
        )
    except FileNotFoundError:  # not a Debian-like machine
        return subprocess.CompletedProcess(["apt-get"], 127, "", "apt-get: not found\n")


def ensure_browser() -> None:
    """The console's browser tests drive the system's Chromium (Playwright never downloads one):
    install Debian's package if it is missing, refreshing the package lists only if that fails."""
    if CHROMIUM.exists() or os.name == "nt":
        return
    print(f"{CHROMIUM} is missing: installing Debian's chromium for the console tests", flush=True)
    result = apt_get("install", "-y", "chromium")
    if result.returncode != 0 and apt_get("update").returncode == 0:
        result = apt_get("install", "-y", "chromium")
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-2000:] + result.stderr[-2000:])
        print(
            "could not install chromium (as root: apt-get install -y chromium); the console's "
            f"browser tests (tests/test_console.py) will fail without {CHROMIUM}",
            file=sys.stderr,
            flush=True,
        )


def test_selection(arguments: list[str]) -> list[str]:
    """pytest's arguments: without slow tests unless `--all` is given or a marker chosen."""
    if "--all" in arguments:
        return [a for a in arguments if a != "--all"]
    if any(a == "-m" or a.startswith("-m") for a in arguments):
        return arguments
    return ["-m", "not slow", *arguments]


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("demo", "serve", "test", "check"):
        sys.exit(__doc__)
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command in ("demo", "serve"):
        replace_with(BIN / "dutylink", command, *rest)
    elif command == "test":
        ensure_browser()
        replace_with(BIN / "python", "-m", "pytest", *test_selection(rest))
    else:
        run(BIN / "ruff", "check", ".")
        run(BIN / "ruff", "format", "--check", ".")
        run(BIN / "mypy")
        run(BIN / "python", "tools/gen_proto.py", "--check", "--lint", "--breaking")
        run(BIN / "python", "tools/render_deploy.py", "--check")
        run(BIN / "python", "tools/check_deploy.py", "--checkov", ensure_checkov())


if __name__ == "__main__":
    main(sys.argv[1:])
