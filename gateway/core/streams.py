"""The JetStream registry: every stream, key-value bucket and internal consumer DutyLink
declares, as plain data.

The store builds its stream configurations from these specs (gateway.store.streams), its buckets
from `BucketSpec` (gateway.store.kv) and its internal consumers from `ConsumerSpec`
(gateway.store.consumers); deploy configs, docs and the durability check read the same names.
Limits that come from configuration are passed in as plain numbers (`StreamLimits`), so this
module stays pure.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from gateway.core import subjects

DAY = 24 * 3600.0


@dataclass(frozen=True)
class StreamSpec:
    """One stream's settings, as JetStream takes them."""

    name: str
    description: str
    subjects: tuple[str, ...]
    replicas: int
    max_age_seconds: float  # 0: kept for ever
    max_bytes: int | None = None  # None: no byte limit
    duplicate_window_seconds: float = 0  # 0: the server's default
    max_msg_size: int = -1  # -1: no limit
    max_msgs_per_subject: int = -1  # -1: no limit
    storage: str = "file"
    retention: str = "limits"
    discard: str = "new"
    deny_delete: bool = True
    deny_purge: bool = True
    allow_rollup: bool = False


@dataclass(frozen=True)
class StreamLimits:
    """The configured limits the event-side streams take (from `nats.*` and friends)."""

    replicas: int
    events_max_age_days: float
    events_max_bytes: int
    deadletter_max_age_days: float
    ack_record_seconds: float
    duplicate_window_seconds: float
    max_msg_size: int


def event_stream_specs(limits: StreamLimits) -> tuple[StreamSpec, ...]:
    """The streams the gateway creates at every start (the audit stream has its own owner)."""
    return (
        StreamSpec(
            name=subjects.EVENTS_STREAM,
            description="DutyLink events, by plane, family, type and jurisdiction",
            subjects=(f"{subjects.EVENTS_PREFIX}.>", f"{subjects.REDELIVER_PREFIX}.>"),
            max_age_seconds=limits.events_max_age_days * DAY,
            max_bytes=limits.events_max_bytes,
            replicas=limits.replicas,
            duplicate_window_seconds=limits.duplicate_window_seconds,
            max_msg_size=limits.max_msg_size,
        ),
        StreamSpec(
            name=subjects.DEADLETTER_STREAM,
            description="Events a subscription failed to handle, kept for inspection and replay",
            subjects=(f"{subjects.DEADLETTER_PREFIX}.>",),
            max_age_seconds=limits.deadletter_max_age_days * DAY,
            max_bytes=-1,
            replicas=limits.replicas,
            duplicate_window_seconds=limits.duplicate_window_seconds,
            max_msg_size=limits.max_msg_size,
        ),
        StreamSpec(
            name=subjects.GRANTS_STREAM,
            description="Break-glass declarations, kept for the mandatory review",
            subjects=(f"{subjects.GRANTS_PREFIX}.>",),
            max_age_seconds=limits.deadletter_max_age_days * DAY,
            max_bytes=-1,
            replicas=limits.replicas,
            duplicate_window_seconds=limits.duplicate_window_seconds,
            max_msg_size=limits.max_msg_size,
        ),
        StreamSpec(
            name=subjects.POLICIES_STREAM,
            description="Each access policy put in force (when, by which replica) and its files",
            subjects=(f"{subjects.POLICIES_PREFIX}.>",),
            max_age_seconds=0,  # as-of replay needs the policy of any time the events reach
            max_bytes=-1,
            replicas=limits.replicas,
            duplicate_window_seconds=limits.duplicate_window_seconds,
            max_msg_size=limits.max_msg_size,
        ),
        StreamSpec(
            name=subjects.ACKED_STREAM,
            description="Acks confirmed to subscribers, seen by every replica",
            subjects=(f"{subjects.ACKED_PREFIX}.>",),
            max_age_seconds=limits.ack_record_seconds,
            max_bytes=-1,
            replicas=limits.replicas,
            duplicate_window_seconds=limits.duplicate_window_seconds,
            max_msg_size=limits.max_msg_size,
        ),
    )


def audit_stream_spec(replicas: int) -> StreamSpec:
    """The audit log's stream. No age limit: leaf i is the i-th stored entry, so nothing may
    ever age out (the law asks for at least 180 days; archiving is `dutylink audit export`)."""
    return StreamSpec(
        name=subjects.AUDIT_STREAM,
        description="Audit entries and signed checkpoints of every gateway replica",
        subjects=(f"{subjects.AUDIT_PREFIX}.>",),
        replicas=replicas,
        max_age_seconds=0,
    )


