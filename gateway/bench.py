"""`dutylink bench`: the gateway's figures, each a median over repeated runs, each beside the raw
baseline it is compared with, measured in the same run (the ratio is the median of the per-run
ratios, so the noise of one moment of this shared machine hits both sides alike).

Where: by default against fresh embedded nats-servers on loopback, with `sync_interval: always`
(as the gateway runs them), one per run and per side. With `--nats-url` the gateway and raw
figures run against that server or cluster instead: each gateway keeps its files in the run's
temporary directory and uses a fresh `gateway_id` and fresh subscription names (its events and
audit entries stay in the cluster's DutyLink streams, which deny deletes: use a disposable
cluster); each raw baseline makes its own uniquely named stream there (same duplicate window and
replicas as the gateway's) and deletes it afterwards if permitted. The `sync` section compares
two server settings, so it needs the embedded servers and is skipped there; the soak section
always starts its own.

Like for like: the raw publishers send the same event bytes the gateway stores (stamped with
source and receive time), with the gateway's headers (CloudEvents attributes, `Nats-Msg-Id`,
`Nats-Expected-Stream`) into a stream with the gateway's duplicate window. Gateway runs have
validation, the sample access policies and the audit log on unless a figure says otherwise.

Processes: as in production, each gateway measured runs as its own `dutylink serve` process
(`gateway.testing.GatewayProcess`, configured through DUTYLINK_* variables plus a generated
agencies file in the run's directory), so its CPU is not shared with the bench's clients (the
publishers, the subscribers, the fan-out's 20 agencies), which all run in this process's event
loop; the raw echo of the `publish` section likewise runs as its own process (`python -m
gateway.bench echo`), while the raw nats-py baselines, which have no server but nats-server,
publish and subscribe from this process. `--in-process` (`Settings.in_process`) puts the
gateway and the echo back into this process and event loop, where they compete with their
clients for one core: the figures then measure the bench's loop as much as the gateway. The
`checkpoint` section reads the audit log's size, so its gateway always runs in this process;
the `soak` section always runs subprocesses. The table's title says which mode was used.

Sections (`--only SECTION`, repeatable) and their figures:
- `sync`: raw nats-py acked JetStream publishes one at a time, ms each, with `sync_interval:
  always` vs JetStream's default (fsync every two minutes): the ratio is the cost of the fsync.
- `publish`: gateway unary Publish with 16 calls in flight, events/s, vs a raw grpc.aio unary
  echo (generic bytes handler, no protobuf parsing, a response the size of a PublishResponse,
  in its own process unless `--in-process`)
  called with the serialised PublishRequests of the same events, 16 in flight, on the same kind
  of channel (plaintext, the client's channel options) with the same bearer-token metadata
  (target >= 0.8x; the echo's client sends ready bytes, the gateway's builds and parses
  messages); gateway PublishBatch, 500 events per call, vs raw nats-py pipelined
  publishing (`publish_async`) of the same events (target >= 0.7x); Subscribe delivery +
  confirmed ack (`confirm_acks`: each ack also writes its DUTYLINK_ACKED record, and the client
  awaits every confirmation, up to 500 at once) vs delivery + plain ack in the same run.
- `policy`: PublishBatch and Subscribe delivery + ack (transport receiving the fire's exercise
  incidents, the reporter withheld) under the sample policies vs a permissive one-rule policy.
- `audit`: PublishBatch with the audit log on vs off (target >= 0.85x: overhead under 15 %).
- `latency`: end to end, publish -> subscriber delivery, p50/p99/max in ms, at 1,000 events/s
  (and p50/p99 at a quarter of that, below saturation) for `--seconds`: an open-loop publisher (event i is due at i/rate; unary Publish, up to 64
  calls in flight) and one subscriber of another agency acking each delivery. Latency is
  delivery time - the event's *scheduled* send time, so a stalled publisher shows up in the
  figures instead of hiding (coordinated omission). Baseline: raw nats-py, the same schedule of
  acked `js.publish` calls into a JetStream push consumer acking each message. Target: p99
  <= 10 ms.
- `fanout`: 20 generated agencies (a generated config and permissive policy in the run's
  directory), each with one subscription acking every event, an open-loop publisher at 500
  events/s for `--seconds`. Over those seconds: delivered events/s per agency (median over
  agencies) vs the publish rate achieved; the lag of each agency, sampled every second: events
  due on the publisher's schedule so far - events delivered (so a publisher the gateway holds
  back counts as lag too), at the end of the schedule (worst agency) and its growth, the
  least-squares slope of the worst agency's samples in events/s (target: <= 2 % of the publish
  rate, i.e. not growing).
- `checkpoint`: under a steady 200 events/s publish load at the default `checkpoint_seconds`,
  from a Publish acknowledgement (its audit entry is durable by then) until a signed checkpoint
  covers that entry, p50 and p99 in s (target: p99 <= 1.5 s).
- `soak` (gateway.bench_soak, gateways as subprocesses): the gateway's RSS over
  `--rss-seconds` at 500 events/s with one stalled subscriber, measured once (its figures are
  fitted over the run after a 10 % warm-up): at the end vs at the start, the peak, and the growth, the
  least-squares slope in MB/min (target: <= 0.5 MB/min, i.e. flat: under 5 MB over ten
  minutes); PublishBatch events/s through two gateway replicas vs one on a three-node R3
  cluster (`--runs` runs, no target: it depends on free cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import nats
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adapters.client import CHANNEL_OPTIONS, DutyLinkClient, Subscription
from dutylink.v1 import event_pb2, gateway_pb2
from gateway import envelope, subjects
from gateway.audit.note import Checkpoint, Verifier, open_note
from gateway.config import Agency, Config, load, sample_tokens
from gateway.demo import scenario
from gateway.jetstream import split_servers
from gateway.nats_server import NatsServer
from gateway.server import SERVER_OPTIONS, Gateway
from gateway.testing import OPEN_POLICY, GatewayProcess
from policies.loader import SAMPLE_DIR

SECTIONS = ("sync", "publish", "policy", "audit", "latency", "fanout", "checkpoint", "soak")
PAYLOAD = b"x" * 512
IN_FLIGHT = 16  # unary calls in flight, gateway and echo alike
BATCH = 500
OPEN_LOOP_IN_FLIGHT = 64  # enough unary calls in flight for the rate-driven publishers
PUBLISH_METHOD = "/dutylink.v1.PublisherService/Publish"
PUBLISHER = "fire"  # sample agencies: the fire publishes incidents ...
RECEIVER = "transport"  # ... that transport receives with the reporter withheld

RSS_FLAT_MB_PER_MIN = 0.5  # "flat": under 5 MB over the ten-minute run

T = TypeVar("T")


# --- figures and targets -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal for a figure's median (`of_ratio`: for its ratio to the baseline): at least
    `limit`, or at most it."""

    limit: float
    at_most: bool = False
    of_ratio: bool = False

    def met(self, median: float, ratio: float | None) -> bool | None:
        """Whether the value meets the target; None when there is no ratio to judge."""
        value = ratio if self.of_ratio else median
        if value is None:
            return None
        return value <= self.limit if self.at_most else value >= self.limit

    def text(self, unit: str) -> str:
        sign = "≤" if self.at_most else "≥"
        return f"{sign} {self.limit:g}x" if self.of_ratio else f"{sign} {self.limit:g} {unit}"


