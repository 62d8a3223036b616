"""The admission pipeline over plain values: guards in order, the first refusal ends it. No
server, no grpc."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dutylink.policies.engine import Decision
from dutylink.v1 import audit_pb2, event_pb2
from gateway.access.auth import Principal
from gateway.core import envelope
from gateway.core.admission import Admitted, RefusalKind, Refused, admit_all, pipeline
from gateway.core.facts import AuditSink, MemoryAuditSink, SinkUnavailableError
from gateway.core.validation import Validator
from tests.factories import incident_event

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def allow(_: event_pb2.Event) -> Decision:
    return Decision(True, ("r1",), "ok", (), "v1")


def deny(_: event_pb2.Event) -> Decision:
    return Decision(False, (), "no rule allows it", (), "v1")


def run(event: event_pb2.Event, decide=allow):  # type: ignore[no-untyped-def]
    guards = pipeline(Validator(), decide, max_event_bytes=1 << 20)
    return guards.run(Principal("fire"), event, envelope.timestamp(NOW))


def test_an_event_every_guard_passes_is_admitted_stamped_with_the_decision() -> None:
    outcome = run(incident_event())
    assert isinstance(outcome, Admitted)
    assert outcome.event.source == "fire"
    assert outcome.decision.rule_ids == ("r1",)


def test_an_invalid_event_is_refused_as_invalid_before_the_policy_is_asked() -> None:
    asked: list[str] = []

    def decide(event: event_pb2.Event) -> Decision:
        asked.append(event.id)
        return allow(event)

    event = incident_event()
    event.ClearField("classification")
    outcome = run(event, decide)
    assert isinstance(outcome, Refused) and outcome.kind is RefusalKind.INVALID
    assert outcome.problems and asked == []


def test_another_agencys_source_is_denied() -> None:
    event = incident_event()
    event.source = "police"
    outcome = run(event)
    assert isinstance(outcome, Refused) and outcome.kind is RefusalKind.DENIED
    assert outcome.decision is None


def test_a_policy_denial_is_denied_with_its_decision() -> None:
    outcome = run(incident_event(), deny)
    assert isinstance(outcome, Refused) and outcome.kind is RefusalKind.DENIED
    assert outcome.decision is not None and not outcome.decision.allowed


def test_each_event_of_a_batch_is_admitted_or_refused_on_its_own() -> None:
    own, in_another_name = incident_event(), incident_event()
    in_another_name.source = "police"
    outcomes = admit_all(
        Validator(),
        allow,
        Principal("fire"),
        [own, in_another_name],
        NOW,
        max_event_bytes=1 << 20,
    )
    assert [type(o).__name__ for o in outcomes] == ["Admitted", "Refused"]


async def test_the_memory_sink_fails_closed_and_keeps_follow_ups_for_the_next_append() -> None:
    refusal = audit_pb2.AuditEntry(reason="refused")
    stored = audit_pb2.AuditEntry(reason="stored")
    sink: AuditSink = MemoryAuditSink()
    assert isinstance(sink, MemoryAuditSink)
    sink.follow_up(stored)
    sink.available = False
    with pytest.raises(SinkUnavailableError):
        await sink.record([refusal])
    await sink.record_best_effort([refusal])
    assert sink.entries == [] and sink.unrecorded == [refusal]
    sink.available = True
    await sink.record([refusal])
    assert sink.entries == [stored, refusal] and sink.follow_ups == []
