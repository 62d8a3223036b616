"""Envelope helpers: what the gateway adds to an event and how it names it on the wire. Pure."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

# The incidents an event belongs to: defined with the policy vocabulary (the lower layer),
# which scopes break-glass grants by them too.
from dutylink.policies.model import incident_ids as incident_ids
from dutylink.v1 import event_pb2
from gateway.core.crypto import SHA256, HashSuite

CLOUDEVENTS_SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
DATA_SCHEMA = "dutylink.v1.Event"
# The stored event's content digest (hex, the crypto profile's hash, see `content_digest`): a
# duplicate id is compared with it to tell a retry from new content under a used id.
CONTENT_DIGEST_HEADER = "Dutylink-Content-Digest"


def family(event: event_pb2.Event) -> str:
    """The payload's family: "incident", "resource" or "warning" ("" when none is set)."""
    return event.WhichOneof("payload") or ""


def dedup_key(agency: str, event_id: str) -> str:
    """JetStream's `Nats-Msg-Id`. Event ids are unique per agency (CloudEvents: per source),
    so the key is qualified by the agency; agency ids never contain ':'."""
    return f"{agency}:{event_id}"


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """`moment` as a protobuf Timestamp (convert once, stamp many events with it)."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def timestamp_or_none(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    """`timestamp(moment)`, or None (an unset message field) for no moment."""
    return timestamp(moment) if moment is not None else None


def stamped(
    event: event_pb2.Event, agency: str, received: datetime | timestamp_pb2.Timestamp
) -> event_pb2.Event:
    """A copy of `event` with the gateway's attributes: the authenticated source and receive time."""
    copy = event_pb2.Event()
    copy.CopyFrom(event)
    copy.source = agency
    if isinstance(received, datetime):
        copy.received_time.FromDatetime(received)
    else:
        copy.received_time.CopyFrom(received)
    return copy


def content_digest(event: event_pb2.Event, hashing: HashSuite = SHA256) -> bytes:
    """The digest (the crypto profile's hash: SHA-256, or SM3) of what the publisher said: the
    deterministic encoding of the stamped event with
    `received_time` cleared (the source is the same agency's for every publish under one dedup
    key). A retry of the same event has the same digest whenever it is received. `distribution`
    is left out too: it says how the document travelled (bare, or in this or that EDXL-DE
    envelope), not what it says, so the same alert arriving both ways is a duplicate, not a
    conflict (the first arrival's envelope is the one kept)."""
    return hashing.digest(content_bytes(event))


def content_bytes(event: event_pb2.Event) -> bytes:
    """What `content_digest` covers (an event with a sealed part keys its digest instead:
    gateway.core.sealing)."""
    content = event_pb2.Event()
    content.CopyFrom(event)
    content.ClearField("received_time")
    content.ClearField("distribution")
    return content.SerializeToString(deterministic=True)


def cloudevents_headers(event: event_pb2.Event) -> dict[str, str]:
    """CloudEvents binary-mode attributes as NATS headers, plus JetStream's dedup key."""
    headers = {
        "Nats-Msg-Id": dedup_key(event.source, event.id),
        "ce-specversion": CLOUDEVENTS_SPEC_VERSION,
        "ce-id": event.id,
        "ce-source": event.source,
        "ce-type": event.type,
        "ce-time": event.time.ToJsonString(),
        "ce-datacontenttype": CONTENT_TYPE,
        "ce-dataschema": DATA_SCHEMA,
    }
    if event.subject:
        headers["ce-subject"] = event.subject
    return headers
