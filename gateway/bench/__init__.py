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

Events: incident reports on the exercise plane (`harness.incident_report`), each with a fresh
event id and a fresh incident id, so that with lifecycles enforced each opens a new incident (a
repeated incident id would be refused). An event refused for any reason but "not now"
(UNAVAILABLE and the like, which the overload figures count) ends the run with the reason: no
figure measures refusals.

Like for like: the raw publishers send the same event bytes the gateway stores (stamped with
source and receive time), with the gateway's headers (CloudEvents attributes, `Nats-Msg-Id`,
`Nats-Expected-Stream`) into a stream with the gateway's duplicate window. Gateway runs have
validation, the sample access policies and the audit log on unless a figure says otherwise.

Processes: as in production, each gateway measured runs as its own `dutylink serve` process
(`gateway.testkit.inprocess.GatewayProcess`, configured through DUTYLINK_* variables plus a generated
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
  in its own process unless `--in-process`; target >= 0.8x) and vs a raw relay (a grpc.aio
  server in its own process awaiting one acked JetStream publish per call, on its own fresh
  nats-server: the least a durable relay does; target >= 0.7x). All three are called by one
  client: the serialised PublishRequests of the same events, 16 in flight, on the same kind of
  channel (plaintext, the SDK's channel options) with the same bearer-token metadata. Beside
  them, the CPU each unary event cost each process (from /proc; not with `--in-process`): the
  gateway's vs the relay's per call, and nats-server's and the clients' in either run. Then
  gateway PublishBatch, 500 events per call, vs raw nats-py pipelined publishing
  (`publish_async`) of the same events (target >= 0.7x); Subscribe delivery + confirmed ack
  (`confirm_acks`: each ack also writes its DUTYLINK_ACKED record, and the client awaits every
  confirmation, up to 500 at once) vs delivery + plain ack in the same run.
- `policy`: PublishBatch and Subscribe delivery + ack (transport receiving the fire's exercise
  incidents, the reporter withheld) under the sample policies vs a permissive one-rule policy.
- `audit`: PublishBatch with the audit log on vs off (target >= 0.85x: overhead under 15 %).
- `guard`: the lifecycle guard's cost (`[gateway] enforce_lifecycles`, on in every other
  section, as by default): PublishBatch (500 per call) and Publish (16 in flight) with the guard
  on vs the same gateway with it off, alternating in the same runs (target for the batch >=
  0.85x: overhead under 15 %). Each event opens an incident of its own: one key-value read and
  one create.
- `latency`: end to end, publish -> subscriber delivery, p50/p99/max in ms, at 1,000 events/s
  (and p50/p99 at a quarter of that, below saturation) for `--seconds`: an open-loop publisher (event i is due at i/rate; unary Publish, up to 64
  calls in flight) and one subscriber of another agency acking each delivery. Latency is
  delivery time - the event's *scheduled* send time, so a stalled publisher shows up in the
  figures instead of hiding (coordinated omission). Baseline: raw nats-py, the same schedule of
  acked `js.publish` calls into a JetStream push consumer acking each message. Target: p99
  <= 10 ms.
- `lanes` (`gateway.bench.lanes`): an urgent event's delivery latency, p50 and p99 in ms, to an
  agency with a routine backlog of 12,000 events queued (40 Flash reports at 40/s by unary
  Publish while the agency drains the backlog, acking each delivery) vs the same with nothing
  queued (target: within 2x), and how much backlog was still queued at the last urgent event.
