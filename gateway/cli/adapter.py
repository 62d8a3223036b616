"""`dutylink adapter`: run the adapters that connect department systems to the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from dutylink.adapters.registry import adapter_kinds
from dutylink.adapters.runner import (
    AdapterConfigError,
    AdapterRunner,
    AdapterSection,
    AdapterTls,
    load_adapter_config,
)
from gateway.core.settings_docs import render_table
from gateway.telemetry import logs

adapter_app = typer.Typer(help="Run the adapters of department systems.", no_args_is_help=True)


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)


@adapter_app.command("list")
def list_adapters() -> None:
    """The adapters this installation has, with what each is for."""
    table = Table()
    table.add_column("adapter")
    table.add_column("what it connects")
    for name, kind in sorted(adapter_kinds().items()):
        table.add_row(name, kind.description)
    Console().print(table)


@adapter_app.command("options")
def options(
    name: Annotated[str, typer.Argument(help="The adapter, as `dutylink adapter list` names it.")],
) -> None:
    """Print an adapter's configuration file: every table and key with its default and what
    it does, generated from the adapter's declared options."""
    kinds = adapter_kinds()
    kind = kinds.get(name)
    if kind is None:
        _fail(f"error: no adapter named {name!r} (adapters: {', '.join(sorted(kinds))})")
    tables = (("adapter", AdapterSection), ("adapter.tls", AdapterTls), *kind.tables)
    lines = [f"# The {kind.name} adapter: {kind.description}.", ""]
    for table, schema in tables:
        lines.extend(render_table(table, schema))
    typer.echo("\n".join(lines).rstrip("\n"))


@adapter_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="The adapter, as `dutylink adapter list` names it.")],
    config: Annotated[
        Path, typer.Option("--config", help="The adapter's TOML file.", dir_okay=False)
    ],
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run one adapter until SIGTERM/SIGINT."""
    kinds = adapter_kinds()
    kind = kinds.get(name)
    if kind is None:
        _fail(f"error: no adapter named {name!r} (adapters: {', '.join(sorted(kinds))})")
    try:
        settings = load_adapter_config(config)
    except AdapterConfigError as error:
        _fail(f"error: {error}")
    logs.configure(log_level)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(AdapterRunner(kind, settings).run())
    except AdapterConfigError as error:  # raised when the adapter is built from [options]
        _fail(f"error: {config}: [options] {error}")
