"""`dutylink audit`: read and check the gateways' signed audit logs as an auditor would.

Long because it is four auditor commands (verify, export, prove, tail) that share one way to reach
a log (a running NATS, or a nats-server on a private copy of a stopped gateway's store) and one way
to report problems and exit codes; the checking itself is gateway.audit's.

- `verify` checks every entry and checkpoint of one replica's log, from JetStream or from an
  exported bundle, with the gateway's public key alone (see gateway.audit.verify). It prints one
  summary line and exits 0 when everything verifies; otherwise every problem on stderr,
  earliest first, and exit 1. A bundle verifies only if every entry in it is covered by a
  checkpoint the trusted key signed (`--allow-unsigned-tail` accepts newer entries after the
  last one, and counts them); each problem names the bundle file (and line and entry).
- `export` writes an evidence bundle (gateway.audit.bundle), the whole log or one incident's,
  as far as the latest signed checkpoint goes, and checks the files it wrote.
- `prove EVENT_ID` prints an event's entries, their inclusion proofs and the checkpoint.
- `tail` prints recent entries one readable line each, and follows the log with --follow.
Usage errors (no NATS to talk to, no or bad key, no log for that gateway id) exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import nats
import nats.errors
import typer
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from dutylink.v1 import audit_pb2
from gateway.audit.bundle import (
    FULL,
    MANIFEST,
    Bundle,
    BundleError,
    Proof,
    check_bundle,
    key_file,
    manifest_gateway_id,
)
from gateway.audit.entries import describe, frame_entries
from gateway.audit.merkle import ProofError, leaf_hash, tree_for, verify_inclusion
from gateway.audit.note import NoteError, Verifier, open_note
from gateway.audit.verify import Report, verify_log
from gateway.audit.witness import Ledger, StreamView, Verdict, compare, publish_facts
from gateway.core import subjects
from gateway.core.crypto import HashSuite
from gateway.store import nats_auth
from gateway.store.audit_files import read_files, write_bundle
from gateway.store.audit_reader import (
    READ_FAILURES,
    AuditReader,
    DamagedLogError,
    LogNotFoundError,
    StoredCheckpoint,
    read_log,
)
from gateway.store.nats_server import (
    PID_FILE,
    URL_FILE,
    NatsServer,
    NatsServerError,
    embedded_dir,
    running_url,
)
from gateway.store.witness import event_digests, events_state
from gateway.telemetry import logs

audit_app = typer.Typer(help="Verify the signed audit logs.", no_args_is_help=True)

DEFAULT_DATA_DIR = Path(".dutylink")
T = TypeVar("T")
_PRIVATE = "PRIVATE+KEY+"


@audit_app.callback()
def _group() -> None:
    # Standard output is the auditor's report (and bundles are piped): only errors are logged,
    # e.g. by the nats-server a stopped gateway's store is read with.
    logs.configure("error", libraries_to="stderr")


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
        servers, credentials = nats_auth.split_servers(url)
        return await asyncio.wait_for(
            nats.connect(
                servers,
                **credentials,
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
        _fail(
            2,
            f"error: cannot connect to NATS at {nats_auth.redact_url(url)}: "
            f"{error or type(error).__name__}",
        )


async def _witness(
    client: NatsClient, entries: list[bytes], hashing: HashSuite
) -> tuple[Verdict, int]:
    """The whole log's publish facts against the whole events stream (`--store`)."""
    js = client.jetstream()
    state = await events_state(js)
    ledger = Ledger().add(publish_facts(enumerate(entries)))
    digests = await event_digests(
        js, state, start=1, hashing=hashing, wanted=ledger.wanted(), gets_only=True
    )
    retained_since = time.time() - state.max_age if state.max_age > 0 else 0.0
    view = StreamView(state.first_sequence, state.last_sequence, digests, 1, retained_since)
    return compare(ledger, view), state.last_sequence


