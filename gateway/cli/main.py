"""The `dutylink` command: serve the gateway, run the demo, inspect the configuration.

Long because it is the root of every sub-command: serve, demo, config and dead letters live here
beside the registration of the others (pki, policy, audit, adapter, cluster, catalogue).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Annotated

import structlog
import typer
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from gateway import config as config_module
from gateway.audit.log import AuditUnavailableError
from gateway.cli import board as cli_board
from gateway.cli import console as cli_console
from gateway.cli import duty as cli_duty
from gateway.cli import exchange as cli_exchange
from gateway.cli.adapter import adapter_app
from gateway.cli.audit import audit_app
from gateway.cli.catalogue import catalogue_app
from gateway.cli.cluster import cluster_app
from gateway.cli.keys import keys_app
from gateway.cli.operator_audit import open_operator_log, operator_name, replay_dead_letter
from gateway.cli.pki import pki_app
from gateway.cli.policy import policy_app
from gateway.cli.startup import console_beside, crash_at, run_reporting_startup_errors
from gateway.core.ports import StoreError
from gateway.core.settings import Config, ConfigError, check_address
from gateway.core.settings_docs import render_example, render_schema
from gateway.store import jetstream, nats_auth
from gateway.store.nats_server import embedded_dir, running_url
from gateway.telemetry import logs

app = typer.Typer(
    help="DutyLink: the inter-agency event bus for a city's public-safety agencies.",
    no_args_is_help=True,
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"dutylink {importlib.metadata.version('dutylink')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """DutyLink: the inter-agency event bus for a city's public-safety agencies."""


config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(pki_app, name="pki")
app.add_typer(keys_app, name="keys")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(adapter_app, name="adapter")
app.add_typer(cluster_app, name="cluster")
app.add_typer(catalogue_app, name="catalogue")
# How long an operator's command waits for NATS before it says so (a gateway waits forever).
CLI_CONNECT_SECONDS = 15.0
deadletter_app = typer.Typer(
    help="Inspect and replay dead letters (operators).", no_args_is_help=True
)
app.add_typer(deadletter_app, name="deadletter")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML configuration file.", dir_okay=False)
]
ListenOption = Annotated[
    str | None, typer.Option("--listen", help="gRPC address HOST:PORT (default 127.0.0.1:50051).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Embedded NATS storage and local state.")
]
NatsUrlOption = Annotated[
    str | None,
    typer.Option("--nats-url", help="Use this NATS server or cluster instead of the embedded one."),
]


def load_config(
    path: Path | None,
    *,
    listen: str | None = None,
    data_dir: Path | None = None,
    nats_url: str | None = None,
) -> Config:
    """File, then environment, then these flags; a bad file exits with its name and key."""
    try:
        if listen is not None:
            try:
                check_address(listen)
            except ValueError as error:
                raise ConfigError(f"--listen: {error}") from None
        loaded = config_module.load(path)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    gateway = (
        loaded.gateway if listen is None else dataclasses.replace(loaded.gateway, listen=listen)
    )
    nats = loaded.nats
    if data_dir is not None:
        nats = dataclasses.replace(nats, data_dir=str(data_dir))
    if nats_url is not None:
        nats = dataclasses.replace(nats, url=SecretStr(nats_url))
    return dataclasses.replace(loaded, gateway=gateway, nats=nats)


@app.command()
def serve(
    config: ConfigOption = None,
    listen: ListenOption = None,
    data_dir: DataDirOption = None,
    nats_url: NatsUrlOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Gateway processes sharing the port, each with its own audit log "
            "<gateway_id>-w<i>; 0: one per core up to max_workers (default: [gateway] workers).",
        ),
    ] = None,
) -> None:
    """Run the gateway until SIGTERM/SIGINT (with an embedded NATS unless --nats-url is given)."""
    from gateway.core.workers import worker_count
    from gateway.server import Gateway

    settings = load_config(config, listen=listen, data_dir=data_dir, nats_url=nats_url)
    logs.configure(log_level)
    gateway_settings = settings.gateway
    count = worker_count(
        gateway_settings.workers if workers is None else workers,
        os.cpu_count(),
        gateway_settings.max_workers,
    )
    if count > 1:
        run_reporting_startup_errors(lambda: _supervise(settings, count, config, log_level))
        return
    crash_step = os.environ.get("DUTYLINK_FAILPOINT")

    async def run() -> None:
        gateway = (
            Gateway(settings, failpoint=crash_at(crash_step)) if crash_step else Gateway(settings)
        )
        async with gateway, contextlib.AsyncExitStack() as beside:
            if settings.console.listen:
                url = await beside.enter_async_context(console_beside(gateway.address, settings))
                structlog.get_logger("dutylink.console").info("console.started", url=url)
            await gateway.serve_until_signalled()
        if gateway.failure:
            typer.echo(f"error: stopped: {gateway.failure}", err=True)
            raise typer.Exit(1)

    run_reporting_startup_errors(run)


