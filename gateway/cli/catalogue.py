"""`dutylink catalogue list [--json]`: every event type the exchange knows, the lifecycle
transition it performs, who may perform it and the fields it must carry (dutylink.catalogue),
so people and scripts can read what the gateway enforces."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dutylink.catalogue import load_catalogue

catalogue_app = typer.Typer(
    help="Read the event-type catalogue (types, lifecycles, roles).", no_args_is_help=True
)


@catalogue_app.command("list")
def list_types(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
) -> None:
    """Print every catalogued event type."""
    rows = [entry.as_row() for entry in load_catalogue().types]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
        return
    table = Table("type", "lifecycle", "from", "to", "roles", "required fields")
    for row in rows:
        table.add_row(
            row["type"],
            row["lifecycle"] or "-",
            ", ".join(row["from_states"]) or "-",
            row["to_state"] or "-",
            ", ".join(row["roles"]),
            ", ".join(row["required_fields"]),
        )
    Console(width=200).print(table)