async def _verify(
    url: str, gateway_id: str, verifier: Verifier, *, store: bool = False
) -> tuple[Report, str, str]:
    """The log's report; with `store`, also a line on the event store, and its problem."""
    client = await _connect(url)
    try:
        js = client.jetstream()
        try:
            stored = await read_log(js, gateway_id)
        except LogNotFoundError as error:
            _fail(
                2,
                f"error: {nats_auth.redact_url(url)}: {error}: no gateway has written an audit log there",
            )
        if not stored.entries and not stored.checkpoints and not stored.frame_problems:
            known = ", ".join(await AuditReader(js).gateways()) or "none"
            _fail(
                2,
                f"error: {nats_auth.redact_url(url)}: no audit log for gateway {gateway_id!r} in stream "
                f"{subjects.AUDIT_STREAM} (gateways with a log: {known})",
            )
        report = verify_log(
            stored.entries,
            stored.checkpoints,
            verifier,
            gateway_id,
            frame_problems=stored.frame_problems,
        )
        if not store:
            return report, "", ""
        verdict, last = await _witness(client, stored.entries, verifier.profile.hash)
        if not verdict.ok:
            summary = verdict.summary(subjects.EVENTS_STREAM, last)
            return report, "", f"error: the event store lost acknowledged events: {summary}"
        line = (
            f"event store {subjects.EVENTS_STREAM}: "
            f"{_plural(verdict.checked, 'acknowledged event')} present at their sequences"
        )
        if verdict.unknown:
            line += (
                f"; {_plural(len(verdict.unknown), 'accepted event')} without a recorded store "
                "answer and not stored (in flight, or the gateway stopped abruptly)"
            )
        return report, line, ""
    except (nats.errors.Error, OSError, TimeoutError) as error:
        _fail(
            1,
            f"error: {nats_auth.redact_url(url)}: reading the audit log failed: {error or type(error).__name__}",
        )
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


# Options every command shares.
GatewayOption = Annotated[
    str,
    typer.Option("--gateway-id", help="The gateway replica whose log to read, e.g. gw-1."),
]
NatsUrlOption = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="NATS server or cluster holding the log (default: the embedded server of "
        "--data-dir; a copy of its store when that gateway is stopped).",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="The gateway's data directory: its embedded NATS, and audit/<gateway id>.pub.",
        file_okay=False,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="The gateway's verifier key (name+id+base64), or a file holding it "
        "(default: <data dir>/audit/<gateway id>.pub).",
        show_default=False,
    ),
]


@contextlib.contextmanager
def _nats(
    nats_url: str | None,
    data_dir: Path,
    gateway_id: str,
    role: nats_auth.Role = nats_auth.AUDITOR,
) -> Iterator[str]:
    """The NATS to read for the block: --nats-url as given; else the embedded server of
    `data_dir` as `role`: the auditor user (reads the audit stream, nothing else), or for
    `verify --store` the witness (also reads the stored events, which hold PII: see
    gateway.store.nats_auth); and when that gateway is stopped, a copy of its store served for the
    block alone, so reading it neither needs the gateway nor changes a byte of it."""
    if nats_url:
        yield nats_url
        return
    store = embedded_dir(data_dir)
    url = running_url(data_dir)
    if url:
        try:
            yield nats_auth.embedded_url_as(url, store, role)
        except nats_auth.CredentialsError as error:
            _fail(2, f"error: {error}")
        return
    if not (store / "jetstream").is_dir():
        _fail(
            2,
            f"error: no NATS to talk to: give --nats-url, or a --data-dir holding a gateway's "
            f"store ({store} has none)",
        )
    # An encrypted store opens with its key, where the gateway keeps it by default.
    key_file = data_dir / "keys" / "jetstream.key"
    store_key = key_file.read_text(encoding="utf-8").strip() if key_file.is_file() else None
    with _stopped_store(store, gateway_id, store_key) as credentials_and_url:
        credentials, copy_url = credentials_and_url
        yield credentials.url(copy_url, role)


