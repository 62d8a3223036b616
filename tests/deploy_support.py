"""The deploy/ files as the deploy tests read them: paths, parsed documents, pod specs."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NATS_CONF = DEPLOY / "nats" / "nats.conf"
KUBERNETES = DEPLOY / "kubernetes"
# A version tag with at least major.minor.patch, or a digest: never `latest`, never `2`.
PINNED = re.compile(r"^[\w./-]+(:v?\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


def pinned(image: str) -> bool:
    return bool(PINNED.fullmatch(image)) and (":" in image or "@sha256:" in image)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def manifests() -> list[dict[str, Any]]:
    return [d for path in sorted(KUBERNETES.glob("*.yaml")) for d in documents(path)]


def kind(name: str, resources: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in (resources or manifests()) if d["kind"] == name}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    return loaded


def pod_specs(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if document["kind"] in ("StatefulSet", "Deployment"):
        yield document["spec"]["template"]["spec"]


def health_port() -> int:
    """The port of health_listen in the gateway's ConfigMap (the text of deploy/gateway.toml,
    which compose mounts: a test below compares them)."""
    text = kind("ConfigMap")["dutylink-gateway"]["data"]["dutylink.toml"]
    return int(tomllib.loads(text)["gateway"]["health_listen"].rpartition(":")[2])