@dataclass(frozen=True)
class Figure:
    """One row of the table: per-run samples and, when compared, the baseline's samples of the
    same runs, pairwise."""

    section: str
    name: str
    unit: str
    samples: tuple[float, ...]
    baseline: str = ""
    baseline_samples: tuple[float, ...] = ()
    target: Target | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline_samples) if self.baseline_samples else None

    @property
    def ratios(self) -> tuple[float, ...]:
        """This figure / the baseline, run by run."""
        return tuple(
            s / b if b else float("inf")
            for s, b in zip(self.samples, self.baseline_samples, strict=True)
        )

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.baseline_samples else None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.median, self.ratio)


def _figure(
    section: str,
    name: str,
    unit: str,
    samples: Sequence[float],
    baseline: tuple[str, Sequence[float]] | None = None,
    target: Target | None = None,
) -> Figure:
    label, compared = baseline or ("", ())
    return Figure(section, name, unit, tuple(samples), label, tuple(compared), target)


COLUMNS = ("figure", "median", "unit", "baseline", "ratio", "target", "met", "runs")


def number(value: float) -> str:
    """Readable at every scale: 6,712 / 12.40 / 0.294."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def table_rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    """The cells of `dutylink bench`'s table, in COLUMNS order."""
    rows: list[tuple[str, ...]] = []
    for f in figures:
        baseline = f"{f.baseline} {number(f.baseline_median)}" if f.baseline_median else "—"
        met = {True: "yes", False: "no", None: "—"}[f.met]
        rows.append(
            (
                f.name,
                number(f.median),
                f.unit,
                baseline,
                "—" if f.ratio is None else f"{f.ratio:.2f}x",
                "—" if f.target is None else f.target.text(f.unit),
                met,
                ", ".join(number(s) for s in f.samples),
            )
        )
    return rows


@dataclass(frozen=True)
class Settings:
    """What to run; the defaults are `dutylink bench`'s."""

    runs: int = 3
    count: int = 2000  # events per throughput run
    seconds: float = 10.0  # length of each rate-driven run (latency, fan-out, checkpoint)
    sections: frozenset[str] = frozenset(SECTIONS)
    nats_url: str = ""  # "": fresh embedded servers
    in_process: bool = False  # the gateway (and the echo) in this process, as before
    rss_seconds: float = 600.0
    latency_rate: float = 1000.0
    fanout_rate: float = 500.0
    fanout_agencies: int = 20
    checkpoint_rate: float = 200.0
    rss_rate: float = 500.0


def mode(settings: Settings) -> str:
    """Where the gateways measured ran (the checkpoint section reads the audit log's size, so
    its gateway always runs in this process)."""
    if settings.in_process:
        return "gateway in the bench's process"
    return "gateway as its own process" + (
        " (checkpoint: in the bench's process)" if "checkpoint" in settings.sections else ""
    )


def where(settings: Settings) -> str:
    """What the figures ran against, without credentials."""
    if not settings.nats_url:
        return "fresh embedded nats-servers (sync_interval: always)"
    return ", ".join(split_servers(settings.nats_url)[0])