- `board` (`gateway.bench.board`): the duty board. Its update latency, p50 and p99 in ms: an
  open-loop publisher at 100 events/s for `--seconds` (unary Publish: incident reports, and
  an update and a verification of each a little later), each event's change arriving on the
  live board of transport's officer, logged in to the console (served beside `dutylink
  serve`, `[console] listen`) and reading its Server-Sent Events, - the event's scheduled
  send time; baseline: the same events' delivery to transport's plain Subscribe in the same
  run. Its rebuild: a fresh BoardFeed folding 100,000 stored events (reports, updates,
  verifications, closures, written as the gateway stores them) from the stream's first, in s
  per 100k events, vs Board.add alone over the same parsed events (no I/O). No target.
- `abuse`: one agency's unary Publish latency (open loop at 50 events/s for `--seconds`, ms
  from each call's scheduled time to its receipt), p50 and p99, while another agency keeps 4
  maximum-size PublishBatch calls in flight (1,000 events of ~4 KB: ~4 MB, about the largest
  request the gateway takes), vs the same agency alone just before, on the same gateway in the
  same run; the agency's calls that failed meanwhile (UNAVAILABLE after
  `publish_timeout_seconds`); and the abuser's stored events/s. No target: the ratio is the
  figure.
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
- `profile` (`gateway.bench.profile`): the national crypto profile (SM3 tree, SM2 checkpoints,
  SM4-GCM sealed personal fields) vs the international one, interleaved runs of the `publish`
  section's gateway: PublishBatch, Subscribe delivery + ack and unary Publish events/s (target:
  national >= 0.85x, at most 15 % slower), and one checkpoint signature, SM2 vs Ed25519 (ms).
- `soak` (`gateway.bench.soak`, gateways as subprocesses): the gateway's RSS over
  `--rss-seconds` at 500 events/s with one stalled subscriber, measured once (its figures are
  fitted over the run after a 10 % warm-up): at the end vs at the start, the peak, and the growth, the
  least-squares slope in MB/min (target: <= 0.5 MB/min, i.e. flat: under 5 MB over ten
  minutes); PublishBatch events/s through two gateway replicas vs one on a three-node R3
  cluster (`--runs` runs, no target: it depends on free cores).
- `workers` (`gateway.bench.workers`): PublishBatch events/s through one replica served as
  `dutylink serve --workers N` (N: the cores, at least 2) vs `--workers 1`, clients on 8
  connections in this process; the figure names the cores and N (target >= 1.6x).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable

from gateway.bench.abuse import abuse_figures
from gateway.bench.board import board_figures
from gateway.bench.checkpoint import checkpoint_figures
from gateway.bench.fanout import fanout_figures
from gateway.bench.figures import (
    COLUMNS,
    SECTIONS,
    Figure,
    Settings,
    Target,
    mode,
    table_rows,
    where,
)
from gateway.bench.guard import guard_figures
from gateway.bench.lanes import lanes_figures
from gateway.bench.latency import latency_figures
from gateway.bench.profile import profile_figures
from gateway.bench.raw import sync_figures
from gateway.bench.soak import soak_figures
from gateway.bench.throughput import throughput_figures
from gateway.bench.workers import workers_figures

__all__ = [
    "COLUMNS",
    "SECTIONS",
    "Figure",
    "Settings",
    "Target",
    "mode",
    "run",
    "table_rows",
    "where",
]

# Each group of sections and what measures it; `publish`, `policy` and `audit` share runs.
_GROUPS: tuple[tuple[frozenset[str], Callable[[Settings], Awaitable[list[Figure]]]], ...] = (
    (frozenset({"sync"}), sync_figures),
    (frozenset({"publish", "policy", "audit"}), throughput_figures),
    (frozenset({"guard"}), guard_figures),
    (frozenset({"latency"}), latency_figures),
    (frozenset({"lanes"}), lanes_figures),
    (frozenset({"board"}), board_figures),
    (frozenset({"abuse"}), abuse_figures),
    (frozenset({"fanout"}), fanout_figures),
    (frozenset({"checkpoint"}), checkpoint_figures),
    (frozenset({"profile"}), profile_figures),
    (frozenset({"soak"}), soak_figures),
    (frozenset({"workers"}), workers_figures),
)


async def run(
    settings: Settings | None = None, progress: Callable[[str], None] | None = None
) -> list[Figure]:
    """The figures of the chosen sections, in SECTIONS order (`sync` only on embedded servers);
    `dutylink bench`'s defaults when no settings are given. `progress` hears a line as each
    group of sections starts and ends (a full run takes minutes)."""
    settings = settings or Settings()
    unknown = settings.sections - set(SECTIONS)
    if unknown:
        raise ValueError(
            f"unknown section {', '.join(sorted(unknown))} (expected one of {', '.join(SECTIONS)})"
        )
    if settings.nats_url:
        settings = dataclasses.replace(settings, sections=settings.sections - {"sync"})
    figures: list[Figure] = []
    chosen = [(sections, measure) for sections, measure in _GROUPS if sections & settings.sections]
    for number, (sections, measure) in enumerate(chosen, start=1):
        names = ", ".join(name for name in SECTIONS if name in sections & settings.sections)
        if progress is not None:
            progress(f"[{number}/{len(chosen)}] {names}: measuring ({settings.runs} runs)")
        started = time.perf_counter()
        figures += await measure(settings)
        if progress is not None:
            progress(
                f"[{number}/{len(chosen)}] {names}: done in {time.perf_counter() - started:.0f} s"
            )
    return figures
