"""The `board` section: how soon an event shows on an officer's live duty board, and how long
a replica takes to rebuild the board from the event stream.

Live: the gateway runs as `dutylink serve` with its console beside it (`[console] listen`, as
deployed); transport's officer logs in to the console over HTTP with transport's token and
reads the live board (`/api/events`, Server-Sent Events relayed from WatchBoard), while a
plain gRPC Subscribe of transport acks every delivery. Fire publishes by unary Publish on an
open-loop schedule of `Settings.board_rate` per second for `--seconds`: each incident's report,
then, `FOLLOW_UP_LAG` incidents later, an update, and as many later its verification (each
sent only once the incident's previous event was accepted, as the lifecycle guard needs).
Each event changes its incident once, in stream order, so the incident's n-th change on the
board is its n-th event; latency is the time that change arrives - the event's *scheduled*
send time (coordinated omission, as in the `latency` section), beside the same events'
Subscribe delivery in the same run.

Rebuild: `Settings.board_events` events as the gateway stores them (subject, bytes, headers:
gateway.core.admission.stored_form; incidents of `REBUILD_STEPS` events each, interleaved)
written by pipelined nats-py publishes into the event stream the gateway's store creates; then
a fresh BoardFeed on a fresh connection folds it from the first event until `folded_up_to`
reaches the last. Baseline: Board.add alone over the same events, parsed beforehand (no I/O).
Both in seconds per 100,000 events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2, gateway_pb2, incident_pb2
from gateway.bench.figures import Figure, Settings, make_figure
from gateway.bench.harness import (
    OPEN_LOOP_IN_FLIGHT,
    PUBLISHER,
    RECEIVER,
    Latency,
    Series,
    acking,
    cancel_all,
    gateway_at,
    gateway_config,
    interleave,
    make_events,
    nats_at,
    open_loop,
    unique,
    until,
)
from gateway.config import sample_tokens
from gateway.core import envelope, subjects
from gateway.core.admission import stored_form
from gateway.core.projections.board import Board
from gateway.store.board_feed import BoardFeed
from gateway.store.jetstream import EventStore
from gateway.testkit.inprocess import free_port

FOLLOW_UP_LAG = 10  # incidents reported between an incident's report and its update
WARM_UP = 5  # reports before the measured ones: connections, consumers, the console's stream
PER_100K = 100_000
# An incident as the rebuild's stream holds it: reported, updated, verified, updated, closed.
REBUILD_STEPS = (
    ("incident.reported", incident_pb2.INCIDENT_STATUS_REPORTED),
    ("incident.updated", incident_pb2.INCIDENT_STATUS_REPORTED),
    ("incident.verified", incident_pb2.INCIDENT_STATUS_VERIFIED),
    ("incident.updated", incident_pb2.INCIDENT_STATUS_VERIFIED),
    ("incident.closed", incident_pb2.INCIDENT_STATUS_CLOSED),
)
INTERLEAVED = 100  # incidents whose events the rebuild's stream interleaves, step by step
FOLD_TIMEOUT = 600.0


def follow_up(report: event_pb2.Event, event_type: str, status: int, step: int) -> event_pb2.Event:
    """A later event of the report's incident: the incident as it stands, with a new id (and,
    for an update, a new count of casualties)."""
    event = event_pb2.Event()
    event.CopyFrom(report)
    event.id = f"{report.id}-{step}"
    event.type = event_type
    event.incident.status = status  # type: ignore[assignment]
    event.incident.casualties.injured += step
    event.time.FromDatetime(datetime.now(UTC))
    return event


def live_mix(incidents: int) -> list[event_pb2.Event]:
    """Each incident's report, update and verification, in sending order: the update
    FOLLOW_UP_LAG reports after its own report, the verification as many after the update."""
    reports = make_events(incidents)
    updated = [follow_up(r, "incident.updated", incident_pb2.INCIDENT_STATUS_REPORTED, 1) for r in reports]  # fmt: skip
    verified = [follow_up(r, "incident.verified", incident_pb2.INCIDENT_STATUS_VERIFIED, 2) for r in reports]  # fmt: skip
    mix = []
    for index in range(incidents + 2 * FOLLOW_UP_LAG):
        for events, late in ((reports, 0), (updated, FOLLOW_UP_LAG), (verified, 2 * FOLLOW_UP_LAG)):
            if 0 <= index - late < incidents:
                mix.append(events[index - late])
    return mix


def rebuild_mix(count: int) -> list[event_pb2.Event]:
    """`count` events of incidents of REBUILD_STEPS each (those of the last block may stop
    early), the steps of INTERLEAVED incidents at a time taken in turns, as concurrent
    incidents arrive."""
    per_incident = len(REBUILD_STEPS)
    reports = make_events(-(-count // per_incident))
    mix: list[event_pb2.Event] = []
    for low in range(0, len(reports), INTERLEAVED):
        block = reports[low : low + INTERLEAVED]
        for step, (event_type, status) in enumerate(REBUILD_STEPS):
            mix += [r if step == 0 else follow_up(r, event_type, status, step) for r in block]
    return mix[:count]


# --- the live board -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardLatency:
    board: Latency  # to the change on the console's live board
    subscribe: Latency  # to the same event's Subscribe delivery


async def _log_in(http: aiohttp.ClientSession, console: str, token: str) -> None:
    """The officer's login (the console checks the token with the gateway); the console opens
    just after the gateway says it is serving."""
    async with asyncio.timeout(30):
        while True:
            try:
                async with http.post(
                    f"{console}/login", data={"token": token}, allow_redirects=False
                ) as response:
                    if response.status != 303:
                        raise RuntimeError(
                            f"bench: the console refused the login ({response.status})"
                        )
                    return
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)


async def _read_board(stream: aiohttp.ClientResponse, changes: dict[str, list[float]]) -> None:
    """Note when each incident's changes arrive on the live board, until cancelled."""
    async for line in stream.content:
        if line.startswith(b"event: failure"):
            raise RuntimeError("bench: the console's live board failed")
        if line.startswith(b"data: "):
            incident = json.loads(line[6:]).get("incident")
            if incident is not None:
                changes.setdefault(incident["incident_id"], []).append(time.perf_counter())