# --- shared helpers ----------------------------------------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _events(count: int) -> list[event_pb2.Event]:
    template = scenario(datetime.now(UTC))[0].event
    events = []
    for index in range(count):
        event = event_pb2.Event()
        event.CopyFrom(template)
        event.id = f"bench-{time.time_ns()}-{index}"
        events.append(event)
    return events


@contextlib.asynccontextmanager
async def _nats(directory: Path, url: str, *, sync_always: bool = True) -> AsyncIterator[str]:
    """`url`, or a fresh embedded server in `directory` for the duration of the block."""
    if url:
        yield url
        return
    async with NatsServer(directory / "nats", sync_always=sync_always) as server:
        yield server.url


def _gateway_config(
    directory: Path,
    *,
    policy_dir: Path,
    audit: bool = True,
    agencies: tuple[Agency, ...] = (),
) -> Config:
    """Defaults with this policy and audit switch, on a free port, with a fresh gateway id and
    the gateway's files (audit keys) in the run's directory: never a real deployment's
    `.dutylink`, its port or its audit log. `agencies` replace the sample agencies."""
    config = load(None, environ={})
    return dataclasses.replace(
        config,
        gateway=dataclasses.replace(
            config.gateway, listen="127.0.0.1:0", gateway_id=_unique("bench")
        ),
        nats=dataclasses.replace(config.nats, data_dir=str(directory / "gateway")),
        policy=dataclasses.replace(config.policy, dir=str(policy_dir)),
        audit=dataclasses.replace(config.audit, enabled=audit),
        agencies=agencies or config.agencies,
        agencies_source="dutylink bench" if agencies else config.agencies_source,
    )


@contextlib.asynccontextmanager
async def _gateway(config: Config, nats_url: str, *, in_process: bool) -> AsyncIterator[str]:
    """The address of a gateway serving `config` (as `_gateway_config` makes it) on `nats_url`:
    in this process, or as its own `dutylink serve` process with the same agencies, policy,
    audit switch, gateway id and data directory (stopped with SIGTERM after the block)."""
    if in_process:
        async with Gateway(config, nats_url=nats_url) as gateway:
            yield gateway.address
        return
    data_dir = Path(config.nats.data_dir)
    config_file = data_dir.with_name(f"{data_dir.name}.toml")  # beside it, in the run's directory
    agencies = "".join(
        f"[[agencies]]\nid = {json.dumps(a.id)}\nname = {json.dumps(a.name)}\n"
        f"token = {json.dumps(a.token)}\nroles = {json.dumps(list(a.roles))}\n\n"
        for a in config.agencies
    )
    await asyncio.to_thread(config_file.write_text, agencies, "utf-8")
    process = GatewayProcess(
        nats_url,
        data_dir,
        gateway_id=config.gateway.gateway_id,
        policy_dir=Path(config.policy.dir),
        env={"DUTYLINK_AUDIT_ENABLED": str(config.audit.enabled).lower()},
        log_level="error",
        config_file=config_file,
    )
    async with process:
        yield process.address


async def _rate_in_flight(
    count: int, in_flight: int, call: Callable[[int], Awaitable[object]]
) -> float:
    """Calls per second of `call(0..count-1)`, at most `in_flight` at once (closed loop)."""
    limit = asyncio.Semaphore(in_flight)

    async def one(index: int) -> None:
        async with limit:
            await call(index)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def _open_loop(
    rate: float, count: int, send: Callable[[int], Awaitable[object]], *, in_flight: int
) -> float:
    """Starts `send(i)` at its scheduled time `start + i / rate` (or at once when behind), not
    waiting for earlier calls unless `in_flight` are pending; returns `start` (perf_counter)
    once every call finished."""
    limit = asyncio.Semaphore(in_flight)
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int) -> None:
        try:
            await send(index)
        finally:
            limit.release()

    start = time.perf_counter()
    for index in range(count):
        await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
        await limit.acquire()
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return start


