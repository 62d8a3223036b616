"""Aggregate states as KV values: the field-by-field encoder writes the bytes the asdict-based
one wrote, so entries stored by an earlier gateway still decode and compare equal."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.workflows.base import AggregateState

_TEXT = st.text(max_size=12)
_TEXTS = st.lists(_TEXT, max_size=3).map(tuple)
_MOMENTS = st.none() | st.datetimes(timezones=st.just(UTC))

_STATES = st.builds(
    AggregateState,
    lifecycle=_TEXT,
    plane=_TEXT,
    key=_TEXT,
    state=_TEXT,
    version=st.integers(min_value=0, max_value=10**9),
    opened_by=_TEXT,
    lead=_TEXT,
    assigned=_TEXTS,
    supervisor=_TEXT,
    handlers=_TEXTS,
    parties=_TEXTS,
    deadline=_MOMENTS,
    expires=_MOMENTS,
    merged_into=_TEXT,
    last_event_id=_TEXT,
    last_type=_TEXT,
    recent=_TEXTS,
)


def _earlier_encoding(state: AggregateState) -> bytes:
    """How the gateway encoded a state before the field-by-field encoder."""
    data = asdict(state)
    for name in ("deadline", "expires"):
        value = data[name]
        data[name] = value.isoformat() if value is not None else None
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@given(_STATES)
def test_a_state_encodes_to_the_bytes_the_earlier_encoder_wrote(state: AggregateState) -> None:
    assert state.to_bytes() == _earlier_encoding(state)


@given(_STATES)
def test_a_state_stored_by_the_earlier_encoder_decodes_to_itself(state: AggregateState) -> None:
    assert AggregateState.from_bytes(_earlier_encoding(state)) == state


def test_a_stored_entry_of_an_earlier_release_decodes() -> None:
    stored = (
        b'{"assigned":["fire"],"deadline":"2026-08-15T12:00:00+00:00","expires":null,'
        b'"handlers":[],"key":"INC-1","last_event_id":"ev-2","last_type":"incident.assigned",'
        b'"lead":"fire","lifecycle":"incident","merged_into":"","opened_by":"police",'
        b'"parties":["police","fire"],"plane":"actual","recent":["ev-1","ev-2"],'
        b'"state":"assigned","supervisor":"","version":2}'
    )
    state = AggregateState.from_bytes(stored)
    assert (state.state, state.version, state.lead) == ("assigned", 2, "fire")
    assert state.deadline == datetime(2026, 8, 15, 12, tzinfo=UTC)
    assert state.to_bytes() == stored
