"""`dutylink console`: serve the duty officers' web console (gateway.console) on loopback.

An officer logs in with the agency's token and sees the board exactly as the gateway answers
that token; the console only reads (GetBoard, GetIncident, WatchBoard, GetLedger). It listens
on loopback unless --allow-remote says otherwise, because it serves plain HTTP: a remote
console belongs behind a TLS-terminating proxy that the operator sets up on purpose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from aiohttp import web

from adapters.sdk.client import DutyLinkClient
from gateway.audit.note import NoteError, Verifier
from gateway.cli.exchange import DEFAULT_TARGET, CaOption, CertOption, KeyOption, fail
from gateway.config import is_loopback
from gateway.console.app import create_app
from gateway.console.state import ConsoleSettings

DEFAULT_LISTEN = "127.0.0.1:8780"


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port), or a usage error naming the flag."""
    host, colon, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not (colon and host and port.isdigit() and 0 <= int(port) <= 65535):
        raise fail(f"--listen {listen!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}", 2)
    return host, int(port)


def audit_keys(files: list[Path]) -> tuple[tuple[str, str], ...]:
    """(gateway id, verifier key string) from `<gateway id>.pub` files as the gateways write
    them (`<data dir>/audit/gw-1.pub`), each checked to be a verifier key."""
    found: dict[str, str] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8").strip()
            found[path.stem] = Verifier.from_key_string(text).key_string()
        except (OSError, UnicodeDecodeError, NoteError) as error:
            raise fail(f"--audit-key {path}: not a readable verifier key ({error})", 2) from None
    return tuple(found.items())


def console(
    listen: Annotated[
        str, typer.Option("--listen", help="Where to serve the console, HOST:PORT.")
    ] = DEFAULT_LISTEN,
    gateway: Annotated[
        str, typer.Option("--gateway", help="The gateway, HOST:PORT.")
    ] = DEFAULT_TARGET,
    zone: Annotated[
        str, typer.Option("--zone", help="The time zone times are shown in.")
    ] = "Asia/Shanghai",
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Listen on a non-loopback address (plain HTTP!)."),
    ] = False,
    audit_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--audit-key",
            help="A gateway's audit verifier key file, <gateway id>.pub (repeatable): offered to "
            "auditors' browsers as a default; they verify with the key they hold.",
            dir_okay=False,
        ),
    ] = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Serve the duty officers' web console: log in with your agency's token, see the live duty
    board and each incident's lines and timeline as your agency may see them (read-only)."""
    host, port = split_listen(listen)
    if not is_loopback(host) and not allow_remote:
        raise fail(
            f"--listen {listen}: not a loopback address. The console serves plain HTTP and its "
            "session cookie would cross the network in clear; serve it behind a TLS proxy and "
            "give --allow-remote to listen there anyway",
            2,
        )
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"--zone {zone!r}: not a known time zone (e.g. Asia/Shanghai)", 2) from None
    if ca or cert or key:
        # The gateway names a mutual-TLS caller by its certificate, and the SDK sends a bearer
        # token only on plaintext: each officer's token could not choose the agency over TLS.
        raise fail(
            "--ca/--cert/--key: the console logs officers in with their agency's token, which "
            "the gateway accepts on plaintext only; client-certificate login is not there yet",
            2,
        )
    settings = ConsoleSettings(
        connect=lambda token: DutyLinkClient(gateway, token=token),
        zone=zone,
        audit_keys=audit_keys(audit_key or []),
    )
    typer.echo(f"DutyLink console on http://{listen}/ (gateway {gateway}, times in {zone})")
    web.run_app(create_app(settings), host=host, port=port, print=None)


def register(app: typer.Typer) -> None:
    app.command("console")(console)