async def _until(done: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not done():  # noqa: ASYNC110 (counters that many tasks update)
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise RuntimeError(f"bench: {what} did not happen within {timeout:g} s") from None


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _acking(subscription: Subscription, note: Callable[[gateway_pb2.Delivery], None]) -> None:
    """Note and ack every delivery, until cancelled. An ack is never cut off halfway: gRPC
    cancels the whole stream when a write is cancelled."""
    async for delivery in subscription:
        note(delivery)
        await asyncio.shield(subscription.ack(delivery))


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; 0 with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope


@dataclass(frozen=True)
class Latency:
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cls(p50=cuts[49], p99=cuts[98], max=max(values))


@dataclass
class _Series(Generic[T]):
    """One measurement and its samples, one per run."""

    measure: Callable[[Path], Awaitable[T]]
    samples: list[T] = field(default_factory=list)


async def _interleave(runs: int, series: Sequence[_Series[Any]]) -> None:
    """Every measurement once per run, in order on even runs and reversed on odd ones (AB BA
    AB ...), so drift and machine noise hit all alike and none always runs first (warm caches,
    CPU frequency); each in a fresh temporary directory."""
    for index in range(runs):
        for one in series if index % 2 == 0 else series[::-1]:
            with tempfile.TemporaryDirectory(prefix="dutylink-bench-") as directory:
                one.samples.append(await one.measure(Path(directory)))


async def _repeat(runs: int, measure: Callable[[Path], Awaitable[T]]) -> list[T]:
    series = _Series(measure)
    await _interleave(runs, [series])
    return series.samples


# --- raw baselines -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawStream:
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
async def _raw_stream(url: str) -> AsyncIterator[_RawStream]:
    """A uniquely named stream with the gateway's duplicate window and replicas, deleted after."""
    settings = load(None, environ={}).nats
    tag = secrets.token_hex(4)
    servers, credentials = split_servers(url)
    client = await nats.connect(servers, **credentials)
    js = client.jetstream()
    stream = _RawStream(client, js, f"BENCH_RAW_{tag.upper()}", f"bench.{tag}")
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


async def _raw_publish_latency_ms(directory: Path, *, sync_always: bool, count: int) -> float:
    """Median ms of acked JetStream publishes, one at a time (embedded server only)."""
    async with _nats(directory, "", sync_always=sync_always) as url, _raw_stream(url) as raw:
        latencies = []
        for index in range(count):
            started = time.perf_counter()
            await raw.js.publish(f"{raw.prefix}.{index % 16}", PAYLOAD)
            latencies.append(time.perf_counter() - started)
    return statistics.median(latencies) * 1000


async def _raw_pipelined_rate(directory: Path, *, count: int, nats_url: str) -> float:
    """The baseline for PublishBatch: nats-py publishing without waiting for each ack."""
    async with _nats(directory, nats_url) as url, _raw_stream(url) as raw:
        messages = raw.messages(_events(count))
        started = time.perf_counter()
        futures = [await raw.js.publish_async(s, d, headers=h) for s, d, h in messages]
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)