async def _supervise(settings: Config, count: int, config: Path | None, log_level: str) -> None:
    """`serve` as `count` worker processes (gateway.cli.workers)."""
    from gateway.cli.workers import Supervisor, WorkersFailedError

    try:
        await Supervisor(settings, count, config_file=config, log_level=log_level).run()
    except WorkersFailedError as error:
        typer.echo(f"error: cannot start: {error}", err=True)
        raise typer.Exit(2 if error.status == 2 else 1) from None  # 2: its configuration


@app.command()
def demo(
    listen: Annotated[
        str, typer.Option("--listen", help="gRPC address HOST:PORT.")
    ] = "127.0.0.1:50051",
    data_dir: DataDirOption = None,
    nats_url: NatsUrlOption = None,
    keep_serving: Annotated[
        bool,
        typer.Option("--keep-serving", help="Keep the gateway running afterwards (for grpcurl)."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="Gateway log level during the demo.")] = "error",
) -> None:
    """Start the gateway (embedded NATS in a fresh directory) and play a linked-duty scenario."""
    import tempfile

    from gateway.cli.demo import run_demo
    from gateway.server import Gateway

    logs.configure(log_level)
    console = Console()

    async def run(directory: Path) -> None:
        settings = load_config(None, listen=listen, data_dir=directory, nats_url=nats_url)
        async with Gateway(settings) as gateway:
            console.print(
                f"gateway on [bold]{gateway.address}[/], NATS JetStream at "
                f"{nats_auth.redact_url(gateway.nats_url)}"
            )
            await run_demo(gateway.address, console)
            if keep_serving:
                console.print(
                    f"serving until Ctrl-C; try: grpcurl -plaintext {gateway.address} list"
                )
                await gateway.serve_until_signalled()

    if data_dir is not None:
        run_reporting_startup_errors(lambda: run(data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="dutylink-demo-") as directory:
            run_reporting_startup_errors(lambda: run(Path(directory)))


@app.command()
def bench(
    runs: Annotated[int, typer.Option(help="Repetitions; each figure is their median.")] = 3,
    events: Annotated[int, typer.Option(help="Events per throughput run.")] = 2000,
    seconds: Annotated[
        float, typer.Option(help="Length of each rate-driven run (latency, fan-out, checkpoint).")
    ] = 10.0,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="SECTION",
            help="Run just this section (repeatable): sync, publish, policy, audit, guard, latency, "
            "lanes, board, abuse, fanout, checkpoint, profile, soak, workers.",
        ),
    ] = None,
    skip_soak: Annotated[
        bool, typer.Option("--skip-soak", help="Skip the memory and replica runs.")
    ] = False,
    rss_seconds: Annotated[
        float, typer.Option(help="Length of the memory run with a stalled subscriber.")
    ] = 600.0,
    nats_url: NatsUrlOption = None,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="Run the gateway (and the echo baseline) in the bench's own process and event "
            "loop, sharing its CPU with the clients, instead of as separate processes.",
        ),
    ] = False,
) -> None:
    """Measure the gateway on this machine against raw baselines and print one table (medians
    of --runs, ratios to the baseline measured in the same runs). See gateway/bench/."""
    from gateway import bench as bench_module

    sections = frozenset(only or bench_module.SECTIONS) - ({"soak"} if skip_soak else set())
    unknown = sections - set(bench_module.SECTIONS)
    if unknown:
        raise typer.BadParameter(
            f"unknown section {', '.join(sorted(unknown))} "
            f"(expected one of {', '.join(bench_module.SECTIONS)})",
            param_hint="--only",
        )
    settings = bench_module.Settings(
        runs=runs,
        count=events,
        seconds=seconds,
        sections=sections,
        nats_url=nats_url or "",
        rss_seconds=rss_seconds,
        in_process=in_process,
    )
    logs.configure("error", libraries_to="stderr")
    figures = asyncio.run(
        bench_module.run(settings, progress=lambda line: typer.echo(f"bench: {line}", err=True))
    )
    table = Table(
        title=f"DutyLink, median of {runs} runs, {bench_module.mode(settings)}, "
        f"on {bench_module.where(settings)}"
    )
    for column in bench_module.COLUMNS:
        table.add_column(column)
    for row in bench_module.table_rows(figures):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a log or a file: no wrapping at 80 columns
        console = Console(width=180)
    console.print(table)
    judged = [f.met for f in figures if f.met is not None]
    console.print(f"targets met: {sum(judged)} of {len(judged)}")


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    listen: ListenOption = None,
    data_dir: DataDirOption = None,
    nats_url: NatsUrlOption = None,
) -> None:
    """Print the effective configuration (file + DUTYLINK_* environment + flags), secrets masked."""
    settings = load_config(config, listen=listen, data_dir=data_dir, nats_url=nats_url)
    typer.echo(json.dumps(config_module.masked(settings), indent=2, ensure_ascii=False))


