"""What every section of the benchmark uses: events, embedded servers, gateways (in this
process or their own), rate control, repeated interleaved runs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from dutylink.adapters.sdk.client import DutyLinkClient, Subscription
from dutylink.v1 import common_pb2, event_pb2, gateway_pb2, incident_pb2
from gateway.config import load
from gateway.console.app import serving
from gateway.console.state import ConsoleSettings
from gateway.core.settings import Agency, Config, CryptoProfileName
from gateway.server import Gateway
from gateway.store.nats_server import NatsServer
from gateway.testkit.inprocess import GatewayProcess

PAYLOAD = b"x" * 512
IN_FLIGHT = 16  # unary calls in flight, gateway and echo alike
BATCH = 500
OPEN_LOOP_IN_FLIGHT = 64  # enough unary calls in flight for the rate-driven publishers
PUBLISH_METHOD = "/dutylink.v1.PublisherService/Publish"
PUBLISHER = "fire"  # sample agencies: the fire publishes incidents ...
RECEIVER = "transport"  # ... that transport receives with the reporter withheld

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def incident_report(now: datetime) -> event_pb2.Event:
    """The bench's event: a fire's incident report on the exercise plane, restricted (the sample
    policy lets transport receive it with the reporter withheld), with every field the
    validator and the catalogue require. Its id and incident id are set per event."""
    event = event_pb2.Event(
        type="incident.reported",
        jurisdiction=common_pb2.Jurisdiction(division_code="310115"),
        classification=event_pb2.CLASSIFICATION_RESTRICTED,
        plane=event_pb2.PLANE_EXERCISE,
        priority=event_pb2.PRIORITY_FLASH,
    )
    event.time.FromDatetime(now)
    incident = event.incident
    incident.category = incident_pb2.INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS
    incident.severity = incident_pb2.INCIDENT_SEVERITY_LARGE
    incident.status = incident_pb2.INCIDENT_STATUS_REPORTED
    incident.location.point.latitude, incident.location.point.longitude = 31.2397, 121.4998
    incident.location.address = "Solvent store, 88 Huaxia Road, chemical industry park"
    incident.location.jurisdiction.division_code = "310115"
    incident.title = "Fire at a solvent store, chemical industry park"
    incident.description = "Toluene drums burning; black smoke drifting south-west."
    incident.casualties.injured, incident.casualties.trapped = 3, 2
    incident.reporter.name = "Li Wei"
    incident.reporter.phone = "13900000000"
    incident.reporter.channel = incident_pb2.REPORT_CHANNEL_HOTLINE_119
    incident.involved_agencies.extend(["fire", "police", "health", "emergency"])
    incident.reported_at.FromDatetime(now)
    return event


def renew(event: event_pb2.Event, name: str) -> None:
    """A new event id and a new incident: under enforced lifecycles each report opens its own
    incident (one key-value read and one create), where a repeated incident id is refused."""
    event.id = name
    event.subject = event.correlation_id = event.incident.incident_id = f"INC-{name}"


def make_events(count: int) -> list[event_pb2.Event]:
    """`count` incident reports, each with a fresh event id and a fresh incident."""
    template = incident_report(datetime.now(UTC))
    prefix = f"bench-{time.time_ns()}"
    events = []
    for index in range(count):
        event = event_pb2.Event()
        event.CopyFrom(template)
        renew(event, f"{prefix}-{index}")
        events.append(event)
    return events


# Answers that say "not now" (deadline, resource exhausted, aborted, unavailable), which a
# figure under overload may count; any other refusal means the bench sent what it should not.
RETRYABLE_CODES = frozenset({4, 8, 10, 14})


def refusals(results: Sequence[gateway_pb2.PublishResult], *, but_retryable: bool = False) -> str:
    """ "" when every event of a PublishBatch was stored (`but_retryable`: or refused only as
    retryable); otherwise how many were refused and the first reason, so that no figure
    silently measures refusals (a lifecycle's FAILED_PRECONDITION above all)."""
    refused = [
        r.error
        for r in results
        if r.HasField("error") and not (but_retryable and r.error.code in RETRYABLE_CODES)
    ]
    if not refused:
        return ""
    first = refused[0]
    return f"{len(refused)} of {len(results)} events refused (code {first.code}: {first.message})"


@contextlib.asynccontextmanager
async def nats_at(directory: Path, url: str, *, sync_always: bool = True) -> AsyncIterator[str]:
    """`url`, or a fresh embedded server in `directory` for the duration of the block."""
    if url:
        yield url
        return
    async with NatsServer(directory / "nats", sync_always=sync_always) as server:
        yield server.url


def gateway_config(
    directory: Path,
    *,
    policy_dir: Path,
    audit: bool = True,
    enforce_lifecycles: bool = True,
    agencies: tuple[Agency, ...] = (),
    crypto_profile: CryptoProfileName = "international",
) -> Config:
    """Defaults with this policy, audit switch and lifecycle guard switch, on a free port, with a fresh gateway id and
    the gateway's files (audit keys) in the run's directory: never a real deployment's
    `.dutylink`, its port or its audit log. `agencies` replace the sample agencies."""
    config = load(None, environ={})
    return dataclasses.replace(
        config,
        gateway=dataclasses.replace(
            config.gateway,
            listen="127.0.0.1:0",
            gateway_id=unique("bench"),
            enforce_lifecycles=enforce_lifecycles,
        ),
        nats=dataclasses.replace(config.nats, data_dir=str(directory / "gateway")),
        policy=dataclasses.replace(config.policy, dir=str(policy_dir)),
        audit=dataclasses.replace(config.audit, enabled=audit, crypto_profile=crypto_profile),
        agencies=agencies or config.agencies,
        agencies_source="dutylink bench" if agencies else config.agencies_source,
    )


@contextlib.asynccontextmanager
async def gateway_at(config: Config, nats_url: str, *, in_process: bool) -> AsyncIterator[str]:
    """The address of a gateway serving `config` (as `gateway_config` makes it) on `nats_url`:
    in this process, or as its own `dutylink serve` process with the same agencies, policy,
    audit and lifecycle guard switches, gateway id and data directory (stopped with SIGTERM after the block).
    With `console.listen` set, the web console is served beside it, as `dutylink serve` does."""
    if in_process:
        async with Gateway(config, nats_url=nats_url) as gateway, _console_beside(config, gateway):
            yield gateway.address
        return
    data_dir = Path(config.nats.data_dir)
    config_file = data_dir.with_name(f"{data_dir.name}.toml")  # beside it, in the run's directory
    agencies = "".join(
        f"[[agencies]]\nid = {json.dumps(a.id)}\nname = {json.dumps(a.name)}\n"
        f"token = {json.dumps(a.token.get_secret_value())}\nroles = {json.dumps(list(a.roles))}\n\n"
        for a in config.agencies
    )
    await asyncio.to_thread(config_file.write_text, agencies, "utf-8")
    process = GatewayProcess(
        nats_url,
        data_dir,
        gateway_id=config.gateway.gateway_id,
        policy_dir=Path(config.policy.dir),
        env={
            "DUTYLINK_AUDIT_ENABLED": str(config.audit.enabled).lower(),
            "DUTYLINK_GATEWAY_ENFORCE_LIFECYCLES": str(config.gateway.enforce_lifecycles).lower(),
            "DUTYLINK_AUDIT_CRYPTO_PROFILE": config.audit.crypto_profile,
            **({"DUTYLINK_CONSOLE_LISTEN": config.console.listen} if config.console.listen else {}),
        },
        log_level="error",
        config_file=config_file,
    )
    async with process:
        yield process.address


@contextlib.asynccontextmanager
async def _console_beside(config: Config, gateway: Gateway) -> AsyncIterator[None]:
    """The console of `config.console.listen` for an in-process gateway (none when empty)."""
    if not config.console.listen:
        yield
        return
    address = gateway.address
    settings = ConsoleSettings(connect=lambda token: DutyLinkClient(address, token=token))
    host, _, port = config.console.listen.rpartition(":")
    async with serving(settings, host, int(port)):
        yield


async def rate_in_flight(
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


async def open_loop(
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


async def until(done: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not done():  # noqa: ASYNC110 (counters that many tasks update)
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise RuntimeError(f"bench: {what} did not happen within {timeout:g} s") from None


async def cancel_all(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def acking(subscription: Subscription, note: Callable[[gateway_pb2.Delivery], None]) -> None:
    """Note and ack every delivery, until cancelled. An ack is never cut off halfway: gRPC
    cancels the whole stream when a write is cancelled."""
    async for delivery in subscription:
        note(delivery)
        await asyncio.shield(subscription.ack(delivery))


def slope(points: Sequence[tuple[float, float]]) -> float:
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
class Series(Generic[T]):
    """One measurement and its samples, one per run."""

    measure: Callable[[Path], Awaitable[T]]
    samples: list[T] = field(default_factory=list)


async def interleave(runs: int, series: Sequence[Series[Any]]) -> None:
    """Every measurement once per run, in order on even runs and reversed on odd ones (AB BA
    AB ...), so drift and machine noise hit all alike and none always runs first (warm caches,
    CPU frequency); each in a fresh temporary directory."""
    for index in range(runs):
        for one in series if index % 2 == 0 else series[::-1]:
            with tempfile.TemporaryDirectory(prefix="dutylink-bench-") as directory:
                one.samples.append(await one.measure(Path(directory)))


async def repeat(runs: int, measure: Callable[[Path], Awaitable[T]]) -> list[T]:
    series = Series(measure)
    await interleave(runs, [series])
    return series.samples


def _stat(path: Path) -> list[str]:
    """A /proc/<pid>/stat's fields after the command name (which may hold spaces): the state
    first, then the parent's pid, ..., user and system CPU ticks at 11 and 12."""
    return path.read_text(encoding="ascii").rpartition(")")[2].split()


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process `pid` has used so far, from /proc."""
    return _cpu(_stat(Path(f"/proc/{pid}/stat")))


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this process ("clients") and by its child processes that
    are a nats-server ("nats-server"), a baseline server of `python -m gateway.bench`
    ("baseline") or a `dutylink serve` ("gateway"), from /proc: no role where there is no
    such child (an in-process gateway, a NATS of `--nats-url`)."""
    used = {"clients": time.process_time()}
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat(stat)
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, UnicodeDecodeError):  # gone meanwhile, or not ours to read
            continue
        if fields[1] != me:  # the parent's pid
            continue
        if Path(command[0].decode(errors="replace")).name == "nats-server":
            role = "nats-server"
        elif b"gateway.bench" in command:
            role = "baseline"
        elif b"serve" in command:
            role = "gateway"
        else:
            continue
        used[role] = used.get(role, 0.0) + _cpu(fields)
    return used


@dataclass(frozen=True)
class Measured:
    """A closed loop's calls per second, and the CPU each call cost each process role."""

    rate: float
    cpu_ms: dict[str, float]  # CPU ms per call by role (cpu_by_role)


async def measured(count: int, run: Awaitable[float]) -> Measured:
    """`run` (the rate of `count` calls) with the CPU each process role used meanwhile."""
    before = cpu_by_role()
    rate = await run
    after = cpu_by_role()
    used = {role: 1000 * (after[role] - before.get(role, 0.0)) / count for role in after}
    return Measured(rate, used)
