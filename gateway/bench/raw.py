"""The raw baselines: nats-py JetStream publishing without the gateway, a grpc.aio echo, and a
raw relay (a grpc.aio server that awaits one JetStream publish per call: the least a durable
relay can do); and the `sync` section (the cost of `sync_interval: always`)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from dutylink.adapters.sdk.client import CHANNEL_OPTIONS
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.bench.figures import Figure, Settings, make_figure
from gateway.bench.harness import (
    IN_FLIGHT,
    PAYLOAD,
    PUBLISH_METHOD,
    PUBLISHER,
    Measured,
    Series,
    interleave,
    make_events,
    measured,
    nats_at,
    rate_in_flight,
)
from gateway.config import load, sample_tokens
from gateway.core import envelope, subjects
from gateway.server import SERVER_OPTIONS
from gateway.store.nats_auth import split_servers


@dataclass(frozen=True)
class RawStream:
    client: NatsClient
    js: JetStreamContext
    name: str
    prefix: str

    def messages(
        self, events: Sequence[event_pb2.Event]
    ) -> list[tuple[str, bytes, dict[str, str]]]:
        """(subject, data, headers) as the gateway would store each event from PUBLISHER."""
        received = datetime.now(UTC)
        messages = []
        for event in events:
            stamped = envelope.stamped(event, PUBLISHER, received)
            subject = subjects.event_subject(
                stamped.plane, stamped.type, stamped.jurisdiction.division_code
            )
            headers = {**envelope.cloudevents_headers(stamped), "Nats-Expected-Stream": self.name}
            messages.append((f"{self.prefix}.{subject}", stamped.SerializeToString(), headers))
        return messages


@contextlib.asynccontextmanager
async def raw_stream(url: str) -> AsyncIterator[RawStream]:
    """A uniquely named stream with the gateway's duplicate window and replicas, deleted after."""
    settings = load(None, environ={}).nats
    tag = secrets.token_hex(4)
    servers, credentials = split_servers(url)
    client = await nats.connect(servers, **credentials)
    js = client.jetstream()
    stream = RawStream(client, js, f"BENCH_RAW_{tag.upper()}", f"bench.{tag}")
    try:
        await js.add_stream(
            name=stream.name,
            subjects=[f"{stream.prefix}.>"],
            duplicate_window=settings.duplicate_window_seconds,
            num_replicas=settings.stream_replicas,
        )
        yield stream
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream.name)
        await client.close()


async def raw_publish_latency_ms(directory: Path, *, sync_always: bool, count: int) -> float:
    """Median ms of acked JetStream publishes, one at a time (embedded server only)."""
    async with nats_at(directory, "", sync_always=sync_always) as url, raw_stream(url) as raw:
        latencies = []
        for index in range(count):
            started = time.perf_counter()
            await raw.js.publish(f"{raw.prefix}.{index % 16}", PAYLOAD)
            latencies.append(time.perf_counter() - started)
    return statistics.median(latencies) * 1000


async def raw_pipelined_rate(directory: Path, *, count: int, nats_url: str) -> float:
    """The baseline for PublishBatch: nats-py publishing without waiting for each ack."""
    async with nats_at(directory, nats_url) as url, raw_stream(url) as raw:
        messages = raw.messages(make_events(count))
        started = time.perf_counter()
        futures = [await raw.js.publish_async(s, d, headers=h) for s, d, h in messages]
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)


def _publish_response() -> bytes:
    """The bytes a baseline answers every Publish with: a PublishResponse's size and shape."""
    response = gateway_pb2.PublishResponse(
        receipt=gateway_pb2.Receipt(event_id=make_events(1)[0].id, stream_sequence=1_000_000)
    )
    response.receipt.received_time.GetCurrentTime()
    return response.SerializeToString()