async def _ready(stream: aiohttp.ClientResponse) -> None:
    if stream.status != 200:
        raise RuntimeError(f"bench: the console's live board answered {stream.status}")
    async with asyncio.timeout(30):
        while (line := await stream.content.readline()) != b"event: ready\n":
            if not line:
                raise RuntimeError("bench: the console's live board ended before it was ready")


async def _board_latency(
    directory: Path, *, rate: float, seconds: float, nats_url: str, in_process: bool
) -> BoardLatency:
    config = gateway_config(directory, policy_dir=SAMPLE_DIR)
    listen = f"127.0.0.1:{free_port()}"
    config = dataclasses.replace(config, console=dataclasses.replace(config.console, listen=listen))
    tokens = sample_tokens()
    changes: dict[str, list[float]] = {}  # incident id -> arrival of each of its changes
    delivered: dict[str, float] = {}  # event id -> its Subscribe delivery

    def note(delivery: gateway_pb2.Delivery) -> None:
        delivered.setdefault(delivery.event.id, time.perf_counter())

    # unsafe: the jar keeps the session cookie of an IP address (127.0.0.1), as a browser does
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        nats_at(directory, nats_url) as url,
        gateway_at(config, url, in_process=in_process) as address,
        DutyLinkClient(address, token=tokens[PUBLISHER]) as sender,
        DutyLinkClient(address, token=tokens[RECEIVER]) as receiver,
        aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=None)) as http,
    ):
        console = f"http://{listen}"
        await _log_in(http, console, tokens[RECEIVER])
        subscription = receiver.subscribe(
            unique("board"), families=["incident"], planes=[event_pb2.PLANE_EXERCISE]
        )
        async with (
            subscription,
            http.get(f"{console}/api/events?plane=EXERCISE") as stream,
        ):
            await _ready(stream)
            tasks = (
                asyncio.create_task(_read_board(stream, changes)),
                asyncio.create_task(acking(subscription, note)),
            )
            try:
                events, start = await _publish(sender, rate, seconds, changes, delivered)
            finally:
                await cancel_all(*tasks)
    scheduled = [start + i / rate for i in range(len(events))]
    seen: dict[str, int] = {}
    on_board, on_subscription = [], []
    for event, due in zip(events, scheduled, strict=True):
        nth = seen[event.incident.incident_id] = seen.get(event.incident.incident_id, -1) + 1
        on_board.append((changes[event.incident.incident_id][nth] - due) * 1000)
        on_subscription.append((delivered[event.id] - due) * 1000)
    return BoardLatency(Latency.of(on_board), Latency.of(on_subscription))


