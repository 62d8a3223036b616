"""The one place that names DutyLink's JetStream streams, subjects and consumers.

Event subjects (one token per routing attribute, so consumers filter on the server):

    dutylink.events.<plane>.<family>.<name>.<province>.<city>.<county>[.urgent]
    e.g. dutylink.events.actual.incident.reported.31.01.15   (type incident.reported, 310115)

An urgent event (gateway.core.lanes) has a trailing `urgent` token: a subscription's filters
select the routine lane, the same filters with `.urgent` appended its urgent lane, each read by
a consumer of its own. Routine subjects keep the layout they had before lanes existed, so
events stored earlier are still delivered and no filter counts twice.

The 6-digit GB/T 2260 division code is split into its three 2-digit levels, so a
jurisdiction prefix ("3101") becomes a subject filter ("31.01.*"). Each subscription also
listens on its own redelivery subject, where dead letters are replayed to it alone:

    dutylink.redeliver.<agency>.<subscription>

Dead letters are kept per subscription on `dutylink.deadletter.<agency>.<subscription>`;
break-glass declarations on `dutylink.grants.<grant id>`; each policy a replica put in force on
`dutylink.policies.loaded` and each version's files on `dutylink.policies.texts.<version>`; each gateway replica's audit log on
`dutylink.audit.<gateway id>.entries`, its signed checkpoints on `….checkpoints`, and where its
start-up check of the event stream ended on `….witnessed` (see gateway.audit.witness).
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dutylink.policies import model
from dutylink.v1 import event_pb2
from gateway.core.lanes import Lane

EVENTS_STREAM = "DUTYLINK_EVENTS"
DEADLETTER_STREAM = "DUTYLINK_DEADLETTER"
GRANTS_STREAM = "DUTYLINK_GRANTS"
AUDIT_STREAM = "DUTYLINK_AUDIT"
ACKED_STREAM = "DUTYLINK_ACKED"
AUDIT_PREFIX = "dutylink.audit"
GRANTS_PREFIX = "dutylink.grants"
EVENTS_PREFIX = "dutylink.events"
REDELIVER_PREFIX = "dutylink.redeliver"
DEADLETTER_PREFIX = "dutylink.deadletter"
ACKED_PREFIX = "dutylink.acked"
# Every policy a replica put in force, and the files of each version (as-of replay).
POLICIES_STREAM = "DUTYLINK_POLICIES"
POLICIES_PREFIX = "dutylink.policies"
POLICIES_LOADED = f"{POLICIES_PREFIX}.loaded"
# One message per gateway id: which process may append to that gateway id's audit log.
WRITERS_STREAM = "DUTYLINK_WRITERS"
WRITERS_PREFIX = "dutylink.writers"

FAMILIES = model.FAMILIES  # the payload families, defined once with the policy vocabulary
PLANE_TOKENS: dict[int, str] = {
    event_pb2.PLANE_ACTUAL: "actual",
    event_pb2.PLANE_EXERCISE: "exercise",
    event_pb2.PLANE_TEST: "test",
}


class FilterTooBroadError(ValueError):
    """A subscription filter expands to more subject filters than the gateway allows."""


def event_subject(
    plane: int, event_type: str, division_code: str, lane: Lane = Lane.ROUTINE
) -> str:
    """The subject an event is stored under. Inputs are already validated (see event.proto)."""
    family, name = event_type.split(".", 1)
    province, city, county = division_code[0:2], division_code[2:4], division_code[4:6]
    subject = f"{EVENTS_PREFIX}.{PLANE_TOKENS[plane]}.{family}.{name}.{province}.{city}.{county}"
    return subject if lane is Lane.ROUTINE else f"{subject}.{lane.value}"


def lane_filters(filters: Sequence[str], lane: Lane) -> list[str]:
    """A subscription's subject filters (filter_subjects: the routine lane) for `lane`."""
    return list(filters) if lane is Lane.ROUTINE else [f"{f}.{lane.value}" for f in filters]


def policy_texts(version: str) -> str:
    """Where the files of policy `version` are kept (once: the version is their digest)."""
    return f"{POLICIES_PREFIX}.texts.{version}"


