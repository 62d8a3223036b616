"""The pure audit helpers: storage frames and withheld-field commitments."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dutylink.v1 import audit_pb2, event_pb2
from gateway.audit import commitments
from gateway.audit.entries import decode_frames, encode_frames
from tests.factories import incident_event, resource_request_event

KEY = bytes(range(32))


@given(st.lists(st.binary(max_size=300), max_size=60), st.integers(0, 10**9), st.integers(64, 2000))
def test_frames_hold_every_entry_in_order_within_the_size_limit(
    entries: list[bytes], first: int, limit: int
) -> None:
    frames = encode_frames(entries, first, limit)
    decoded = [audit_pb2.AuditFrame.FromString(f) for f in frames]
    assert [e for frame in decoded for e in frame.entries] == entries
    assert all(
        len(f) <= limit + 16 or len(d.entries) == 1 for f, d in zip(frames, decoded, strict=True)
    )
    starts = [d.first_sequence for d in decoded]
    assert starts == [first + sum(len(d.entries) for d in decoded[:i]) for i in range(len(decoded))]
    if first == 0:
        unframed = decode_frames(frames)
        assert (unframed.entries, unframed.problems) == (entries, [])


def test_a_gap_or_an_undecodable_frame_is_named() -> None:
    frames = encode_frames([b"a", b"b"], 0, 4) + encode_frames([b"c"], 5) + [b"\xff"]
    assert decode_frames(frames).problems == [
        "frame 2: starts at entry 5, but the frames before it hold 2",
        "frame 3: does not decode as an AuditFrame",
    ]


def test_a_commitment_covers_exactly_the_withheld_value() -> None:
    event = incident_event()
    event.incident.reporter.phone = "13812345678"
    salt = commitments.salt(KEY, event.id, "transport", "incident.reporter")
    committed = commitments.commitment(salt, event, "incident.reporter")
    (entry,) = commitments.commit(KEY, event, "transport", ["incident.reporter"])
    assert (entry.path, entry.commitment) == ("incident.reporter", committed)

    unrelated = event_pb2.Event()
    unrelated.CopyFrom(event)
    unrelated.incident.title = "another title"  # not withheld: the commitment holds
    assert commitments.commitment(salt, unrelated, "incident.reporter") == committed
    changed = event_pb2.Event()
    changed.CopyFrom(event)
    changed.incident.reporter.phone = "13812345679"
    assert commitments.commitment(salt, changed, "incident.reporter") != committed
    # Another recipient or field gets another salt, so equal values do not link entries.
    assert commitments.salt(KEY, event.id, "ecology", "incident.reporter") != salt
    assert commitments.salt(KEY, event.id, "transport", "incident.reporter.phone") != salt


def test_a_path_through_a_repeated_field_keeps_element_positions() -> None:
    event = resource_request_event()
    contacts = event.resource.contacts
    del contacts[:]
    contacts.add(description="duty desk", phone="021-1")
    contacts.add(description="requester", phone="021-2")
    projected = event_pb2.Event.FromString(
        commitments.withheld_value(event, "resource.contacts.phone")
    )
    assert [c.phone for c in projected.resource.contacts] == ["021-1", "021-2"]
    assert [c.description for c in projected.resource.contacts] == ["", ""], (
        "only the path's values"
    )
    swapped = event_pb2.Event()
    swapped.CopyFrom(event)
    swapped.resource.contacts[0].phone, swapped.resource.contacts[1].phone = "021-2", "021-1"
    assert commitments.withheld_value(swapped, "resource.contacts.phone") != (
        commitments.withheld_value(event, "resource.contacts.phone")
    )


def test_the_commitment_key_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "commitment.key"
    key = commitments.load_or_create_key(path)
    assert len(key) == 32 and commitments.load_or_create_key(path) == key
    assert path.stat().st_mode & 0o777 == 0o600