@config_app.command("example")
def config_example() -> None:
    """Print a configuration file with every key, its default and what it does."""
    typer.echo(render_example(), nl=False)


@config_app.command("schema")
def config_schema() -> None:
    """Print the configuration file's JSON schema (for editors and config management)."""
    typer.echo(render_schema(), nl=False)


async def _connected_store(settings: Config) -> jetstream.EventStore:
    """An EventStore on the configured NATS, or on the embedded server of the data directory
    as the operator user (dead letters only: it can neither publish events nor read them)."""
    url = settings.nats.url.get_secret_value()
    if not url:
        running = running_url(settings.nats.data_dir)
        if not running:
            typer.echo(
                f"error: no NATS to talk to: give --nats-url, set nats.url, or start the gateway "
                f"with data directory {settings.nats.data_dir}",
                err=True,
            )
            raise typer.Exit(2)
        try:
            url = nats_auth.embedded_url_as(
                running, embedded_dir(settings.nats.data_dir), nats_auth.OPERATOR
            )
        except nats_auth.CredentialsError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
    store = jetstream.EventStore(settings)
    try:
        await store.connect(url, give_up_after=CLI_CONNECT_SECONDS)
    except StoreError as error:
        typer.echo(f"error: {nats_auth.redact_url(url)}: {error}", err=True)
        raise typer.Exit(1) from None
    return store


@deadletter_app.command("list")
def deadletter_list(
    agency: Annotated[str, typer.Option(help="Only this agency's subscriptions.")] = "*",
    subscription: Annotated[str, typer.Option(help="Only this subscription name.")] = "*",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    nats_url: NatsUrlOption = None,
) -> None:
    """List dead letters: events a subscription did not acknowledge within its delivery limit."""
    settings = load_config(config, data_dir=data_dir, nats_url=nats_url)

    async def run() -> None:
        store = await _connected_store(settings)
        try:
            letters = await store.dead_letters(agency, subscription)
        finally:
            await store.close()
        table = Table(title=f"Dead letters ({len(letters)})")
        for column in (
            "seq",
            "agency",
            "subscription",
            "event id",
            "type",
            "from",
            "deliveries",
            "reason",
        ):
            table.add_column(column)
        for letter in letters:
            table.add_row(
                str(letter.sequence), letter.agency, letter.subscription, letter.event_id, letter.event_type,
                letter.source, str(letter.deliveries), letter.reason,
            )  # fmt: skip
        Console().print(table)

    asyncio.run(run())


@deadletter_app.command("replay")
def deadletter_replay(
    sequences: Annotated[
        list[int], typer.Argument(help="Dead-letter sequence numbers (from `list`).")
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    nats_url: NatsUrlOption = None,
) -> None:
    """Deliver dead letters again, each to the subscription that gave up on it; each replay is
    audited (who, which, to whom) in the log <gateway id>-operator, before it happens."""
    settings = load_config(config, data_dir=data_dir, nats_url=nats_url)

    async def run() -> int:
        store = await _connected_store(settings)
        failures = 0
        operator = operator_name()
        try:
            try:
                audit = await open_operator_log(settings, store)
            except AuditUnavailableError as error:
                typer.echo(f"error: cannot audit the replay, nothing replayed: {error}", err=True)
                return len(sequences)
            for sequence in sequences:
                try:
                    letter, stored = await replay_dead_letter(store, audit, sequence, operator)
                except (StoreError, AuditUnavailableError) as error:
                    typer.echo(f"dead letter {sequence}: {error}", err=True)
                    failures += 1
                    continue
                note = " (already replayed: stored once)" if stored.duplicate else ""
                typer.echo(
                    f"dead letter {sequence}: event {letter.event_id} replayed to "
                    f"{letter.agency}/{letter.subscription} as stream sequence {stored.sequence}{note}"
                )
        finally:
            await store.close()
        return failures

    if asyncio.run(run()):
        raise typer.Exit(1)


# A department's verbs come after the operator's in --help.
cli_exchange.register(app)
cli_duty.register(app)
cli_board.register(app)
cli_console.register(app)

if __name__ == "__main__":
    app()