def audit_entries(gateway_id: str) -> str:
    """Where a gateway replica appends its audit entries (one Merkle log per replica)."""
    return f"{AUDIT_PREFIX}.{gateway_id}.entries"


def audit_checkpoints(gateway_id: str) -> str:
    """Where a gateway replica stores its signed checkpoints."""
    return f"{AUDIT_PREFIX}.{gateway_id}.checkpoints"


def operator_log_id(gateway_id: str) -> str:
    """The audit log of the operator commands run against gateway `gateway_id` (e.g. dead-letter
    replays; see gateway.cli.operator_audit): a log of its own, beside the gateway's."""
    return f"{gateway_id}-operator"


def audit_witnessed(gateway_id: str) -> str:
    """Where a gateway replica notes how far its log was last checked against the event
    stream (so the start-up check reads only what came since)."""
    return f"{AUDIT_PREFIX}.{gateway_id}.witnessed"


def writer_lease(gateway_id: str) -> str:
    """The subject of the lease naming the one writer of `gateway_id`'s audit log."""
    return f"{WRITERS_PREFIX}.{gateway_id}"


def consumer_name(agency: str, subscription: str, lane: Lane = Lane.ROUTINE) -> str:
    """The durable JetStream consumer behind one lane of an agency's named subscription. The
    routine lane's name is the subscription's own: acks and dead letters are recorded under it.
    Other lanes append their name in capitals, which no subscription name has (lowercase only),
    so subscription "x_urgent" and the urgent lane of "x" never share a consumer."""
    consumer = f"sub_{agency}_{subscription}"
    return consumer if lane is Lane.ROUTINE else f"{consumer}_{lane.value.upper()}"


def acked_subject(consumer: str, stream_sequence: int) -> str:
    """The record that an ack of this event on this consumer was confirmed to the subscriber."""
    return f"{ACKED_PREFIX}.{consumer}.{stream_sequence}"


def redeliver_subject(agency: str, subscription: str) -> str:
    return f"{REDELIVER_PREFIX}.{agency}.{subscription}"


def deadletter_subject(agency: str, subscription: str) -> str:
    return f"{DEADLETTER_PREFIX}.{agency}.{subscription}"


@dataclass(frozen=True)
class Filter:
    """What a subscription selects; empty tuples select everything (planes: ACTUAL only)."""

    families: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    jurisdiction_prefixes: tuple[str, ...] = ()
    planes: tuple[int, ...] = ()


def _type_patterns(families: Sequence[str], types: Sequence[str]) -> list[str]:
    if not families and not types:
        return ["*.*"]
    patterns = [f"{family}.*" for family in sorted(set(families))]
    patterns += sorted({t for t in types if t.split(".", 1)[0] not in families})
    return patterns


def _jurisdiction_patterns(prefixes: Iterable[str]) -> list[str]:
    # Drop prefixes covered by a shorter one: JetStream refuses overlapping filters.
    kept = sorted(set(prefixes), key=len)
    kept = [p for i, p in enumerate(kept) if not any(p.startswith(q) for q in kept[:i])]
    if not kept:
        return ["*.*.*"]
    patterns = []
    for prefix in sorted(kept):
        levels = [prefix[i : i + 2] for i in range(0, len(prefix), 2)]
        patterns.append(".".join(levels + ["*"] * (3 - len(levels))))
    return patterns


def filter_subjects(selection: Filter, *, limit: int) -> list[str]:
    """The non-overlapping JetStream subject filters for a subscription filter."""
    planes = sorted(set(selection.planes)) or [event_pb2.PLANE_ACTUAL]
    types = _type_patterns(selection.families, selection.types)
    areas = _jurisdiction_patterns(selection.jurisdiction_prefixes)
    count = len(planes) * len(types) * len(areas)
    if count > limit:
        raise FilterTooBroadError(
            f"the filter combines into {count} subject filters (limit {limit}): "
            "select whole families or shorter jurisdiction prefixes"
        )
    return [
        f"{EVENTS_PREFIX}.{PLANE_TOKENS[plane]}.{kind}.{area}"
        for plane in planes
        for kind in types
        for area in areas
    ]