@contextlib.contextmanager
def _stopped_store(
    store: Path, gateway_id: str, store_key: str | None
) -> Iterator[tuple[nats_auth.Credentials, str]]:
    """A nats-server on a private copy of a stopped gateway's store (its credentials included),
    on its own thread's event loop while the command runs its own; removed afterwards. A copy,
    because a nats-server writes to the store it opens (indexes, meta) and an auditor's read
    must leave the evidence as it was."""
    with tempfile.TemporaryDirectory(prefix="dutylink-audit-") as scratch:
        copy = Path(scratch) / "nats"
        shutil.copytree(
            store, copy, ignore=shutil.ignore_patterns(URL_FILE, PID_FILE), symlinks=True
        )
        credentials = nats_auth.ensure_credentials(copy)
        server = NatsServer(copy, users=credentials.server_users(gateway_id), store_key=store_key)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        def run(coroutine: Coroutine[Any, Any, T]) -> T:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

        try:
            try:
                url = run(server.start())
            except NatsServerError as error:
                _fail(1, f"error: cannot read the stopped store {store}: {error}")
            typer.echo(f"note: the gateway of {store.parent} is stopped: reading a copy of its store", err=True)  # fmt: skip
            yield credentials, url
        finally:
            with contextlib.suppress(Exception):
                run(server.stop())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()


def _report(report: Report) -> None:
    for note in report.notes:  # key rotations, checkpoints of a former key left unchecked
        typer.echo(f"note: {note}")
    if report.ok:
        typer.echo(_summary(report))
        return
    for problem in report.problems:
        typer.echo(problem, err=True)
    _fail(1, f"error: {_summary(report)}")


@audit_app.command()
def verify(
    gateway_id: Annotated[
        str | None,
        typer.Option(
            "--gateway-id",
            help="The gateway replica whose log to check, e.g. gw-1 (not with --bundle).",
            show_default=False,
        ),
    ] = None,
    nats_url: NatsUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    key: KeyOption = None,
    store: Annotated[
        bool,
        typer.Option(
            "--store",
            help="Also check that the events stream holds every event the log records as "
            "stored, at its sequence with the same digest (reads the whole stream).",
        ),
    ] = False,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Check an evidence bundle written by `audit export` instead of a live log "
            "(default key: the bundle's own keys/<id>.pub).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    allow_unsigned_tail: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned-tail",
            help="With --bundle: accept entries after the last signed checkpoint (they are "
            "reported, and prove nothing).",
        ),
    ] = False,
) -> None:
    """Check every entry and signed checkpoint of one gateway's audit log, live or exported."""
    if bundle is not None:
        _verify_bundle(bundle, key, allow_unsigned_tail)
        return
    if gateway_id is None:
        _fail(2, "error: give --gateway-id (or --bundle)")
    verifier = _load_key(key, data_dir / "audit" / f"{gateway_id}.pub")
    role = nats_auth.WITNESS if store else nats_auth.AUDITOR
    with _nats(nats_url, data_dir, gateway_id, role) as url:
        report, store_line, store_problem = asyncio.run(
            _verify(url, gateway_id, verifier, store=store)
        )
    if store_problem:
        for problem in report.problems:
            typer.echo(problem, err=True)
        _fail(1, store_problem)
    _report(report)
    if store_line:
        typer.echo(store_line)


def _verify_bundle(directory: Path, key: str | None, allow_unsigned_tail: bool) -> None:
    try:
        files = read_files(directory)
    except BundleError as error:
        _fail(2, f"error: {error}")
    if key is None:
        gateway_id = manifest_gateway_id(files)
        if gateway_id is None:
            _fail(1, f"error: {directory / MANIFEST}: missing or names no gateway id (give --key)")
        verifier = _load_key(None, directory / key_file(gateway_id))
        typer.echo(
            f"note: using the key shipped in the bundle ({verifier.name}+"
            f"{verifier.key_id.hex()}); compare it with the one you hold",
            err=True,
        )
    else:
        verifier = _load_key(key, directory)  # `key` is given: no default needed
    _report(check_bundle(files, verifier, allow_unsigned_tail=allow_unsigned_tail))


