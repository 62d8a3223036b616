"""`dutylink audit`: check a gateway's signed audit log as an auditor would.

`verify` reads every entry and checkpoint of one gateway replica from JetStream and checks them
with the gateway's public key alone (see gateway.audit.verify). It prints one summary line and
exits 0 when everything verifies; otherwise every problem on stderr, earliest first, and exit 1.
Usage errors (no NATS to talk to, no or bad key, no log for that gateway id) exit 2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, NoReturn

import nats
import nats.errors
import typer
from nats.aio.client import Client as NatsClient

from gateway import subjects
from gateway.audit.note import NoteError, Verifier
from gateway.audit.reader import AuditReader
from gateway.audit.verify import LogNotFoundError, Report, read_log, verify_log
from gateway.nats_server import running_url

audit_app = typer.Typer(help="Verify the signed audit logs.", no_args_is_help=True)

DEFAULT_DATA_DIR = Path(".dutylink")
_PRIVATE = "PRIVATE+KEY+"


@audit_app.callback()
def _group() -> None:
    # A callback keeps `verify` a subcommand while it is the only one (Typer would otherwise
    # make a one-command app that command itself).
    pass


def _fail(status: int, message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(status)


def _count(value: int) -> str:
    """4100 as "4 100" (digits grouped by spaces)."""
    return f"{value:,}".replace(",", " ")


def _plural(count: int, noun: str, plural: str = "") -> str:
    return f"{_count(count)} {noun if count == 1 else plural or noun + 's'}"


def _load_key(key: str | None, default: Path) -> Verifier:
    """--key as a verifier key string or a file holding one; without it, the `.pub` the
    gateway wrote beside its signing key."""
    if key is None:
        if not default.is_file():
            _fail(2, f"error: no verifier key: {default} does not exist (give --key)")
        path: Path | None = default
    else:
        path = Path(key) if Path(key).is_file() else None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            _fail(2, f"error: {path}: cannot read: {error}")
        where = str(path)
    else:
        assert key is not None
        text, where = key.strip(), "--key"
    if text.startswith(_PRIVATE):
        _fail(2, f"error: {where}: that is the gateway's private signing key; give its .pub key")
    try:
        return Verifier.from_key_string(text)
    except NoteError as error:
        hint = "" if path is not None else " (nor an existing file)"
        _fail(2, f"error: {where}: not a verifier key{hint}: {error}")


async def _quiet(error: Exception) -> None:
    """nats-py's default error callback prints a traceback; failures are reported below."""


async def _connect(url: str) -> NatsClient:
    try:
        # nats-py retries an initial connect `max_reconnect_attempts` times, whatever
        # `allow_reconnect` says: one retry, and a bound on the whole.
        return await asyncio.wait_for(
            nats.connect(
                url,
                name="dutylink-audit-verify",
                connect_timeout=5,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=_quiet,
            ),
            timeout=15,
        )
    except (nats.errors.Error, OSError, TimeoutError) as error:
        _fail(2, f"error: cannot connect to NATS at {url}: {error or type(error).__name__}")


async def _verify(url: str, gateway_id: str, verifier: Verifier) -> Report:
    client = await _connect(url)
    try:
        js = client.jetstream()
        try:
            stored = await read_log(js, gateway_id)
        except LogNotFoundError as error:
            _fail(2, f"error: {url}: {error}: no gateway has written an audit log there")
        if not stored.entries and not stored.checkpoints and not stored.frame_problems:
            known = ", ".join(await AuditReader(js).gateways()) or "none"
            _fail(
                2,
                f"error: {url}: no audit log for gateway {gateway_id!r} in stream "
                f"{subjects.AUDIT_STREAM} (gateways with a log: {known})",
            )
        return verify_log(
            stored.entries,
            stored.checkpoints,
            verifier,
            gateway_id,
            frame_problems=stored.frame_problems,
        )
    except (nats.errors.Error, OSError, TimeoutError) as error:
        _fail(1, f"error: {url}: reading the audit log failed: {error or type(error).__name__}")
    finally:
        await client.close()


def _summary(report: Report) -> str:
    head = (
        f"audit log {report.gateway_id}: {_plural(report.entries, 'entry', 'entries')}, "
        f"{_plural(report.checkpoints, 'checkpoint')}"
    )
    if not report.ok:
        return f"{head}: {_plural(len(report.problems), 'problem')} (listed earliest first)"
    if report.latest_size is None or report.latest_root is None:
        return f"{head}: entries consistent, but no checkpoint yet: nothing is signed"
    line = (
        f"{head}, all verified; latest checkpoint size {_count(report.latest_size)} "
        f"root {report.latest_root.hex()}"
    )
    if report.unsigned:
        line += f"; {_plural(report.unsigned, 'newer entry', 'newer entries')} not yet signed"
    return line


@audit_app.command()
def verify(
    gateway_id: Annotated[
        str,
        typer.Option("--gateway-id", help="The gateway replica whose log to check, e.g. gw-1."),
    ],
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            help="NATS server or cluster holding the log (default: the embedded server of "
            "--data-dir, which must be running).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="The gateway's data directory: its embedded NATS, and audit/<gateway id>.pub.",
            file_okay=False,
        ),
    ] = DEFAULT_DATA_DIR,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="The gateway's verifier key (name+id+base64), or a file holding it "
            "(default: <data dir>/audit/<gateway id>.pub).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check every entry and signed checkpoint of one gateway's audit log."""
    verifier = _load_key(key, data_dir / "audit" / f"{gateway_id}.pub")
    url = nats_url or running_url(data_dir)
    if not url:
        _fail(
            2,
            f"error: no NATS to talk to: give --nats-url, or start the gateway with data "
            f"directory {data_dir}",
        )
    report = asyncio.run(_verify(url, gateway_id, verifier))
    if report.ok:
        typer.echo(_summary(report))
        return
    for problem in report.problems:
        typer.echo(problem, err=True)
    _fail(1, f"error: {_summary(report)}")