def _echo_server(port: int = 0) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server answering Publish with the bytes of a PublishResponse, whatever the
    request (generic bytes handler: no protobuf parsing); not started. (Server, bound port.)"""
    response = gateway_pb2.PublishResponse(
        receipt=gateway_pb2.Receipt(event_id=_events(1)[0].id, stream_sequence=1_000_000)
    )
    response.receipt.received_time.GetCurrentTime()
    answer = response.SerializeToString()

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "dutylink.v1.PublisherService",
                {"Publish": grpc.unary_unary_rpc_method_handler(echo)},
            ),
        )
    )
    return server, server.add_insecure_port(f"127.0.0.1:{port}")


async def _serve_echo(port: int) -> None:
    """`python -m gateway.bench echo`: serve the echo, print its port, run until killed."""
    server, port = _echo_server(port)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


@contextlib.asynccontextmanager
async def _echo(*, in_process: bool) -> AsyncIterator[str]:
    """The address of a running echo server: in this process, or in its own (like the gateway)."""
    if in_process:
        server, port = _echo_server()
        await server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)
        return
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.bench", "echo",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.strip().isdigit():
            raise RuntimeError(f"bench: the echo server did not start ({line!r})")
        yield f"127.0.0.1:{int(line)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _echo_rate(directory: Path, *, count: int, in_process: bool) -> float:
    """The baseline for unary Publish: a grpc.aio echo of bytes (no protobuf parsing), called
    like the gateway: same method path, channel options, plaintext and bearer metadata."""
    del directory  # no files
    requests = [gateway_pb2.PublishRequest(event=e).SerializeToString() for e in _events(count)]
    metadata = (("authorization", f"Bearer {sample_tokens()[PUBLISHER]}"),)
    async with (
        _echo(in_process=in_process) as address,
        grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel,
    ):
        publish = channel.unary_unary(PUBLISH_METHOD)
        return await _rate_in_flight(
            count, IN_FLIGHT, lambda i: publish(requests[i], metadata=metadata, timeout=10.0)
        )


# --- gateway throughput ------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayRates:
    unary: float
    batched: float
    delivered: float
    confirmed: float  # delivery + ack with confirm_acks, acks awaited concurrently


async def _gateway_rates(
    directory: Path,
    *,
    count: int,
    policy_dir: Path,
    audit: bool = True,
    nats_url: str = "",
    in_process: bool = False,
) -> GatewayRates:
    """Unary Publish (IN_FLIGHT at once), then PublishBatch (BATCH per call), then delivery +
    ack of everything published to transport's subscription, then the same through a second
    subscription with confirmed acks (each ack awaited, up to BATCH at once)."""
    config = _gateway_config(directory, policy_dir=policy_dir, audit=audit)
    async with (
        _nats(directory, nats_url) as url,
        _gateway(config, url, in_process=in_process) as address,
    ):
        tokens = sample_tokens()
        client = DutyLinkClient(address, token=tokens[PUBLISHER])
        receiver = DutyLinkClient(address, token=tokens[RECEIVER])
        subscription = receiver.subscribe(
            _unique("bench"),
            families=["incident"],
            planes=[event_pb2.PLANE_EXERCISE],
            max_in_flight=BATCH,
        )
        await subscription.open()
        confirming = receiver.subscribe(
            _unique("bench"),
            families=["incident"],
            planes=[event_pb2.PLANE_EXERCISE],
            max_in_flight=BATCH,
            confirm_acks=True,
        )
        await confirming.open()

        events = _events(count)
        unary = await _rate_in_flight(count, IN_FLIGHT, lambda i: client.publish(events[i]))

        events = _events(count)
        started = time.perf_counter()
        for offset in range(0, count, BATCH):
            results = await client.publish_batch(events[offset : offset + BATCH])
            if any(r.HasField("error") for r in results):
                raise RuntimeError(f"batch publish failed: {results[0].error.message}")
        batched = count / (time.perf_counter() - started)

        started = time.perf_counter()
        for _ in range(2 * count):  # everything published above, acked one by one
            delivery = await subscription.next(timeout=30)
            if delivery is None:
                raise RuntimeError("the subscription ended early")
            await subscription.ack(delivery)
        delivered = 2 * count / (time.perf_counter() - started)
        await subscription.close()

        started = time.perf_counter()
        acks: set[asyncio.Task[None]] = set()
        for _ in range(2 * count):
            delivery = await confirming.next(timeout=30)
            if delivery is None:
                raise RuntimeError("the confirming subscription ended early")
            ack = asyncio.create_task(confirming.ack(delivery))
            acks.add(ack)
            ack.add_done_callback(acks.discard)
        await asyncio.gather(*acks)
        confirmed = 2 * count / (time.perf_counter() - started)
        await confirming.close()
        await receiver.close()
        await client.close()
    return GatewayRates(unary, batched, delivered, confirmed)


async def _throughput_figures(settings: Settings) -> list[Figure]:
    """`publish`, `policy` and `audit`: one interleaved set of runs, sharing the gateway runs
    with the sample policy and the audit log on."""
    chosen = settings.sections

    def rates(policy_dir: Path, *, audit: bool = True) -> _Series[GatewayRates]:
        return _Series(
            lambda d: _gateway_rates(
                d,
                count=settings.count,
                policy_dir=policy_dir,
                audit=audit,
                nats_url=settings.nats_url,
                in_process=settings.in_process,
            )
        )

    gateway = rates(SAMPLE_DIR)
    echo = _Series(lambda d: _echo_rate(d, count=settings.count, in_process=settings.in_process))
    raw = _Series(
        lambda d: _raw_pipelined_rate(d, count=settings.count, nats_url=settings.nats_url)
    )
    permissive = rates(OPEN_POLICY)
    unaudited = rates(SAMPLE_DIR, audit=False)
    series: list[_Series[Any]] = [gateway]
    series += [echo, raw] if "publish" in chosen else []
    series += [permissive] if "policy" in chosen else []
    series += [unaudited] if "audit" in chosen else []
    await _interleave(settings.runs, series)
    figures = []
    if "publish" in chosen:
        figures += [
            _figure(
                "publish",
                f"gateway Publish, {IN_FLIGHT} in flight",
                "events/s",
                [r.unary for r in gateway.samples],
                ("raw grpcio echo", echo.samples),
                Target(0.8, of_ratio=True),
            ),
            _figure(
                "publish",
                f"gateway PublishBatch, {BATCH} per call",
                "events/s",
                [r.batched for r in gateway.samples],
                ("raw nats-py pipelined", raw.samples),
                Target(0.7, of_ratio=True),
            ),
            _figure(
                "publish",
                "Subscribe delivery + confirmed ack (confirm_acks: ack + DUTYLINK_ACKED record)",
                "events/s",
                [r.confirmed for r in gateway.samples],
                ("plain ack", [r.delivered for r in gateway.samples]),
            ),
        ]
    if "policy" in chosen:
        figures += [
            _figure(
                "policy",
                "PublishBatch, sample policy",
                "events/s",
                [r.batched for r in gateway.samples],
                ("permissive policy", [r.batched for r in permissive.samples]),
            ),
            _figure(
                "policy",
                "Subscribe delivery + ack, sample policy (redacting)",
                "events/s",
                [r.delivered for r in gateway.samples],
                ("permissive policy", [r.delivered for r in permissive.samples]),
            ),
        ]
    if "audit" in chosen:
        figures.append(
            _figure(
                "audit",
                "PublishBatch, audit log on (overhead = 1 - ratio)",
                "events/s",
                [r.batched for r in gateway.samples],
                ("audit log off", [r.batched for r in unaudited.samples]),
                Target(0.85, of_ratio=True),
            )
        )
    return figures


# --- fsync cost --------------------------------------------------------------------------------


async def _sync_figures(settings: Settings) -> list[Figure]:
    synced = _Series(lambda d: _raw_publish_latency_ms(d, sync_always=True, count=1000))
    default = _Series(lambda d: _raw_publish_latency_ms(d, sync_always=False, count=1000))
    await _interleave(settings.runs, [synced, default])
    return [
        _figure(
            "sync",
            "raw JetStream publish, one at a time, sync_interval: always",
            "ms",
            synced.samples,
            ("default (2 min fsync)", default.samples),
        )
    ]


# --- end-to-end latency ------------------------------------------------------------------------


async def _latencies(
    publish: Callable[[event_pb2.Event], Awaitable[object]],
    arrivals: dict[str, float],
    *,
    rate: float,
    seconds: float,
) -> Latency:
    """Warm up (connections, consumers), then publish on the open-loop schedule; ms from each
    event's scheduled send time to its first arrival, which the subscriber notes in
    `arrivals` (event id -> perf_counter)."""
    warm = _events(10)
    for event in warm:
        await publish(event)
    await _until(lambda: len(arrivals) >= len(warm), 30, "delivery of the warm-up events")
    events = _events(max(2, round(rate * seconds)))
    start = await _open_loop(
        rate, len(events), lambda i: publish(events[i]), in_flight=OPEN_LOOP_IN_FLIGHT
    )
    await _until(
        lambda: len(arrivals) >= len(warm) + len(events), 30 + seconds, "delivery of every event"
    )
    return Latency.of([(arrivals[e.id] - (start + i / rate)) * 1000 for i, e in enumerate(events)])


async def _gateway_latency(
    directory: Path, *, rate: float, seconds: float, nats_url: str, in_process: bool
) -> Latency:
    """Fire publishes (unary), transport receives and acks each delivery."""
    config = _gateway_config(directory, policy_dir=SAMPLE_DIR)
    tokens = sample_tokens()
    async with (
        _nats(directory, nats_url) as url,
        _gateway(config, url, in_process=in_process) as address,
        DutyLinkClient(address, token=tokens[PUBLISHER]) as sender,
        DutyLinkClient(address, token=tokens[RECEIVER]) as receiver,
    ):
        subscription = receiver.subscribe(
            _unique("bench"), families=["incident"], planes=[event_pb2.PLANE_EXERCISE]
        )
        arrivals: dict[str, float] = {}

        def note(delivery: gateway_pb2.Delivery) -> None:
            arrivals.setdefault(delivery.event.id, time.perf_counter())

        async with subscription:
            reader = asyncio.create_task(_acking(subscription, note))
            try:
                return await _latencies(sender.publish, arrivals, rate=rate, seconds=seconds)
            finally:
                await _cancel(reader)


async def _raw_latency(directory: Path, *, rate: float, seconds: float, nats_url: str) -> Latency:
    """The same schedule of acked nats-py `js.publish` calls, the same bytes and headers, into a
    JetStream push consumer that acks each message."""
    async with _nats(directory, nats_url) as url, _raw_stream(url) as raw:
        arrivals: dict[str, float] = {}

        async def on_message(message: Msg) -> None:
            arrivals.setdefault((message.headers or {}).get("ce-id", ""), time.perf_counter())
            await message.ack()

        subscription = await raw.js.subscribe(
            f"{raw.prefix}.>", stream=raw.name, cb=on_message, manual_ack=True
        )

        async def publish(event: event_pb2.Event) -> None:
            ((subject, data, headers),) = raw.messages([event])
            await raw.js.publish(subject, data, headers=headers)

        try:
            return await _latencies(publish, arrivals, rate=rate, seconds=seconds)
        finally:
            await subscription.unsubscribe()


async def _latency_figures(settings: Settings) -> list[Figure]:
    rate, seconds, url = settings.latency_rate, settings.seconds, settings.nats_url
    gateway = _Series(
        lambda d: _gateway_latency(
            d, rate=rate, seconds=seconds, nats_url=url, in_process=settings.in_process
        )
    )
    raw = _Series(lambda d: _raw_latency(d, rate=rate, seconds=seconds, nats_url=url))
    # The same path below saturation: how much of the figure at `rate` is queueing.
    light_rate = rate / 4
    light = _Series(
        lambda d: _gateway_latency(
            d, rate=light_rate, seconds=seconds, nats_url=url, in_process=settings.in_process
        )
    )
    await _interleave(settings.runs, [gateway, raw, light])
    where = f"publish → delivery at {rate:,.0f} events/s"
    baseline = "raw nats-py"
    return [
        _figure(
            "latency",
            f"end-to-end latency p50, {where}",
            "ms",
            [r.p50 for r in gateway.samples],
            (baseline, [r.p50 for r in raw.samples]),
        ),
        _figure(
            "latency",
            "end-to-end latency p99",
            "ms",
            [r.p99 for r in gateway.samples],
            (baseline, [r.p99 for r in raw.samples]),
            Target(10, at_most=True),
        ),
        _figure(
            "latency",
            "end-to-end latency max",
            "ms",
            [r.max for r in gateway.samples],
            (baseline, [r.max for r in raw.samples]),
        ),
        _figure(
            "latency",
            f"end-to-end latency p50, at {light_rate:,.0f} events/s",
            "ms",
            [r.p50 for r in light.samples],
        ),
        _figure("latency", "end-to-end latency p99", "ms", [r.p99 for r in light.samples]),
    ]


# --- fan-out -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fanout:
    published: float  # events/s
    delivered: float  # events/s per agency, median over agencies
    end_lag: float  # events, worst agency, when publishing ended
    lag_slope: float  # events/s, the worst agency's least-squares lag growth


def _fanout_agencies(count: int) -> tuple[Agency, ...]:
    """A publishing agency and `count` receiving ones, each with its own token."""
    ids = ["source", *(f"agency-{i:02d}" for i in range(1, count + 1))]
    return tuple(Agency(i, i, token=f"bench-token-{i}") for i in ids)


def _permissive_policy(directory: Path, agencies: Sequence[Agency]) -> Path:
    """A policy declaring these agencies, each allowed to publish and receive everything."""
    rule = {"effect": "allow", "agencies": "*", "types": "*"}
    policy = {
        "agencies": [{"id": a.id, "name": a.name} for a in agencies],
        "rules": [
            {"id": "bench-publishes", "action": "publish", **rule},
            {
                "id": "bench-receives",
                "action": "receive",
                **rule,
                "max_classification": "CONFIDENTIAL",
                "purpose": "benchmark",
            },
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.yaml").write_text(yaml.safe_dump(policy, sort_keys=False), "utf-8")
    return directory


async def _fanout(
    directory: Path,
    *,
    receivers: int,
    rate: float,
    seconds: float,
    nats_url: str,
    in_process: bool = False,
) -> Fanout:
    agencies = _fanout_agencies(receivers)
    config = _gateway_config(
        directory, policy_dir=_permissive_policy(directory / "policy", agencies), agencies=agencies
    )
    async with (
        _nats(directory, nats_url) as url,
        _gateway(config, url, in_process=in_process) as address,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [
            await stack.enter_async_context(DutyLinkClient(address, token=a.token))
            for a in agencies
        ]
        name = _unique("bench")
        subscriptions = [
            await stack.enter_async_context(
                client.subscribe(name, planes=[event_pb2.PLANE_EXERCISE])
            )
            for client in clients[1:]
        ]
        delivered = [0] * receivers
        published = 0

        def counter(index: int) -> Callable[[gateway_pb2.Delivery], None]:
            def count(_: gateway_pb2.Delivery) -> None:
                delivered[index] += 1

            return count

        readers = [asyncio.create_task(_acking(s, counter(i))) for i, s in enumerate(subscriptions)]
        try:
            await clients[0].publish(_events(1)[0])  # warm up every connection and consumer
            await _until(lambda: min(delivered) >= 1, 30, "fan-out of the warm-up event")
            delivered[:] = [0] * receivers
            events = _events(max(2, round(rate * seconds)))

            async def publish(index: int) -> None:
                nonlocal published
                await clients[0].publish(events[index])
                published += 1

            # (seconds since start, published so far, delivered so far to each agency), every
            # second of the schedule and at its end; the publisher may finish later when the
            # gateway holds it back, which the lag then shows.
            snapshots: list[tuple[float, int, list[int]]] = []
            start = time.perf_counter()

            async def sample() -> None:
                for tick in [*range(1, math.ceil(seconds)), seconds]:
                    await asyncio.sleep(max(0.0, start + tick - time.perf_counter()))
                    snapshots.append((time.perf_counter() - start, published, list(delivered)))

            def lags(at: float, received: list[int]) -> list[int]:
                """Per agency: events due on the schedule by `at` - events delivered."""
                due = min(len(events), math.floor(at * rate) + 1)
                return [due - d for d in received]

            sampler = asyncio.create_task(sample())
            try:
                await _open_loop(rate, len(events), publish, in_flight=OPEN_LOOP_IN_FLIGHT)
                await sampler
            finally:
                await _cancel(sampler)
            series = [(at, lags(at, received)) for at, _, received in snapshots]
            at, sent, received = snapshots[-1]
            return Fanout(
                published=sent / at,
                delivered=statistics.median(received) / at,
                end_lag=max(series[-1][1]),
                lag_slope=max(_slope([(t, lag[k]) for t, lag in series]) for k in range(receivers)),
            )
        finally:
            await _cancel(*readers)


async def _fanout_figures(settings: Settings) -> list[Figure]:
    count, rate = settings.fanout_agencies, settings.fanout_rate
    runs = await _repeat(
        settings.runs,
        lambda d: _fanout(
            d,
            receivers=count,
            rate=rate,
            seconds=settings.seconds,
            nats_url=settings.nats_url,
            in_process=settings.in_process,
        ),
    )
    return [
        _figure(
            "fanout",
            f"fan-out to {count} agencies at {rate:,.0f} events/s: delivered per agency (median)",
            "events/s",
            [r.delivered for r in runs],
            ("published", [r.published for r in runs]),
        ),
        _figure(
            "fanout", "fan-out lag at the end, worst agency", "events", [r.end_lag for r in runs]
        ),
        _figure(
            "fanout",
            "fan-out lag growth, worst agency",
            "events/s",
            [r.lag_slope for r in runs],
            target=Target(0.02 * rate, at_most=True),
        ),
    ]


# --- checkpoint latency ------------------------------------------------------------------------


async def _checkpoint_latency(
    directory: Path, *, rate: float, seconds: float, nats_url: str = ""
) -> Latency:
    """Publish one event at a time on a steady schedule (default `checkpoint_seconds`); for each,
    the time from its Publish acknowledgement until a signed checkpoint covers its audit entry,
    as a NATS subscriber to the checkpoint subject sees it arrive (signature checked), in s."""
    config = _gateway_config(directory, policy_dir=SAMPLE_DIR)
    gateway_id = config.gateway.gateway_id
    async with _nats(directory, nats_url) as url, Gateway(config, nats_url=url) as gateway:
        audit = gateway.audit
        if audit is None:
            raise RuntimeError("the audit log did not open")
        # The verifier key the gateway wrote beside its checkpoint key on first start.
        public = Path(config.nats.data_dir, "audit", f"{gateway_id}.pub")
        trusted = [Verifier.from_key_string((await asyncio.to_thread(public.read_text)).strip())]
        signed: list[tuple[float, int]] = []  # (arrival, tree size): sizes only grow
        arrived = asyncio.Event()

        async def on_checkpoint(message: Msg) -> None:
            at = time.perf_counter()
            text, _ = open_note(message.data, trusted)
            signed.append((at, Checkpoint.parse(text).size))
            arrived.set()

        servers, credentials = split_servers(url)
        observer = await nats.connect(servers, **credentials)
        await observer.subscribe(subjects.audit_checkpoints(gateway_id), cb=on_checkpoint)
        await observer.flush()
        client = DutyLinkClient(gateway.address, token=sample_tokens()[PUBLISHER])
        # (ack time, log size just after). One publish at a time and nothing else appending, so
        # an event's entry is leaf size - 1: covered by the first checkpoint of size >= size. An
        # entry appended by anything else meanwhile could only make the figure err high.
        acked: list[tuple[float, int]] = []
        started = time.perf_counter()
        for index, event in enumerate(_events(max(2, round(rate * seconds)))):
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            await client.publish(event)
            acked.append((time.perf_counter(), audit.size))
        async with asyncio.timeout(3 * config.audit.checkpoint_seconds + 10):
            while not signed or signed[-1][1] < acked[-1][1]:
                arrived.clear()
                await arrived.wait()
        await client.close()
        await observer.close()
    latencies = []
    covering = 0
    for at, size in acked:
        while signed[covering][1] < size:
            covering += 1
        # A checkpoint signed between the entry's append and the ack covers it at once.
        latencies.append(max(0.0, signed[covering][0] - at))
    return Latency.of(latencies)


async def _checkpoint_figures(settings: Settings) -> list[Figure]:
    runs = await _repeat(
        settings.runs,
        lambda d: _checkpoint_latency(
            d, rate=settings.checkpoint_rate, seconds=settings.seconds, nats_url=settings.nats_url
        ),
    )
    return [
        _figure(
            "checkpoint",
            "checkpoint latency p50, publish ack → signed checkpoint",
            "s",
            [r.p50 for r in runs],
        ),
        _figure(
            "checkpoint",
            "checkpoint latency p99",
            "s",
            [r.p99 for r in runs],
            target=Target(1.5, at_most=True),
        ),
    ]


# --- soak: memory and replicas (gateway.bench_soak) ---------------------------------------------


async def _soak_figures(settings: Settings) -> list[Figure]:
    """The memory run once (`rss_seconds` long: fitted after its 10 % warm-up),
    the replica comparison `runs` times. Both start their own embedded servers."""
    from gateway import bench_soak  # its own processes and cluster: loaded when asked for

    figures = []
    if settings.rss_seconds > 0:
        (memory,) = await _repeat(
            1,
            lambda d: bench_soak.rss_with_stalled_subscriber(
                d, seconds=settings.rss_seconds, rate=settings.rss_rate
            ),
        )
        load = f"{settings.rss_seconds / 60:g} min at {settings.rss_rate:,.0f} events/s"
        figures += [
            _figure(
                "soak",
                f"gateway RSS with a stalled subscriber, {load}: at the end",
                "MB",
                [memory.end_mb],
                ("start", [memory.start_mb]),
            ),
            _figure("soak", "gateway RSS peak", "MB", [memory.peak_mb]),
            _figure(
                "soak",
                "gateway RSS growth",
                "MB/min",
                [memory.slope_mb_per_min],
                target=Target(RSS_FLAT_MB_PER_MIN, at_most=True),
            ),
        ]
    scaling = await _repeat(
        settings.runs, lambda d: bench_soak.replica_scaling(d, count=settings.count)
    )
    figures.append(
        _figure(
            "soak",
            f"PublishBatch through 2 gateway replicas (3-node cluster, R3), {BATCH} per call",
            "events/s",
            [s.two_replicas for s in scaling],
            ("1 replica", [s.one_replica for s in scaling]),
        )
    )
    return figures


# --- all of it ---------------------------------------------------------------------------------

# Each group of sections and what measures it; `publish`, `policy` and `audit` share runs.
_GROUPS: tuple[tuple[frozenset[str], Callable[[Settings], Awaitable[list[Figure]]]], ...] = (
    (frozenset({"sync"}), _sync_figures),
    (frozenset({"publish", "policy", "audit"}), _throughput_figures),
    (frozenset({"latency"}), _latency_figures),
    (frozenset({"fanout"}), _fanout_figures),
    (frozenset({"checkpoint"}), _checkpoint_figures),
    (frozenset({"soak"}), _soak_figures),
)


async def run(settings: Settings = Settings()) -> list[Figure]:
    """The figures of the chosen sections, in SECTIONS order (`sync` only on embedded servers)."""
    unknown = settings.sections - set(SECTIONS)
    if unknown:
        raise ValueError(
            f"unknown section {', '.join(sorted(unknown))} (expected one of {', '.join(SECTIONS)})"
        )
    if settings.nats_url:
        settings = dataclasses.replace(settings, sections=settings.sections - {"sync"})
    figures: list[Figure] = []
    for sections, measure in _GROUPS:
        if sections & settings.sections:
            figures += await measure(settings)
    return figures


if __name__ == "__main__":  # `python -m gateway.bench echo [--port N]`: the echo baseline's server
    parser = argparse.ArgumentParser(prog="python -m gateway.bench")
    parser.add_argument("command", choices=["echo"])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    asyncio.run(_serve_echo(parser.parse_args().port))
