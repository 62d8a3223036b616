"""The JetStream stream registry: every stream DutyLink creates, as plain data.

The store builds its stream configurations from these specs; deploy configs, docs and the
durability check read the same names. Limits that come from configuration are passed in as
plain numbers (`StreamLimits`), so this module stays pure.
"""

from __future__ import annotations

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


# Every stream whose durability the gateway checks at start, in creation order.
DURABLE_STREAMS = (
    subjects.EVENTS_STREAM,
    subjects.DEADLETTER_STREAM,
    subjects.GRANTS_STREAM,
    subjects.ACKED_STREAM,
    subjects.AUDIT_STREAM,
)