async def _export(
    url: str, gateway_id: str, incident: str | None, key: Verifier
) -> tuple[Bundle, int]:
    """The bundle, and how many newer entries it leaves out because no checkpoint signs them."""
    client = await _connect(url)
    try:
        reader = AuditReader(client.jetstream(), tree_for(key.profile))
        # Checkpoints first: entries stored meanwhile are beyond them, never the other way.
        stored = [c async for c in reader.checkpoints(gateway_id) if not isinstance(c, NoteError)]
        hashes = await reader.refresh(gateway_id)
        if hashes.size == 0:
            known = ", ".join(await reader.gateways()) or "none"
            _fail(
                2,
                f"error: {nats_auth.redact_url(url)}: no audit log for gateway {gateway_id!r} (logs: {known})",
            )
        if not stored:
            _fail(1, f"error: audit log {gateway_id} has no signed checkpoint yet: nothing to export")  # fmt: skip
        bundle = Bundle(gateway_id, key.name, FULL if incident is None else f"incident {incident}")
        bundle.key = key.key_string()
        latest = stored[-1]
        # Only what a checkpoint signs is evidence: newer entries wait for the next export.
        size = latest.checkpoint.size
        if incident is None:
            bundle.entries = [item async for item in reader.entries(gateway_id, 0, size)]
            bundle.checkpoints = [c.note for c in stored]
            return bundle, hashes.size - size
        async for index, data in reader.entries(gateway_id, 0, size):
            if incident in audit_pb2.AuditEntry.FromString(data).incident_ids:
                bundle.entries.append((index, data))
                bundle.proofs.append(Proof(index, size, tuple(hashes.inclusion_proof(index, size))))
        bundle.checkpoints = [latest.note]
        return bundle, hashes.size - size
    except (DamagedLogError, *READ_FAILURES) as error:
        _fail(
            1,
            f"error: {nats_auth.redact_url(url)}: reading the audit log failed: {error or type(error).__name__}",
        )
    finally:
        await client.close()


@audit_app.command()
def export(
    gateway_id: GatewayOption,
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write the bundle into (new or empty).")
    ],
    incident: Annotated[
        str | None,
        typer.Option(
            "--incident",
            help="Only the entries of this incident, each with its inclusion proof against "
            "the latest signed checkpoint.",
            show_default=False,
        ),
    ] = None,
    nats_url: NatsUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    key: KeyOption = None,
) -> None:
    """Write an evidence bundle: entries (as far as a checkpoint signs them), signed
    checkpoints, proofs, key and a README."""
    verifier = _load_key(key, data_dir / "audit" / f"{gateway_id}.pub")
    with _nats(nats_url, data_dir, gateway_id) as url:
        bundle, unsigned = asyncio.run(_export(url, gateway_id, incident, verifier))
    if incident is not None and not bundle.entries:
        _fail(1, f"error: audit log {gateway_id} has no entries of incident {incident!r}")
    try:
        write_bundle(out, bundle)
        written = read_files(out)
    except (BundleError, OSError) as error:
        _fail(2, f"error: {error}")
    report = check_bundle(written, verifier)  # never hand over a bundle that does not verify
    if not report.ok:
        for problem in report.problems:
            typer.echo(problem, err=True)
        _fail(1, f"error: the exported bundle does not verify: {_summary(report)}")
    typer.echo(
        f"exported {_plural(len(bundle.entries), 'entry', 'entries')} and "
        f"{_plural(len(bundle.checkpoints), 'checkpoint')} of {gateway_id} ({bundle.scope}) to {out}"
        + _left_out(unsigned)
    )


def _left_out(unsigned: int) -> str:
    if unsigned <= 0:
        return ""
    newer = _plural(unsigned, "newer entry", "newer entries")
    return f"; left out {newer} no checkpoint signs yet (export again after the next one)"


