"""deploy/: what each deployment lets its processes do. The Kubernetes pods meet the `restricted`
Pod Security Standard their namespace enforces, network policies deny every connection but the
listed ones, compose confines every container, and the systemd units for hosts without
containers are valid units that start what the containers start."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from tests.deploy_support import DEPLOY, compose, health_port, kind, manifests, pod_specs

SYSTEMD = DEPLOY / "systemd"


def workloads() -> Iterator[tuple[str, dict[str, Any]]]:
    for document in manifests():
        for spec in pod_specs(document):
            yield document["metadata"]["name"], spec


def test_the_namespace_enforces_the_restricted_pod_security_standard() -> None:
    (namespace,) = kind("Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_pod_meets_the_restricted_standard_and_mounts_no_service_account_token() -> None:
    """The checks of the `restricted` profile (Kubernetes Pod Security Standards) that the
    manifests decide: a pod failing any of them would be rejected by the namespace."""
    names = []
    for name, spec in workloads():
        names.append(name)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), name
        assert all("hostPath" not in volume for volume in spec.get("volumes", [])), name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert "privileged" not in context, name
            assert all("hostPort" not in port for port in container.get("ports", [])), name
    assert sorted(names) == ["dutylink-gateway", "nats"]


def test_a_terminating_gateway_keeps_serving_then_drains_within_its_grace_period() -> None:
    (gateway,) = [spec for name, spec in workloads() if name == "dutylink-gateway"]
    (container,) = gateway["containers"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    text = kind("ConfigMap")["dutylink-gateway"]["data"]["dutylink.toml"]
    grace = config.load(None, environ={}).gateway.shutdown_grace_seconds
    grace = tomllib.loads(text).get("gateway", {}).get("shutdown_grace_seconds", grace)
    assert pause > 0
    # The pause, the calls' grace, then the NATS drain and a last checkpoint (a few seconds).
    assert pause + grace + 10 <= gateway["terminationGracePeriodSeconds"]


def _selected(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return bool(wanted.items() <= labels.items())


def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def test_network_policies_deny_everything_but_the_listed_connections() -> None:
    policies = kind("NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny and "egress" not in deny
    served: dict[str, set[int]] = {}
    for document in kind("StatefulSet").values():
        labels = document["spec"]["template"]["metadata"]["labels"]
        name = document["metadata"]["name"]
        ports = {p["containerPort"] for c in document["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}  # fmt: skip
        opened = set().union(
            *(
                _ports(p["spec"].get("ingress", []))
                for p in policies.values()
                if _selected(p, labels)
            )
        )
        # Only ports the pod serves, and not the health port: the kubelet probes from the node.
        assert opened <= ports - {health_port()}, name
        served[name] = opened
    assert served == {"dutylink-gateway": {50051, 9464}, "nats": {4222, 6222}}
    gateway = policies["dutylink-gateway"]["spec"]
    (to_nats,) = gateway["egress"]
    assert to_nats["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]
    assert _ports([to_nats]) == {4222}
    # gRPC from anywhere (mutual TLS decides), metrics only from Prometheus.
    grpc, metrics = gateway["ingress"]
    assert "from" not in grpc and _ports([grpc]) == {50051}
    assert metrics["from"] and _ports([metrics]) == {9464}
    dns = policies["dns"]["spec"]
    assert dns["podSelector"] == {} and _ports(dns["egress"]) == {53}


def test_every_compose_container_is_confined() -> None:
    for name, service in compose()["services"].items():
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["mem_limit"] and service["cpus"] and service["pids_limit"], name
        # Only the balancer gets anything back: nginx hands its workers to its own user.
        assert service.get("cap_add", []) == (["CHOWN", "SETGID", "SETUID"] * (name == "lb")), name


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's sections and their settings (a setting may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def test_the_systemd_units_run_what_the_containers_run_unprivileged() -> None:
    gateway = _unit(SYSTEMD / "dutylink-gateway.service")["Service"]
    (command,) = gateway["ExecStart"]
    image = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    # The image's entry point and command: `dutylink serve --config /etc/dutylink/...`.
    assert shlex.split(command)[1:] == ["serve", "--config", "/etc/dutylink/dutylink.toml"]
    assert '["serve", "--config", "/etc/dutylink/dutylink.toml"]' in image
    nats = _unit(SYSTEMD / "nats-server.service")["Service"]
    container = compose()["services"]["nats-0"]
    assert shlex.split(nats["ExecStart"][0])[1:] == container["command"][1:]
    assert nats["KillSignal"] == [container["stop_signal"]], "lame duck, as in the containers"
    assert nats["ReadWritePaths"] == ["/data"], "nats.conf's store_dir"
    for unit in (gateway, nats):
        assert unit["User"] != ["root"] and unit["NoNewPrivileges"] == ["yes"]
        assert unit["CapabilityBoundingSet"] == [""] and unit["ProtectSystem"] == ["strict"]
        assert unit["EnvironmentFile"][0].startswith("/etc/")  # secrets stay out of the unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` on copies whose commands point at a binary present here (it
    checks that each one exists): any setting it cannot parse is an error."""
    for unit in sorted(SYSTEMD.glob("*.service")):
        lines = []
        for line in unit.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.startswith("Exec") and value.startswith("/"):
                line = f"{key}=/bin/true {value.partition(' ')[2]}"
            lines.append(line)
        (tmp_path / unit.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    assert len(units) == 2
    checked = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
