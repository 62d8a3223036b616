"""The pure audit helpers: storage frames and withheld-field commitments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dutylink.v1 import audit_pb2, event_pb2
from gateway.audit import commitments
from gateway.audit.entries import (
    HEADER_ROOM_BYTES,
    MAX_FRAME_BYTES,
    FrameTooLargeError,
    bound_entry,
    bounded_text,
    decode_frames,
    encode_frames,
    fits_a_frame,
    frame_budget,
)
from gateway.core.crypto import SHA256
from gateway.store import audit_files
from tests.factories import incident_event, resource_request_event

KEY = bytes(range(32))


@given(st.lists(st.binary(max_size=300), max_size=60), st.integers(0, 10**9), st.integers(64, 2000))
def test_frames_hold_every_entry_in_order_and_never_exceed_the_size_limit(
    entries: list[bytes], first: int, limit: int
) -> None:
    entries = [data for data in entries if fits_a_frame(data, limit)]
    frames = encode_frames(entries, first, limit)
    decoded = [audit_pb2.AuditFrame.FromString(f) for f in frames]
    assert [e for frame in decoded for e in frame.entries] == entries
    assert all(len(f) <= limit for f in frames)
    starts = [d.first_sequence for d in decoded]
    assert starts == [first + sum(len(d.entries) for d in decoded[:i]) for i in range(len(decoded))]
    if first == 0:
        unframed = decode_frames(frames)
        assert (unframed.entries, unframed.problems) == (entries, [])


def test_an_entry_too_large_for_any_frame_is_refused_instead_of_framed() -> None:
    assert not fits_a_frame(b"x" * 100, 64)
    with pytest.raises(FrameTooLargeError, match="100 bytes does not fit a frame of 64"):
        encode_frames([b"a", b"x" * 100], 0, 64)


def test_a_frame_leaves_room_for_headers_under_the_servers_max_payload() -> None:
    assert frame_budget(1024 * 1024) == MAX_FRAME_BYTES
    assert frame_budget(64 * 1024) == 64 * 1024 - HEADER_ROOM_BYTES


@given(st.text(max_size=3000), st.integers(100, 2000))
def test_a_long_string_keeps_a_prefix_and_its_digest_within_the_bound(
    text: str, limit: int
) -> None:
    bounded = bounded_text(text, limit)
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        assert bounded == text
    else:
        assert len(bounded.encode()) <= limit
        assert bounded.endswith(f"[{len(raw)} bytes, sha256:{hashlib.sha256(raw).hexdigest()}]")
        assert raw.startswith(bounded.rsplit("…[", 1)[0].encode())


def test_an_entry_with_a_megabyte_of_caller_strings_stays_small_and_identifies_them() -> None:
    huge_id = "e" * 1_000_000
    entry = audit_pb2.AuditEntry(
        event_id=huge_id,
        event_type="t" * 50_000,
        reason="r" * 200_000,
        incident_ids=[f"INC-{n}" for n in range(10_000)],
        withheld_fields=["incident.reporter"],
    )
    bound_entry(entry, 1024, 64)
    assert len(entry.SerializeToString()) < 80 * 1024
    assert entry.event_id.startswith("eee") and hashlib.sha256(huge_id.encode()).hexdigest() in (
        entry.event_id
    )
    assert len(entry.incident_ids) == 64 and entry.incident_ids[62] == "INC-62"
    assert entry.incident_ids[63].startswith("…[9937 more, sha256:")
    assert list(entry.withheld_fields) == ["incident.reporter"], "short values stay whole"


def test_a_gap_or_an_undecodable_frame_is_named() -> None:
    frames = encode_frames([b"a", b"b"], 0, 16) + encode_frames([b"c"], 5) + [b"\xff"]
    assert decode_frames(frames).problems == [
        "frame 2: starts at entry 5, but the frames before it hold 2",
        "frame 3: does not decode as an AuditFrame",
    ]


def test_a_commitment_covers_exactly_the_withheld_value() -> None:
    event = incident_event()
    event.incident.reporter.phone = "13812345678"
    salt = commitments.salt(KEY, event.id, "transport", "incident.reporter", SHA256)
    committed = commitments.commitment(salt, event, "incident.reporter", SHA256)
    (entry,) = commitments.commit(KEY, event, "transport", ["incident.reporter"], SHA256)
    assert (entry.path, entry.commitment) == ("incident.reporter", committed)

    unrelated = event_pb2.Event()
    unrelated.CopyFrom(event)
    unrelated.incident.title = "another title"  # not withheld: the commitment holds
    assert commitments.commitment(salt, unrelated, "incident.reporter", SHA256) == committed
    changed = event_pb2.Event()
    changed.CopyFrom(event)
    changed.incident.reporter.phone = "13812345679"
    assert commitments.commitment(salt, changed, "incident.reporter", SHA256) != committed
    # Another recipient or field gets another salt, so equal values do not link entries.
    assert commitments.salt(KEY, event.id, "ecology", "incident.reporter", SHA256) != salt
    assert commitments.salt(KEY, event.id, "transport", "incident.reporter.phone", SHA256) != salt


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
    key = audit_files.load_or_create_key(path)
    assert len(key) == 32 and audit_files.load_or_create_key(path) == key
    assert path.stat().st_mode & 0o777 == 0o600
