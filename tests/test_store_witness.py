"""The audit log as the event store's witness: a damaged events stream is found at start-up and
by `dutylink audit verify --store`, named by its first missing event; duplicates are recorded."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import grpc
import nats
import pytest
from typer.testing import CliRunner

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2, gateway_pb2
from gateway.audit.entries import decode_frames
from gateway.cli.audit import audit_app
from gateway.core import subjects
from gateway.core.ports import StoreDamagedError
from gateway.server import Gateway
from gateway.store.nats_server import NatsServer
from gateway.store.streams import stored_messages
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.cli_support import LoopThread
from tests.conftest import TOKENS
from tests.factories import incident_event

runner = CliRunner()


async def publish_some(url: str, data_dir: Path, count: int) -> list[gateway_pb2.Receipt]:
    config = config_for_tests(nats={"data_dir": str(data_dir)})
    async with (
        gateway_for_tests(url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        return [await fire.publish(incident_event()) for _ in range(count)]


def damage_events_block(server: NatsServer, how: str, victim: str = "") -> None:
    """Damage the (stopped) server's events stream on disk, as a failing disk would: cut the
    block in half, or flip a bit in the stored bytes of event `victim`. (A bit flipped at a
    random place can also hit a record header, and then nats-server 2.x may hang restoring
    the stream: nothing a gateway can check.)"""
    [block] = (server.data_dir / "jetstream").rglob(f"{subjects.EVENTS_STREAM}/msgs/1.blk")
    data = block.read_bytes()
    if how == "truncate":
        block.write_bytes(data[: len(data) // 2])
        # Without its index the server rebuilds the stream from the block: it then ends below
        # the sequences receipts already named, and would hand them out again.
        (block.parent / "index.db").unlink()
    else:
        flipped = bytearray(data)
        flipped[data.rindex(victim.encode())] ^= 0x01  # in the payload (after the headers)
        block.write_bytes(bytes(flipped))


async def first_missing(url: str, receipts: list[gateway_pb2.Receipt]) -> str:
    client = await nats.connect(url)
    js = client.jetstream()
    try:
        for receipt in receipts:
            try:
                raw = await js.get_msg(subjects.EVENTS_STREAM, seq=receipt.stream_sequence)
            except nats.js.errors.NotFoundError:
                return receipt.event_id
            if receipt.event_id.encode() not in (raw.data or b""):
                return receipt.event_id
    finally:
        await client.close()
    raise AssertionError("the damage lost nothing")


@pytest.mark.parametrize("how", ["truncate", "flip"])
async def test_a_gateway_refuses_to_serve_a_damaged_event_stream_naming_the_first_missing_event(
    tmp_path: Path, how: str
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        # Two sessions: the second start's check leaves a mark at sequence 20, so the check
        # after the damage is a bounded one, which must still see the older events' loss.
        receipts = await publish_some(url, tmp_path, 20) + await publish_some(url, tmp_path, 20)
        await server.stop()
        damage_events_block(server, how, victim=receipts[25].event_id)
        url = await server.start()
        missing = await first_missing(url, receipts)
        config = config_for_tests(nats={"data_dir": str(tmp_path)})
        with pytest.raises(StoreDamagedError) as refused:
            async with Gateway(config, nats_url=url):
                pass
        message = str(refused.value)
        assert "\n" not in message
        assert re.search(rf"event {missing} \(acknowledged at stream sequence \d+", message)
        assert re.search(r"is missing from stream DUTYLINK_EVENTS|was replaced", message)
        assert "refusing to serve" in message
        if how == "flip":
            assert missing == receipts[25].event_id
    finally:
        await server.stop()


async def test_read_only_mode_serves_but_refuses_publishes_naming_the_first_missing_event(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        receipts = await publish_some(url, tmp_path, 30)
        await server.stop()
        damage_events_block(server, "truncate")
        url = await server.start()
        missing = await first_missing(url, receipts)
        config = config_for_tests(
            nats={"data_dir": str(tmp_path)}, audit={"store_mismatch": "read-only"}
        )
        async with (
            gateway_for_tests(url, config) as gateway,
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await fire.publish(incident_event())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"event {missing} " in (refused.value.details() or "")
        assert "read-only" in (refused.value.details() or "")
    finally:
        await server.stop()


async def test_an_intact_stream_restarts_and_the_next_check_starts_where_the_last_ended(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        await publish_some(url, tmp_path, 5)
        await server.stop()
        url = await server.start()
        receipts = await publish_some(url, tmp_path, 3)
        assert receipts[0].stream_sequence == 6
        client = await nats.connect(url)
        js = client.jetstream()
        mark = await js.get_last_msg(subjects.AUDIT_STREAM, subjects.audit_witnessed("gw-1"))
        frames = [
            raw.data or b""
            async for raw in stored_messages(
                js, subjects.AUDIT_STREAM, subjects.audit_entries("gw-1")
            )
        ]
        await client.close()
        assert b'"events_last_sequence": 5' in (mark.data or b""), "checked up to 5 at start"
        entries = [audit_pb2.AuditEntry.FromString(d) for d in decode_frames(frames).entries]
        stored = [e for e in entries if e.outcome == audit_pb2.AUDIT_OUTCOME_STORED]
        assert [e.stream_sequence for e in stored] == list(range(1, 9))
    finally:
        await server.stop()


async def test_a_duplicate_retry_is_recorded_as_a_duplicate_of_the_original_sequence(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    try:
        config = config_for_tests(nats={"data_dir": str(tmp_path)})
        event = incident_event()
        async with (
            gateway_for_tests(url, config) as gateway,
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        ):
            await fire.publish(incident_event())
            first = await fire.publish(event)
            again = await fire.publish(event)
        assert again.duplicate and again.stream_sequence == first.stream_sequence == 2
        client = await nats.connect(url)
        frames = [
            raw.data or b""
            async for raw in stored_messages(
                client.jetstream(), subjects.AUDIT_STREAM, subjects.audit_entries("gw-1")
            )
        ]
        await client.close()
        entries = [audit_pb2.AuditEntry.FromString(d) for d in decode_frames(frames).entries]
        about = [(e.outcome, e.stream_sequence) for e in entries if e.event_id == event.id]
        assert sorted(about) == sorted(
            [
                (audit_pb2.AUDIT_OUTCOME_ACCEPTED, 0),
                (audit_pb2.AUDIT_OUTCOME_STORED, 2),
                (audit_pb2.AUDIT_OUTCOME_ACCEPTED, 0),
                (audit_pb2.AUDIT_OUTCOME_DUPLICATE, 2),
            ]
        )
    finally:
        await server.stop()


def test_verify_store_names_the_first_missing_event_of_a_damaged_stream(tmp_path: Path) -> None:
    loop = LoopThread()
    server = NatsServer(tmp_path / "nats")
    try:
        url = loop.run(server.start())
        receipts = loop.run(publish_some(url, tmp_path, 30))
        args = ["verify", "--store", "--gateway-id", "gw-1", "--data-dir", str(tmp_path)]
        intact = runner.invoke(audit_app, args)
        assert intact.exit_code == 0, intact.stderr
        assert "30 acknowledged events present at their sequences" in intact.stdout

        loop.run(server.stop())
        damage_events_block(server, "truncate")
        url = loop.run(server.start())
        missing = loop.run(first_missing(url, receipts))
        damaged = runner.invoke(audit_app, args)
        assert damaged.exit_code == 1
        [line] = damaged.stderr.splitlines()
        assert line.startswith("error: the event store lost acknowledged events: ")
        assert f"event {missing} (acknowledged at stream sequence" in line
        assert "below the 30 the audit log recorded" in line, "sequence reuse is named too"
        assert "Traceback" not in damaged.output
    finally:
        loop.run(server.stop())
        loop.close()


def damage_audit_block(server: NatsServer, how: str) -> None:
    [block] = (server.data_dir / "jetstream").rglob(f"{subjects.AUDIT_STREAM}/msgs/1.blk")
    data = block.read_bytes()
    if how == "truncate":
        block.write_bytes(data[: len(data) // 2])
        (block.parent / "index.db").unlink()
    else:
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        block.write_bytes(bytes(flipped))


# A block cut short at a frame boundary leaves a shorter log that is consistent in itself
# (its checkpoints went with it): only an auditor holding a later checkpoint can tell.
@pytest.mark.parametrize("how", ["flip"])
async def test_a_damaged_audit_block_ends_serve_and_verify_in_one_line_not_a_traceback(
    tmp_path: Path, how: str
) -> None:
    server = NatsServer(tmp_path / "nats")
    url = await server.start()
    await publish_some(url, tmp_path, 30)
    await server.stop()
    damage_audit_block(server, how)
    # The store was written in clear by the test's server: served as it is (with encryption
    # on, the embedded server would first encrypt the damaged block, dropping what it cannot
    # read; the kept checkpoint then refuses the start for lost entries instead).
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(tmp_path),
        env={**os.environ, "DUTYLINK_NATS_STORE_ENCRYPTION": "false"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(serve.communicate(), 60)
    text = stderr.decode()
    assert serve.returncode == 1, text
    assert "Traceback" not in text
    [line] = [line for line in text.splitlines() if line.startswith("error:")]
    assert line.startswith("error: cannot start: audit log of gw-1 is damaged (frame ")


@pytest.mark.parametrize("how", ["flip"])
def test_verify_of_a_damaged_audit_block_names_the_damage_in_lines_not_a_traceback(
    tmp_path: Path, how: str
) -> None:
    loop = LoopThread()
    server = NatsServer(tmp_path / "nats")
    try:
        url = loop.run(server.start())
        loop.run(publish_some(url, tmp_path, 30))
        loop.run(server.stop())
        damage_audit_block(server, how)
        loop.run(server.start())
        args = ["verify", "--store", "--gateway-id", "gw-1", "--data-dir", str(tmp_path)]
        result = runner.invoke(audit_app, args)
        assert result.exit_code == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.stderr.splitlines()[-1].startswith("error: ")
    finally:
        loop.run(server.stop())
        loop.close()
