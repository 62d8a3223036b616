"""`dutylink cluster`: a local JetStream cluster for development, and the certificate that the
nodes of a real one share.

    dutylink cluster up --nodes 3 [--dir DIR] [--tls]      runs until Ctrl-C
    dutylink cluster certs --pki DIR --host nats-1 ...     the nodes' TLS certificate
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from gateway.access import pki
from gateway.store import nats_auth
from gateway.store.nats_server import NatsServerError
from gateway.telemetry import logs
from gateway.testkit.cluster import GATEWAY_USER, ClusterError, LocalCluster, issue_node_certificate

cluster_app = typer.Typer(
    help="Run a local NATS JetStream cluster; issue the cluster's TLS certificate.",
    no_args_is_help=True,
)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)


ENV_FILE = "gateway.env"


def _gateway_environment(cluster: LocalCluster) -> list[str]:
    """What a gateway needs, as shell exports (with the gateway's password)."""
    plan = cluster.plan
    # Every node in the URL list: the gateway can start while any one of them is down.
    servers = ",".join([cluster.gateway_urls[0], *cluster.urls[1:]])
    lines = [
        f"export DUTYLINK_NATS_URL={servers}",
        f"export DUTYLINK_NATS_STREAM_REPLICAS={min(3, len(plan.nodes))}",
    ]
    if plan.tls is not None:
        lines.append(f"export SSL_CERT_FILE={plan.tls.ca_file}")
    return lines


def _redacted(export: str) -> str:
    name, _, value = export.partition("=")
    return f"{name}={nats_auth.redact_url(value)}"


def _describe(cluster: LocalCluster, leader: str, env_file: Path) -> list[str]:
    """What runs and how to use it; passwords only in `env_file` (0600), never printed."""
    plan = cluster.plan
    lines = [
        f"JetStream cluster {plan.name}: {len(plan.nodes)} node(s) on 127.0.0.1, "
        f"meta leader {leader}, sync_interval always, TLS {'on' if plan.tls else 'off'}"
    ]
    for node, url in zip(plan.nodes, cluster.urls, strict=True):
        lines.append(f"  {node.name}  {url}  (store {node.directory / 'jetstream'})")
    lines += [
        f"Point a gateway at it: source {env_file}",
        "(this session's passwords, mode 0600; they change on every `up`):",
        *(f"  {_redacted(line)}" for line in _gateway_environment(cluster)),
        "System account (cluster operations, no JetStream): "
        f"{nats_auth.redact_url(cluster.system_urls[0])}",
        f"Only the {GATEWAY_USER!r} user reaches the streams. Ctrl-C stops every node.",
    ]
    return lines


@cluster_app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Number of nodes.")] = 3,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            file_okay=False,
            help="Keep node stores (and the cluster CA) here; default: a temporary directory.",
        ),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="TLS on routes and client connections (own CA).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="nats-server problems at this level.")] = "error",
) -> None:
    """Start NODES nats-server processes on loopback as one JetStream cluster; run until Ctrl-C."""
    logs.configure(log_level)
    # asyncio warns about every TLS connection closed by the server side; not news here.
    logging.getLogger("asyncio").setLevel(logging.ERROR)

    async def run(where: Path) -> None:
        cluster = LocalCluster(where, nodes, tls=tls)
        async with cluster:
            leader = await cluster.wait_until_ready()
            env_file = where / ENV_FILE
            pki.write_atomically(
                env_file, ("\n".join(_gateway_environment(cluster)) + "\n").encode(), 0o600
            )
            for line in _describe(cluster, leader, env_file):
                typer.echo(line)
            await _until_signalled()
        typer.echo("cluster stopped")

    try:
        if directory is not None:
            asyncio.run(run(directory))
        else:
            with tempfile.TemporaryDirectory(prefix="dutylink-cluster-") as temporary:
                asyncio.run(run(Path(temporary)))
    except (ClusterError, NatsServerError, pki.PkiError, OSError) as error:
        typer.echo(f"error: cannot start the cluster: {error}", err=True)
        raise typer.Exit(1) from None


@cluster_app.command()
def certs(
    pki_dir: Annotated[
        Path,
        typer.Option(
            "--pki",
            file_okay=False,
            help="The cluster's CA directory (`dutylink pki init --dir DIR`; not the agencies' CA).",
        ),
    ],
    host: Annotated[
        list[str],
        typer.Option(
            "--host", help="Node DNS name or IP address (repeatable).", show_default=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", file_okay=False, help="Write the pair here (default: --pki)."),
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 397,
) -> None:
    """Issue the one certificate all nodes present, on routes and to clients.

    It names every --host and carries serverAuth and clientAuth (routes verify both ways)."""
    try:
        issued = issue_node_certificate(pki_dir, host, days=days, out_dir=out)
    except pki.PkiError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"issued serial {issued.serial} for {', '.join(host)}, valid until "
        f"{issued.not_after.isoformat()}: {issued.certificate} (key {issued.key}, mode 0600)"
    )