async def _prove(
    url: str, gateway_id: str, event_id: str, key: Verifier
) -> tuple[StoredCheckpoint, list[tuple[int, bytes, list[bytes]]]]:
    client = await _connect(url)
    try:
        reader = AuditReader(client.jetstream(), tree_for(key.profile))
        latest = await reader.latest_checkpoint(gateway_id)
        if latest is None:
            _fail(1, f"error: audit log {gateway_id} has no signed checkpoint yet")
        hashes = await reader.refresh(gateway_id)
        size = latest.checkpoint.size
        found = []
        async for index, data in reader.entries(gateway_id, 0, size):
            if audit_pb2.AuditEntry.FromString(data).event_id == event_id:
                proof = hashes.inclusion_proof(index, size)
                # Checked here as an auditor would, from the bytes and the signed root alone.
                tree = tree_for(key.profile)
                verify_inclusion(
                    index, size, leaf_hash(data, tree), proof, latest.checkpoint.root_hash, tree
                )
                found.append((index, data, proof))
        open_note(latest.note, [key])
        return latest, found
    except (DamagedLogError, ProofError, NoteError, *READ_FAILURES) as error:
        _fail(1, f"error: {nats_auth.redact_url(url)}: {error or type(error).__name__}")
    finally:
        await client.close()


@audit_app.command()
def prove(
    event_id: Annotated[str, typer.Argument(help="The event whose entries to prove.")],
    gateway_id: GatewayOption,
    nats_url: NatsUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    key: KeyOption = None,
) -> None:
    """Show an event's entries with their inclusion proofs and the signed checkpoint they are in."""
    verifier = _load_key(key, data_dir / "audit" / f"{gateway_id}.pub")
    with _nats(nats_url, data_dir, gateway_id) as url:
        latest, found = asyncio.run(_prove(url, gateway_id, event_id, verifier))
    if not found:
        _fail(
            1,
            f"error: no entry of event {event_id!r} in the first "
            f"{_count(latest.checkpoint.size)} entries of {gateway_id} (the signed part)",
        )
    for index, data, proof in found:
        typer.echo(f"entry {index}: {describe(audit_pb2.AuditEntry.FromString(data))}")
        typer.echo(f"  leaf hash {leaf_hash(data, tree_for(verifier.profile)).hex()}")
        for number, node in enumerate(proof):
            typer.echo(f"  proof[{number}] {node.hex()}")
    typer.echo(f"all verified against checkpoint size {_count(latest.checkpoint.size)}:")
    typer.echo(latest.note, nl=False)


async def _tail(url: str, gateway_id: str, count: int, follow: bool) -> None:
    client = await _connect(url)
    try:
        reader = AuditReader(client.jetstream())
        size = (await reader.refresh(gateway_id)).size
        async for index, data in reader.entries(gateway_id, max(0, size - count), size):
            typer.echo(f"{index:>8} {describe(audit_pb2.AuditEntry.FromString(data))}")
        if not follow:
            return
        arrived: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_frame(message: Msg) -> None:
            await arrived.put(message.data)

        await client.subscribe(subjects.audit_entries(gateway_id), cb=on_frame)
        while True:
            first, entries = frame_entries(await arrived.get())
            for offset, data in enumerate(entries):
                index = first + offset
                if index >= size:
                    typer.echo(f"{index:>8} {describe(audit_pb2.AuditEntry.FromString(data))}")
    except (DamagedLogError, *READ_FAILURES) as error:
        _fail(1, f"error: {nats_auth.redact_url(url)}: {error or type(error).__name__}")
    finally:
        await client.close()


@audit_app.command()
def tail(
    gateway_id: GatewayOption,
    count: Annotated[int, typer.Option("--count", "-n", help="How many recent entries.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries as they come.")
    ] = False,
    nats_url: NatsUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Print the latest entries of a log, one readable line each (and follow it)."""
    with contextlib.suppress(KeyboardInterrupt), _nats(nats_url, data_dir, gateway_id) as url:
        asyncio.run(_tail(url, gateway_id, count, follow))  # Ctrl-C ends --follow quietly