def _publish_server(
    handler: Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]], port: int
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server answering Publish with `handler` (generic bytes handler: no protobuf
    parsing); not started. (Server, bound port.)"""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "dutylink.v1.PublisherService",
                {"Publish": grpc.unary_unary_rpc_method_handler(handler)},
            ),
        )
    )
    return server, server.add_insecure_port(f"127.0.0.1:{port}")


def echo_server(port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Answers Publish at once, whatever the request."""
    answer = _publish_response()

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return answer

    return _publish_server(echo, port)


def relay_server(js: JetStreamContext, subject: str, port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Answers Publish once JetStream has acked the request's bytes, published to `subject`."""
    answer = _publish_response()

    async def relay(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await js.publish(subject, request)
        return answer

    return _publish_server(relay, port)


async def serve_echo(port: int) -> None:
    """`python -m gateway.bench echo`: serve the echo, print its port, run until killed."""
    server, port = echo_server(port)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def serve_relay(port: int, nats_url: str, subject: str) -> None:
    """`python -m gateway.bench relay`: serve the raw relay, print its port, run until killed."""
    servers, credentials = split_servers(nats_url)
    client = await nats.connect(servers, **credentials)
    server, port = relay_server(client.jetstream(), subject, port)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


@contextlib.asynccontextmanager
async def _baseline_at(
    make: Callable[[], tuple[grpc.aio.Server, int]], command: Sequence[str], *, in_process: bool
) -> AsyncIterator[str]:
    """The address of a running baseline server: in this process (`make`), or in its own, like
    the gateway (`python -m gateway.bench COMMAND...`)."""
    if in_process:
        server, port = make()
        await server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)
        return
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.bench", *command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.strip().isdigit():
            raise RuntimeError(f"bench: the {command[0]} server did not start ({line!r})")
        yield f"127.0.0.1:{int(line)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def echo_at(*, in_process: bool) -> contextlib.AbstractAsyncContextManager[str]:
    return _baseline_at(echo_server, ["echo"], in_process=in_process)


async def unary_rate(address: str, count: int) -> Measured:
    """Publish called on `address` (the gateway or a baseline alike: the same client, method
    path, channel options, plaintext and bearer metadata, requests serialized beforehand),
    IN_FLIGHT calls at once."""
    requests = [gateway_pb2.PublishRequest(event=e).SerializeToString() for e in make_events(count)]
    metadata = (("authorization", f"Bearer {sample_tokens()[PUBLISHER]}"),)
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        publish: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            PUBLISH_METHOD
        )
        return await measured(
            count,
            rate_in_flight(
                count, IN_FLIGHT, lambda i: publish(requests[i], metadata=metadata, timeout=10.0)
            ),
        )


async def echo_rate(directory: Path, *, count: int, in_process: bool) -> float:
    """The first baseline for unary Publish: a grpc.aio echo of bytes (no protobuf parsing)."""
    del directory  # no files
    async with echo_at(in_process=in_process) as address:
        return (await unary_rate(address, count)).rate


async def relay_rate(directory: Path, *, count: int, in_process: bool, nats_url: str) -> Measured:
    """The second: the raw relay, publishing each request's bytes to a stream like the
    gateway's (`sync_interval: always` on the embedded server) and awaiting the ack."""
    async with nats_at(directory, nats_url) as url, raw_stream(url) as raw:
        subject = f"{raw.prefix}.relay"

        def make() -> tuple[grpc.aio.Server, int]:
            return relay_server(raw.js, subject)

        command = ["relay", "--nats-url", url, "--subject", subject]
        async with _baseline_at(make, command, in_process=in_process) as address:
            return await unary_rate(address, count)


# --- fsync cost --------------------------------------------------------------------------------


async def sync_figures(settings: Settings) -> list[Figure]:
    synced = Series(lambda d: raw_publish_latency_ms(d, sync_always=True, count=1000))
    default = Series(lambda d: raw_publish_latency_ms(d, sync_always=False, count=1000))
    await interleave(settings.runs, [synced, default])
    return [
        make_figure(
            "sync",
            "raw JetStream publish, one at a time, sync_interval: always",
            "ms",
            synced.samples,
            ("default (2 min fsync)", default.samples),
        )
    ]
