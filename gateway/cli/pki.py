"""`dutylink pki`: run the exchange's certificate authority from the command line.

Every command takes `--dir`, the PKI directory (see gateway.access.pki for its layout). Failures print
one line naming the file and what is wrong on stderr and exit 1; bad arguments exit 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gateway.access import pki

pki_app = typer.Typer(
    help="Manage the exchange's certificate authority and agency certificates.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path,
    typer.Option("--dir", help="The PKI directory (created 0700 by init).", file_okay=False),
]
DaysOption = Annotated[int, typer.Option("--days", min=1, help="Validity in days.")]


@contextmanager
def _reported() -> Iterator[None]:
    """Turn a PkiError into `error: <message>` on stderr and exit status 1, not a traceback."""
    try:
        yield
    except pki.PkiError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _agency_id(value: str) -> str:
    """Reject a malformed agency id as a usage error (exit 2) before touching any file."""
    try:
        return pki.validate_agency_id(value)
    except pki.PkiError as error:
        raise typer.BadParameter(str(error)) from None


@pki_app.command()
def init(
    directory: DirOption,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA (invalidates every certificate)."),
    ] = False,
    days: Annotated[int, typer.Option("--days", min=1, help="CA validity in days.")] = 3650,
) -> None:
    """Create the CA (ca.pem, ca.key), an empty register and an empty signed CRL."""
    with _reported():
        path = pki.init_ca(directory, days=days, force=force)
    typer.echo(f"CA written to {path}; give this file (never ca.key) to every agency.")


@pki_app.command()
def issue(
    agency: Annotated[
        str,
        typer.Argument(
            help="Agency id, e.g. fire.", callback=_agency_id, metavar="AGENCY", show_default=False
        ),
    ],
    directory: DirOption,
    days: DaysOption = 397,
) -> None:
    """Issue a client certificate for AGENCY (URI SAN urn:dutylink:agency:AGENCY)."""
    with _reported():
        issued = pki.issue_agency(directory, agency, days=days)
    _print_issued(issued)


@pki_app.command()
def server(
    directory: DirOption,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP address (repeatable).", show_default=False),
    ] = None,
    days: DaysOption = 397,
) -> None:
    """Issue the gateway's server certificate (default hosts: localhost, 127.0.0.1, ::1)."""
    with _reported():
        issued = pki.issue_server(directory, hosts=host or pki.DEFAULT_HOSTS, days=days)
    _print_issued(issued)


@pki_app.command()
def front(
    name: Annotated[
        str,
        typer.Argument(
            help="The front's name, e.g. tlcp-1.",
            callback=_agency_id,
            metavar="NAME",
            show_default=False,
        ),
    ],
    directory: DirOption,
    days: DaysOption = 397,
) -> None:
    """Issue a TLCP front's client certificate (URI SAN urn:dutylink:front:NAME): gateways whose
    tls.fronts lists NAME take its calls as the agency of the certificate it forwards
    (docs/tlcp-front.md). Revoke it as front:NAME."""
    with _reported():
        issued = pki.issue_front(directory, name, days=days)
    _print_issued(issued)


@pki_app.command()
def console(
    name: Annotated[
        str,
        typer.Argument(
            help="The console's name, e.g. duty-room.",
            callback=_agency_id,
            metavar="NAME",
            show_default=False,
        ),
    ],
    directory: DirOption,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP address (repeatable).", show_default=False),
    ] = None,
    days: DaysOption = 397,
) -> None:
    """Issue a web console's certificate (URI SAN urn:dutylink:console:NAME): it serves the
    officers' browsers over HTTPS and relays their read-only calls to gateways whose
    tls.consoles lists NAME. Revoke it as console:NAME."""
    with _reported():
        issued = pki.issue_console(directory, name, hosts=host or pki.DEFAULT_HOSTS, days=days)
    _print_issued(issued)


@pki_app.command()
def revoke(
    agency_or_serial: Annotated[
        str,
        typer.Argument(
            help="An agency id (all its certificates) or one decimal serial.",
            metavar="AGENCY_OR_SERIAL",
        ),
    ],
    directory: DirOption,
) -> None:
    """Revoke certificates and re-sign crl.pem; reload it in the gateway afterwards."""
    with _reported():
        serials = pki.revoke(directory, agency_or_serial)
    if serials:
        for serial in serials:
            typer.echo(f"revoked {serial}")
    else:
        typer.echo(f"{agency_or_serial}: already revoked; CRL re-signed")
    typer.echo(f"CRL written to {directory / pki.CRL}")


@pki_app.command("crl")
def crl(directory: DirOption) -> None:
    """Re-sign crl.pem with a fresh nextUpdate (run it daily: by default the gateway refuses
    calls once the CRL in force is past its nextUpdate)."""
    with _reported():
        path = pki.sign_crl(directory)
    typer.echo(f"CRL re-signed, valid for {pki.CRL_VALIDITY.days} days: {path}")


@pki_app.command("list")
def list_certificates(directory: DirOption) -> None:
    """Show every certificate the CA issued: serial, subject, expiry, revoked."""
    with _reported():
        issued = pki.list_issued(directory)
    table = Table(title=f"Certificates issued by {directory / pki.CA_CERT}")
    # The serial is what `revoke` takes, so it must stay on one line, whole.
    table.add_column("serial", no_wrap=True, overflow="ignore")
    table.add_column("subject")
    table.add_column("not_after")
    table.add_column("revoked")
    for serial, entry in issued.items():
        table.add_row(
            str(serial),
            str(entry.get("subject", entry.get("agency", "?"))),
            str(entry.get("not_after", "?")),
            "yes" if entry.get("revoked") else "no",
        )
    _console().print(table)


def _console() -> Console:
    """A terminal keeps its width; a pipe or file gets a wide one, because rich would otherwise
    assume 80 columns and squeeze the ~48-digit serials that `grep` and `revoke` need whole."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def _print_issued(issued: pki.IssuedCertificate) -> None:
    typer.echo(
        f"issued serial {issued.serial} to {issued.holder}, valid until "
        f"{issued.not_after.isoformat()}: {issued.certificate} (key {issued.key}, mode 0600)"
    )