async def _publish(
    sender: DutyLinkClient,
    rate: float,
    seconds: float,
    changes: dict[str, list[float]],
    delivered: dict[str, float],
) -> tuple[list[event_pb2.Event], float]:
    """Warm up, then the live mix on the open-loop schedule until every event is on the board
    and delivered; the events measured and the schedule's start."""
    for event in make_events(WARM_UP):
        await sender.publish(event)
    await until(lambda: len(changes) >= WARM_UP and len(delivered) >= WARM_UP, 30, "the warm-up")
    events = live_mix(max(2, round(rate * seconds / 3)))
    accepted = {event.id: asyncio.Event() for event in events}
    previous: dict[str, str] = {}  # event id -> the id of its incident's event before it
    last_of: dict[str, str] = {}
    for event in events:
        if (before := last_of.get(event.incident.incident_id)) is not None:
            previous[event.id] = before
        last_of[event.incident.incident_id] = event.id

    async def send(index: int) -> None:
        event = events[index]
        if event.id in previous:
            await accepted[previous[event.id]].wait()  # the lifecycle needs it in order
        await sender.publish(event)  # raises on a refusal, ending the run
        accepted[event.id].set()

    start = await open_loop(rate, len(events), send, in_flight=OPEN_LOOP_IN_FLIGHT)
    expected = len(events) + WARM_UP
    await until(
        lambda: sum(map(len, changes.values())) >= expected and len(delivered) >= expected,
        30 + seconds,
        "every change on the board and every delivery",
    )
    return events, start


# --- the rebuild --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuild:
    feed_seconds: float  # per 100,000 events: BoardFeed from the stream's first event
    fold_seconds: float  # per 100,000 events: Board.add alone


async def _fill(
    config_dir: Path, url: str, messages: Sequence[tuple[str, bytes, dict[str, str]]]
) -> None:
    """The messages into the gateway's event stream (created as the gateway creates it), by
    pipelined publishes: the way a busy gateway's PublishBatch writes them."""
    store = EventStore(gateway_config(config_dir, policy_dir=SAMPLE_DIR))
    await store.connect(url)
    try:
        await store.ensure_streams()
        js = store.connection.js
        expected = {"Nats-Expected-Stream": subjects.EVENTS_STREAM}
        futures = [
            await js.publish_async(subject, data, headers={**headers, **expected})
            for subject, data, headers in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await store.close()


async def _rebuild(directory: Path, *, count: int, nats_url: str) -> Rebuild:
    received = datetime.now(UTC)
    events = [envelope.stamped(e, PUBLISHER, received) for e in rebuild_mix(count)]
    messages = [stored_form(event) for event in events]
    async with nats_at(directory, nats_url) as url:
        await _fill(directory, url, messages)
        store = EventStore(gateway_config(directory, policy_dir=SAMPLE_DIR))
        await store.connect(url)
        feed = BoardFeed()
        try:
            state = (await store.connection.js.stream_info(subjects.EVENTS_STREAM)).state
            started = time.perf_counter()
            await feed.follow(store.connection.js)
            if not await feed.folded_up_to(state.last_seq, FOLD_TIMEOUT):
                raise RuntimeError(f"bench: the board did not fold {state.messages:,} events")
            feed_seconds = time.perf_counter() - started
        finally:
            await feed.stop()
            await store.close()
    parsed = [event_pb2.Event.FromString(data) for _, data, _ in messages]
    board = Board()
    started = time.perf_counter()
    for sequence, event in enumerate(parsed, start=1):
        board.add(sequence, event)
    fold_seconds = time.perf_counter() - started
    # A shared stream (`--nats-url`) may hold more than this run wrote: the feed folds it all.
    return Rebuild(feed_seconds * PER_100K / state.messages, fold_seconds * PER_100K / len(parsed))


async def board_figures(settings: Settings) -> list[Figure]:
    rate, seconds, url = settings.board_rate, settings.seconds, settings.nats_url
    live = Series(
        lambda d: _board_latency(
            d, rate=rate, seconds=seconds, nats_url=url, in_process=settings.in_process
        )
    )
    rebuild = Series(lambda d: _rebuild(d, count=settings.board_events, nats_url=url))
    await interleave(settings.runs, [live, rebuild])
    baseline = "Subscribe delivery"
    return [
        make_figure(
            "board",
            f"board update latency p50, publish → console live board at {rate:,.0f} events/s",
            "ms",
            [r.board.p50 for r in live.samples],
            (baseline, [r.subscribe.p50 for r in live.samples]),
        ),
        make_figure(
            "board",
            "board update latency p99",
            "ms",
            [r.board.p99 for r in live.samples],
            (baseline, [r.subscribe.p99 for r in live.samples]),
        ),
        make_figure(
            "board",
            f"board rebuild from the stream, BoardFeed over {settings.board_events:,} events",
            "s per 100k events",
            [r.feed_seconds for r in rebuild.samples],
            ("Board.add alone", [r.fold_seconds for r in rebuild.samples]),
        ),
    ]
