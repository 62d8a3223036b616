"""Malformed requests against a running gateway, and a table of how it answered.

`python -m gateway.testkit.fuzz --requests 100000` starts a gateway of its own (embedded nats-server,
temporary directory, a policy that lets every agency publish everything) and sends that many
requests made by mutating the valid events of the demo scenario: bit flips, truncation,
inserted bytes, invalid UTF-8, unknown fields (nested too), huge repeated fields, long strings,
out-of-range timestamps, nanos, enums and coordinates, and plain garbage, to Publish,
PublishBatch and the other unary RPCs. `--address` and `--token` aim it at a gateway already
running instead. It prints the outcomes by RPC and status code, and fails (exit 1) on any
UNKNOWN or INTERNAL answer, or if health was not SERVING throughout.

The request generator is deterministic for a seed (`requests(seed)`), so a failure can be
replayed; tests/test_fuzz.py runs 10^4 of them in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from random import Random

import grpc
from google.protobuf.descriptor import Descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dutylink.v1 import audit_service_pb2, event_pb2, gateway_pb2

PUBLISH = "/dutylink.v1.PublisherService/Publish"
PUBLISH_BATCH = "/dutylink.v1.PublisherService/PublishBatch"
# The other unary RPCs of every service the gateway serves, sent garbage.
OTHERS = (
    *(
        f"/{service.full_name}/{method.name}"
        for file in (gateway_pb2.DESCRIPTOR, audit_service_pb2.DESCRIPTOR)
        for service in file.services_by_name.values()
        for method in service.methods
        if not (method.client_streaming or method.server_streaming)
        and method.name not in ("Publish", "PublishBatch")
    ),
    "/grpc.health.v1.Health/Check",
)
# Answers that mean the gateway failed rather than refused.
FAILURES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
# Kept small enough that every refusal's audit entry fits one NATS message.
LONG_STRING = 20_000


@dataclass(frozen=True)
class Request:
    method: str
    data: bytes
    agency: str
    mutation: str


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, encoded by hand (so the payload may be anything)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def seeds(now: datetime) -> list[tuple[str, event_pb2.Event]]:
    """Valid events and their publishing agencies: the demo scenario's."""
    from gateway.cli.demo import scenario

    return [(step.agency, step.event) for step in scenario(now)]


def _flip_bits(rng: Random, data: bytes) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(mutated))
        mutated[position] ^= 1 << rng.randrange(8)
    return bytes(mutated)