def writers_stream_spec(replicas: int, lease_seconds: float) -> StreamSpec:
    """The writer leases (gateway.store.writer_lease): one message per gateway id, the last
    holder's, gone once it is older than a lease."""
    return StreamSpec(
        name=subjects.WRITERS_STREAM,
        description="Which gateway process writes each gateway id's audit log",
        subjects=(f"{subjects.WRITERS_PREFIX}.>",),
        replicas=replicas,
        max_age_seconds=lease_seconds,
        max_msgs_per_subject=1,
        discard="old",
    )


# Every stream whose durability the gateway checks at start, in creation order.
DURABLE_STREAMS = (
    subjects.EVENTS_STREAM,
    subjects.DEADLETTER_STREAM,
    subjects.GRANTS_STREAM,
    subjects.POLICIES_STREAM,
    subjects.ACKED_STREAM,
    subjects.AUDIT_STREAM,
)


# --- key-value buckets (gateway.core.kv is the port, gateway.store.kv the JetStream edge) ------

# Aggregate state of the linked-duty workflows (lifecycles, ledger), one key per aggregate.
AGGREGATES_BUCKET = "DUTYLINK_AGGREGATES"
_BUCKET = re.compile(r"[a-zA-Z0-9_-]+")


@dataclass(frozen=True)
class BucketSpec:
    """One bucket's settings. Always file storage: accepted transitions survive a restart.
    `history`: revisions kept per key (1 to 64); `replicas`: 3 on a cluster keeps it through
    one node's lost disk; `max_value_bytes`: a value larger is refused; `max_batch_writes`: the
    most writes one atomic batch holds (JetStream's limit on an atomic batch is 1,000)."""

    name: str
    description: str = ""
    history: int = 1
    replicas: int = 1
    max_value_bytes: int = 64 * 1024
    max_batch_writes: int = 1000

    def __post_init__(self) -> None:
        if not _BUCKET.fullmatch(self.name):
            raise ValueError(f"invalid bucket name {self.name!r}: expected [a-zA-Z0-9_-]+")
        if not 1 <= self.history <= 64:
            raise ValueError(f"bucket history: expected 1 to 64, got {self.history}")
        if self.replicas < 1 or self.max_value_bytes < 1:
            raise ValueError("bucket replicas and max_value_bytes must be positive")
        if not 1 <= self.max_batch_writes <= 1000:
            raise ValueError(
                f"bucket max_batch_writes: expected 1 to 1000, got {self.max_batch_writes}"
            )


# --- internal consumers (run by gateway.store.consumers.ConsumerRunner) -----------------------

_DURABLE_NAME = re.compile(r"[a-zA-Z0-9_-]+")


class Mode(enum.Enum):
    EVERY_REPLICA = "every replica"
    ONE_REPLICA = "one replica"


@dataclass(frozen=True)
class ConsumerSpec:
    """One internal consumer. `durable`: its name ([a-zA-Z0-9_-]); `ack_wait`: seconds after
    which JetStream delivers again a message whose runner died (a live runner's slow handler
    keeps its message); `backoff`: seconds
    before each redelivery after a failure (the last repeated); `replay_on_start`
    (EVERY_REPLICA only): each start reads the stream from its beginning again, for a
    projection held in memory that a restart lost."""

    stream: str
    filter_subject: str
    durable: str
    mode: Mode
    max_deliveries: int = 5
    backoff: tuple[float, ...] = (0.5, 2.0, 10.0)
    ack_wait: float = 30.0
    poll_seconds: float = 1.0
    replay_on_start: bool = False
    # Created reading from the stream's end (not its beginning): for a consumer added to a
    # running exchange that must not act on its history (the deadline tracker).
    from_new: bool = False

    def __post_init__(self) -> None:
        if self.max_deliveries < 1 or not self.backoff or self.poll_seconds <= 0:
            raise ValueError("max_deliveries, backoff and poll_seconds must be positive")
        if self.replay_on_start and self.mode is Mode.ONE_REPLICA:
            raise ValueError("replay_on_start would make one replica replay for all of them")

    def durable_for(self, replica: str) -> str:
        name = self.durable if self.mode is Mode.ONE_REPLICA else f"{self.durable}_{replica}"
        if not _DURABLE_NAME.fullmatch(name):
            raise ValueError(f"consumer name {name!r}: expected [a-zA-Z0-9_-]+")
        return name

    def delay_after(self, failures: int) -> float:
        return self.backoff[min(failures, len(self.backoff)) - 1]


# The deadline tracker (gateway.store.tracker): every stored event, once among the replicas.
# It fails only while the store is away, so it tries for about half an hour before giving up on
# an event (which is then logged, and its message untracked).
TRACKER_CONSUMER = ConsumerSpec(
    stream=subjects.EVENTS_STREAM,
    filter_subject=f"{subjects.EVENTS_PREFIX}.>",
    durable="DUTYLINK_TRACKER",
    mode=Mode.ONE_REPLICA,
    max_deliveries=40,
    backoff=(0.5, 2.0, 10.0, 60.0),
    from_new=True,
)
