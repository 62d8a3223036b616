"""Validate deploy/ offline: the Kubernetes manifests against the API schemas (strict: an
unknown or misspelt field is an error) of the oldest Kubernetes they support and of the newest
the validator knows, the manifests and the Dockerfile against checkov's policies
(deploy/.checkov.yaml says which are skipped and why), and the gateway configuration files
against the gateway's own loader.

    python tools/check_deploy.py --checkov PATH   # `python3 tools/bootstrap.py check` runs it
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from gateway import config
from gateway.core.settings import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# The oldest release the manifests use features of: the preStop `sleep` action (1.30).
OLDEST_KUBERNETES = "1.30.0"
# Not Kubernetes resources: kustomize's own file.
NOT_RESOURCES = {"kustomization.yaml"}


def manifests() -> list[Path]:
    return sorted(p for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name not in NOT_RESOURCES)


def run(command: list[str]) -> bool:
    print("$", " ".join(Path(command[0]).name if i == 0 else c for i, c in enumerate(command)))
    return subprocess.run(command, cwd=ROOT, check=False).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", type=Path, required=True, help="the checkov executable")
    arguments = parser.parse_args()
    validate = str(Path(sys.executable).with_name("kubernetes-validate"))
    files = [str(p.relative_to(ROOT)) for p in manifests()]
    passed = all(
        [
            run([validate, "--strict", "--quiet", "-k", OLDEST_KUBERNETES, *files]),
            run([validate, "--strict", "--quiet", *files]),
            run([str(arguments.checkov), "--config-file", "deploy/.checkov.yaml"]),
        ]
    )
    for path in sorted(DEPLOY.glob("*.toml")):
        try:
            config.load(path, environ={})
        except ConfigError as error:
            print(f"{path.relative_to(ROOT)}: {error}", file=sys.stderr)
            passed = False
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
