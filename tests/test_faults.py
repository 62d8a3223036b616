"""The loopback fault proxy (gateway.testkit.faults): passes bytes, cuts like a partition (nothing
passes, nothing closes, new connections hang), heals with nothing lost, delays in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.testkit.faults import FaultProxy


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, within: float = 2.0
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), within)


async def test_bytes_pass_both_ways_and_a_close_reaches_the_other_side(echo_port: int) -> None:
    async with FaultProxy(("127.0.0.1", echo_port)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = bytes(range(256)) * 1000
        assert await exchange(reader, writer, payload) == payload
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the echo server closed
        writer.close()
        assert proxy.connections == 1


async def test_a_cut_holds_bytes_without_closing_and_a_heal_delivers_them(echo_port: int) -> None:
    async with FaultProxy(("127.0.0.1", echo_port)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await exchange(reader, writer, b"before") == b"before"
        proxy.cut()
        assert proxy.is_cut
        with pytest.raises(TimeoutError):
            await exchange(reader, writer, b"during", within=0.5)
        assert not reader.at_eof()  # a partition closes nothing
        # A new connection hangs: no refusal, no answer.
        late_reader, late_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises(TimeoutError):
            await exchange(late_reader, late_writer, b"late", within=0.5)
        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(6), 2) == b"during"
        assert await asyncio.wait_for(late_reader.readexactly(4), 2) == b"late"
        for w in (writer, late_writer):
            w.close()


async def test_a_delay_slows_each_exchange_and_keeps_the_byte_order(echo_port: int) -> None:
    async with FaultProxy(("127.0.0.1", echo_port)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.delay(0.1, jitter=0.05)
        started = time.monotonic()
        assert await exchange(reader, writer, b"ping") == b"ping"
        assert time.monotonic() - started >= 0.1  # at least 0.05 s each way
        for index in range(50):  # small writes, each held a different random time
            writer.write(b"%03d" % index)
        expected = b"".join(b"%03d" % index for index in range(50))
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        proxy.delay(0)
        writer.close()
        with pytest.raises(ValueError, match="jitter"):
            proxy.delay(0.1, jitter=0.2)


async def test_a_target_that_is_down_closes_the_connection(echo_port: int) -> None:
    async with FaultProxy(("127.0.0.1", 1)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()


async def test_stop_ends_open_connections(echo_port: int) -> None:
    proxy = FaultProxy(("127.0.0.1", echo_port))
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await exchange(reader, writer, b"x") == b"x"
    await proxy.stop()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
