"""An audit stream cut short at a frame boundary (entries and their checkpoints lost together)
is found at start-up by the latest signed checkpoint kept in the data directory."""

from __future__ import annotations

import asyncio
import stat
import sys
from pathlib import Path

import nats
import pytest

from gateway.audit.note import Checkpoint, open_note, sign_note, unverified_text
from gateway.core import subjects
from gateway.server import Gateway
from gateway.store.audit_files import KeptCheckpointError, load_or_create_signer
from gateway.store.nats_server import NatsServer
from gateway.testkit.inprocess import config_for_tests
from tests.test_store_witness import publish_some

KEPT = Path("audit") / "gw-1.checkpoint"


async def audit_last_sequence(url: str) -> int:
    client = await nats.connect(url)
    try:
        info = await client.jetstream().stream_info(subjects.AUDIT_STREAM)
        return int(info.state.last_seq or 0)
    finally:
        await client.close()


async def last_stored_checkpoint(url: str) -> str:
    client = await nats.connect(url)
    try:
        raw = await client.jetstream().get_last_msg(
            subjects.AUDIT_STREAM, subjects.audit_checkpoints("gw-1")
        )
        return (raw.data or b"").decode()
    finally:
        await client.close()


def cut_audit_block_before(server: NatsServer, sequence: int) -> None:
    """Truncate the (stopped) server's audit block at the record of stream `sequence`, a frame
    boundary, and drop its index, so that the server rebuilds a stream ending just before it.
    A record is: length (4, high bit = has headers), sequence (8), ... `length` bytes in all."""
    [block] = (server.data_dir / "jetstream").rglob(f"{subjects.AUDIT_STREAM}/msgs/1.blk")
    data = block.read_bytes()
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "little") & 0x7FFF_FFFF
        stored = int.from_bytes(data[offset + 4 : offset + 12], "little") & ~(0b11 << 62)
        if stored == sequence:
            block.write_bytes(data[:offset])
            (block.parent / "index.db").unlink()
            return
        offset += length
    raise AssertionError(f"no record of sequence {sequence} in {block}")


def kept_size(data_dir: Path) -> int:
    return Checkpoint.parse(unverified_text((data_dir / KEPT).read_text())).size


async def test_serve_refuses_an_audit_stream_cut_short_with_one_line_naming_sizes_and_file(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        await publish_some(url, tmp_path, 5)
        first_session_end = await audit_last_sequence(url)
        await publish_some(url, tmp_path, 5)
        covered = kept_size(tmp_path)
    finally:
        await server.stop()
    cut_audit_block_before(server, first_session_end + 1)  # the second session's records
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(serve.communicate(), 120)
    finally:
        if serve.returncode is None:  # it served: stop it (and its embedded server) cleanly
            serve.terminate()
            await serve.wait()
    text = stderr.decode()
    assert serve.returncode == 1, text
    assert "Traceback" not in text
    [line] = [line for line in text.splitlines() if line.startswith("error:")]
    assert line.startswith("error: cannot start: audit log gw-1 lost entries: the stream holds ")
    assert f"covers {covered}; refusing to start" in line
    assert str(tmp_path / KEPT) in line


async def test_the_kept_checkpoint_follows_the_stream_and_an_intact_restart_starts(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        await publish_some(url, tmp_path, 3)
        first = kept_size(tmp_path)
        assert (tmp_path / KEPT).read_text() == await last_stored_checkpoint(url)
        await server.stop()
        url = await server.start()
        await publish_some(url, tmp_path, 3)  # starts: the intact stream reaches the kept note
        assert kept_size(tmp_path) > first
        note = (tmp_path / KEPT).read_text()
        assert note == await last_stored_checkpoint(url)
        assert stat.S_IMODE((tmp_path / KEPT).stat().st_mode) == 0o600
        signer = load_or_create_signer(tmp_path / "audit" / "gw-1.key", "dutylink/audit/gw-1")
        open_note(note, [signer.verifier()])  # signed by the log's key
    finally:
        await server.stop()


async def start_refused(url: str, data_dir: Path) -> str:
    with pytest.raises(KeptCheckpointError) as refused:
        async with Gateway(config_for_tests(nats={"data_dir": str(data_dir)}), nats_url=url):
            pass
    message = str(refused.value)
    assert "\n" not in message
    assert str(data_dir / KEPT) in message
    return message


async def test_a_kept_checkpoint_not_signed_by_the_logs_key_is_refused_naming_the_file(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        await publish_some(url, tmp_path, 2)
        kept = Checkpoint.parse(unverified_text((tmp_path / KEPT).read_text()))
        stranger = load_or_create_signer(tmp_path / "stranger.key", "dutylink/audit/gw-1")
        forged = Checkpoint(kept.origin, kept.size + 1000, kept.root_hash)
        (tmp_path / KEPT).write_text(sign_note(forged.to_text(), [stranger]))
        message = await start_refused(url, tmp_path)
        assert "does not verify with the log's key" in message
    finally:
        await server.stop()


async def test_a_kept_checkpoint_whose_root_the_stream_does_not_match_is_refused(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        await publish_some(url, tmp_path, 2)
        kept = Checkpoint.parse(unverified_text((tmp_path / KEPT).read_text()))
        signer = load_or_create_signer(tmp_path / "audit" / "gw-1.key", "dutylink/audit/gw-1")
        other = Checkpoint(kept.origin, kept.size, bytes(32))  # same size, another history
        (tmp_path / KEPT).write_text(sign_note(other.to_text(), [signer]))
        message = await start_refused(url, tmp_path)
        assert f"first {kept.size} do not match the root" in message
    finally:
        await server.stop()