def _truncate(rng: Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _insert(rng: Random, data: bytes) -> bytes:
    position = rng.randrange(len(data) + 1)
    return data[:position] + rng.randbytes(rng.randint(1, 16)) + data[position:]


def _bad_utf8(rng: Random, event: event_pb2.Event) -> bytes:
    """The event with its id's bytes replaced by invalid UTF-8 of the same length."""
    data = event.SerializeToString()
    encoded = event.id.encode()
    garbage = bytes(rng.choice((0xFF, 0xFE, 0xC0, 0x80)) for _ in encoded)
    return data.replace(encoded, garbage, 1)


def _unknown_fields(rng: Random, event: event_pb2.Event) -> bytes:
    """Unknown fields at the top and inside a nested message (the incident's reporter)."""
    copy = event_pb2.Event()
    copy.CopyFrom(event)
    extra = _field(rng.randint(1000, 5000), rng.randbytes(rng.randint(0, 64)))
    if copy.HasField("incident"):
        copy.incident.reporter.MergeFromString(extra)
    return copy.SerializeToString() + _varint(rng.randint(200, 900) << 3) + _varint(7)


def _numbers(*path: str) -> list[int]:
    """The field numbers along `path` from Event, e.g. ("warning", "infos")."""
    numbers: list[int] = []
    message: Descriptor | None = event_pb2.Event.DESCRIPTOR
    for name in path:
        assert message is not None, f"{name} is under a scalar field"
        descriptor = message.fields_by_name[name]
        numbers.append(descriptor.number)
        message = descriptor.message_type
    return numbers


def _wrap(numbers: Sequence[int], payload: bytes) -> bytes:
    for number in reversed(numbers):
        payload = _field(number, payload)
    return payload


# Where thousands of elements go (appended to an event's bytes, they merge into it): the path
# of the repeated field, and the encoding of one element.
_HUGE: dict[str, list[tuple[tuple[str, ...], bytes]]] = {
    "incident": [
        (("incident", "involved_agencies"), b"fire"),
        (("incident", "attachments"), b""),
    ],
    "warning": [
        (("warning", "infos"), b""),
        (("warning", "infos", "areas"), b""),
        # GeoPoint{latitude: 0.0}: field 1, 64-bit.
        (("warning", "infos", "areas", "polygons", "points"), b"\x09" + bytes(8)),
    ],
}


def _huge_repeated(rng: Random, event: event_pb2.Event) -> bytes:
    """Thousands of (mostly empty) elements in a repeated field, nested or not."""
    count = rng.choice((17, 100, 1001, 5000, 40_000))
    places = _HUGE.get(event.WhichOneof("payload") or "", [])
    if not places:
        return event.SerializeToString() + _field(1, b"y" * min(count, LONG_STRING))
    path, element = rng.choice(places)
    *outer, inner = _numbers(*path)
    return event.SerializeToString() + _wrap(outer, _field(inner, element) * count)


def _out_of_range(rng: Random, event: event_pb2.Event) -> bytes:
    copy = event_pb2.Event()
    copy.CopyFrom(event)
    choice = rng.randrange(7)
    if choice == 0:
        copy.time.seconds = rng.choice((-(2**62), 253_402_300_800, 2**62, -62_135_596_801))
    elif choice == 1:
        copy.time.nanos = rng.choice((-1, 1_000_000_000, 2**31 - 1))
    elif choice == 2:
        copy.expires.seconds = rng.choice((2**40, -(2**40)))
    elif choice == 3:
        copy.received_time.nanos = -5
    elif choice == 4:
        copy.classification = rng.choice((99, -7, 2**31 - 1))  # type: ignore[assignment]
    elif choice == 5 and copy.HasField("incident"):
        copy.incident.location.point.latitude = rng.choice((1e308, -1000.0, float("nan")))
        copy.incident.reported_at.seconds = 2**60
    else:
        copy.id = rng.choice(("", " ", "x" * LONG_STRING, "\x00" * 10, "../../etc"))
    return copy.SerializeToString()


def _mutated_event(rng: Random, event: event_pb2.Event) -> tuple[str, bytes]:
    data = event.SerializeToString()
    kind = rng.choice(
        (
            "bit flips",
            "truncation",
            "inserted bytes",
            "invalid UTF-8",
            "unknown fields",
            "huge repeated field",
            "out-of-range value",
            "garbage",
        )
    )
    if kind == "bit flips":
        return kind, _flip_bits(rng, data)
    if kind == "truncation":
        return kind, _truncate(rng, data)
    if kind == "inserted bytes":
        return kind, _insert(rng, data)
    if kind == "invalid UTF-8":
        return kind, _bad_utf8(rng, event)
    if kind == "unknown fields":
        return kind, _unknown_fields(rng, event)
    if kind == "huge repeated field":
        return kind, _huge_repeated(rng, event)
    if kind == "out-of-range value":
        return kind, _out_of_range(rng, event)
    return kind, rng.randbytes(rng.randint(0, 512))


def requests(
    seed: int, count: int, events: Sequence[tuple[str, event_pb2.Event]]
) -> Iterator[Request]:
    """`count` malformed requests, the same ones for the same seed."""
    rng = Random(seed)
    for _ in range(count):
        agency, event = rng.choice(events)
        roll = rng.random()
        if roll < 0.65:
            kind, data = _mutated_event(rng, event)
            # The event's bytes as they are inside a PublishRequest (field 1).
            yield Request(PUBLISH, _field(1, data), agency, kind)
        elif roll < 0.85:
            parts = []
            kinds = set()
            for _ in range(rng.randint(1, 8)):
                if rng.random() < 0.3:
                    parts.append(event.SerializeToString())
                else:
                    kind, data = _mutated_event(rng, event)
                    kinds.add(kind)
                    parts.append(data)
            # PublishBatchRequest.events is field 1.
            payload = b"".join(_field(1, part) for part in parts)
            yield Request(PUBLISH_BATCH, payload, agency, ",".join(sorted(kinds)) or "valid")
        elif roll < 0.95:
            request = gateway_pb2.PublishRequest(event=event).SerializeToString()
            mutate = rng.choice((_flip_bits, _truncate, _insert))
            yield Request(PUBLISH, mutate(rng, request), agency, "mutated request")
        else:
            data = rng.randbytes(rng.randint(1, 256))
            yield Request(rng.choice(OTHERS), data, agency, "garbage")


@dataclass
class Outcomes:
    """How the gateway answered: counts by (method, status code), and what went wrong."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[tuple[Request, str]] = field(default_factory=list)
    health: Counter[str] = field(default_factory=Counter)

    def table(self) -> str:
        methods = sorted({m for m, _ in self.counts})
        codes = sorted({c for _, c in self.counts})
        width = max(len(m) for m in methods) if methods else 10
        lines = [f"{'rpc':<{width}}  " + "  ".join(f"{c:>18}" for c in codes)]
        for method in methods:
            cells = "  ".join(f"{self.counts[method, c]:>18}" for c in codes)
            lines.append(f"{method:<{width}}  {cells}")
        total = sum(self.counts.values())
        lines.append(f"total {total} requests; health answers: {dict(self.health)}")
        return "\n".join(lines)


async def send_all(
    address: str,
    tokens: dict[str, str],
    batch: Sequence[Request],
    *,
    concurrency: int = 64,
    timeout: float = 30.0,
) -> Outcomes:
    """Send `batch` with `concurrency` calls in flight, checking health meanwhile."""
    outcomes = Outcomes()
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for request in batch:
        queue.put_nowait(request)
    done = asyncio.Event()
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    request.method
                )
                metadata = (("authorization", f"Bearer {tokens[request.agency]}"),)
                try:
                    await call(request.data, metadata=metadata, timeout=timeout)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    if code in FAILURES:
                        outcomes.failures.append((request, f"{code.name}: {error.details()}"))
                outcomes.counts[request.method.rsplit("/", 1)[-1], code.name] += 1

        async def watch_health() -> None:
            stub = health_pb2_grpc.HealthStub(channel)
            while not done.is_set():
                try:
                    answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
                except grpc.aio.AioRpcError as error:
                    name = error.code().name
                outcomes.health[name] += 1
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch_health())
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            done.set()
            await watcher
    return outcomes


async def _run_own_gateway(count: int, seed: int, concurrency: int) -> Outcomes:
    from gateway.config import sample_tokens
    from gateway.server import Gateway
    from gateway.testkit.inprocess import config_for_tests

    with tempfile.TemporaryDirectory(prefix="dutylink-fuzz-") as directory:
        config = config_for_tests(nats={"data_dir": str(Path(directory) / "data"), "url": ""})
        async with Gateway(config) as gateway:
            batch = list(requests(seed, count, seeds(datetime.now(UTC))))
            return await send_all(gateway.address, sample_tokens(), batch, concurrency=concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.testkit.fuzz", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--address", help="a running gateway (plaintext, bearer tokens)")
    parser.add_argument("--token", help="the bearer token to send every request with")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    if arguments.address:
        if not arguments.token:
            parser.error("--address needs --token")
        batch = list(requests(arguments.seed, arguments.requests, seeds(datetime.now(UTC))))
        tokens = {r.agency: arguments.token for r in batch}
        outcomes = asyncio.run(
            send_all(arguments.address, tokens, batch, concurrency=arguments.concurrency)
        )
    else:
        outcomes = asyncio.run(
            _run_own_gateway(arguments.requests, arguments.seed, arguments.concurrency)
        )
    print(outcomes.table())
    print(f"{time.perf_counter() - started:.1f} s")
    for request, answer in outcomes.failures[:20]:
        print(f"FAILED {request.method} ({request.mutation}, {len(request.data)} bytes): {answer}")
    unhealthy = set(outcomes.health) - {"SERVING"}
    if unhealthy:
        print(f"health was not SERVING throughout: {dict(outcomes.health)}")
    return 1 if outcomes.failures or unhealthy else 0


if __name__ == "__main__":
    sys.exit(main())
