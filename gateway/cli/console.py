"""`dutylink console`: serve the duty officers' web console (gateway.console).

Two ways, as the gateway is run:
- beside a plaintext gateway (development): an officer logs in with the agency's token and sees
  the board exactly as the gateway answers that token. It listens on loopback unless
  --allow-remote says otherwise, because it serves plain HTTP: a remote console belongs behind
  a TLS-terminating proxy that the operator sets up on purpose.
- beside a mutual-TLS gateway (--ca, --cert, --key: the console's own certificate from
  `dutylink pki console NAME`, and --crl): HTTPS, each officer logged in by the agency's client
  certificate, each read relayed to the gateway with the console's certificate as that agency
  (the gateway must list the console in tls.consoles).
The console only reads (the board, incidents, acknowledgements, ledgers, the audit log).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from aiohttp import web

from dutylink.adapters.sdk.client import ClientCertificate, DutyLinkClient
from gateway.access.pki import IdentityError, PkiError, client_identity
from gateway.access.revocation import REFUSE, RevocationKeeper
from gateway.audit.note import NoteError, Verifier
from gateway.cli.exchange import DEFAULT_TARGET, CaOption, KeyOption, fail
from gateway.console.app import create_app
from gateway.console.certificates import CertificateLogin, https_context
from gateway.console.state import ConsoleSettings
from gateway.core.settings import is_loopback

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


class ConsoleCertificateError(Exception):
    """The console's certificate files are missing, unreadable or not a console's."""


def certificate_console(
    gateway: str,
    *,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    crl_file: Path | None,
    crl_unusable: str = REFUSE,
    zone: str,
    audit_keys: tuple[tuple[str, str], ...] = (),
    agencies: tuple[str, ...] = (),
) -> tuple[ConsoleSettings, ssl.SSLContext]:
    """A console that logs officers in by certificate and relays their reads to `gateway` with
    its own certificate, and the HTTPS context it serves with."""
    try:
        identity = client_identity(cert_file.read_bytes())
    except (OSError, IdentityError) as error:
        raise ConsoleCertificateError(f"{cert_file}: {error}") from None
    try:
        certificate = ClientCertificate.from_files(ca_file, cert_file, key_file)
        revocations = (
            None
            if crl_file is None
            else RevocationKeeper(crl_file, certificate.ca_pem, unusable=crl_unusable)
        )
        https = https_context(ca_file, cert_file, key_file)
    except (OSError, ssl.SSLError, PkiError) as error:
        raise ConsoleCertificateError(str(error)) from None
    if not identity.console:
        raise ConsoleCertificateError(
            f"{cert_file} names agency {identity.name!r}, not a console (issue one with "
            "`dutylink pki console NAME`)"
        )
    settings = ConsoleSettings(
        connect=lambda agency: DutyLinkClient(gateway, certificate=certificate, acting_for=agency),
        zone=zone,
        audit_keys=audit_keys,
        certificates=CertificateLogin(revocations),
        agencies=agencies,
    )
    return settings, https


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
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            help="The console's certificate (`dutylink pki console NAME`): serve HTTPS and log "
            "officers in by their agencies' client certificates.",
            dir_okay=False,
        ),
    ] = None,
    key: KeyOption = None,
    crl: Annotated[
        Path | None,
        typer.Option("--crl", help="The exchange's revocation list (crl.pem).", dir_okay=False),
    ] = None,
) -> None:
    """Serve the duty officers' web console: log in with your agency's token (or, with --cert,
    your agency's client certificate), see the live duty
    board and each incident's lines and timeline as your agency may see them (read-only)."""
    host, port = split_listen(listen)
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"--zone {zone!r}: not a known time zone (e.g. Asia/Shanghai)", 2) from None
    keys = audit_keys(audit_key or [])
    if ca or cert or key:
        if not (ca and cert and key):
            raise fail("--ca, --cert and --key go together (the console's own certificate)", 2)
        try:
            settings, https = certificate_console(
                gateway,
                ca_file=ca,
                cert_file=cert,
                key_file=key,
                crl_file=crl,
                zone=zone,
                audit_keys=keys,
            )
        except ConsoleCertificateError as error:
            raise fail(str(error), 2) from None
        typer.echo(f"DutyLink console on https://{listen}/ (gateway {gateway}, times in {zone})")
        web.run_app(create_app(settings), host=host, port=port, ssl_context=https, print=None)
        return
    if not is_loopback(host) and not allow_remote:
        raise fail(
            f"--listen {listen}: not a loopback address. The console serves plain HTTP and its "
            "session cookie would cross the network in clear; serve it behind a TLS proxy and "
            "give --allow-remote to listen there anyway",
            2,
        )
    settings = ConsoleSettings(
        connect=lambda token: DutyLinkClient(gateway, token=token), zone=zone, audit_keys=keys
    )
    typer.echo(f"DutyLink console on http://{listen}/ (gateway {gateway}, times in {zone})")
    web.run_app(create_app(settings), host=host, port=port, print=None)


def register(app: typer.Typer) -> None:
    app.command("console")(console)
