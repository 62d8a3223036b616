"""Admission of one published event: validate, check the claimed source, stamp, decide, route.
Pure (the policy decision comes in as a function).

The same function serves Publish and each event of PublishBatch (`admit_all`: one request,
one moment of receipt), so both refuse and accept alike; the servicer only turns the outcome
into a status or a per-event result.

Unknown fields never pass the door: they are dropped from the stored event (and from every
request when it is decoded, see gateway.rpc.calls), so no policy, redaction or receiver meets a
field that no rule was written for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from google.protobuf import timestamp_pb2

from dutylink.v1 import event_pb2
from gateway.access.auth import Principal
from gateway.core import envelope, subjects
from gateway.core.validation import FieldProblem, Validator
from policies.engine import Decision


@dataclass(frozen=True)
class Admitted:
    """An event ready for JetStream: stamped, serialised and routed."""

    event: event_pb2.Event
    subject: str
    data: bytes
    headers: dict[str, str]
    decision: Decision
    # Advice the event does not follow: reported in the receipt, never a refusal.
    advisories: tuple[FieldProblem, ...] = ()


@dataclass(frozen=True)
class Refused:
    """Why an event is not stored, as the gRPC status the caller receives."""

    code: grpc.StatusCode
    message: str
    problems: tuple[FieldProblem, ...] = field(default=())
    decision: Decision | None = None


def admit(
    validator: Validator,
    decide: Callable[[event_pb2.Event], Decision],
    principal: Principal,
    event: event_pb2.Event,
    received: datetime,
    *,
    max_event_bytes: int,
) -> Admitted | Refused:
    """Size, field rules, claimed source, then the access policy's publish decision (on the
    stamped event, so the policy sees the authenticated source)."""
    return _admit(
        validator, decide, principal, event, envelope.timestamp(received), max_event_bytes
    )


def admit_all(
    validator: Validator,
    decide: Callable[[event_pb2.Event], Decision],
    principal: Principal,
    events: Iterable[event_pb2.Event],
    received: datetime,
    *,
    max_event_bytes: int,
) -> list[Admitted | Refused]:
    """`admit` for each event of a batch, all received at one moment (`received`). The
    servicer calls it a few events at a time, in fair turns among agencies."""
    stamp = envelope.timestamp(received)
    return [_admit(validator, decide, principal, event, stamp, max_event_bytes) for event in events]


def _admit(
    validator: Validator,
    decide: Callable[[event_pb2.Event], Decision],
    principal: Principal,
    event: event_pb2.Event,
    received: timestamp_pb2.Timestamp,
    max_event_bytes: int,
) -> Admitted | Refused:
    size = event.ByteSize()
    if size > max_event_bytes:
        problem = FieldProblem(
            "", f"event is {size} bytes; the limit is {max_event_bytes}", "event.max_bytes"
        )
        return Refused(grpc.StatusCode.INVALID_ARGUMENT, problem.description, (problem,))
    checked = validator.check(event)
    problems = checked.problems
    if problems:
        fields = ", ".join(sorted({p.field or p.rule_id for p in problems}))
        return Refused(
            grpc.StatusCode.INVALID_ARGUMENT, f"invalid event: {fields}", tuple(problems)
        )
    if event.source and event.source != principal.agency:
        return Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"source '{event.source}' is not the calling agency '{principal.agency}'",
        )
    stamped = envelope.stamped(event, principal.agency, received)
    stamped.DiscardUnknownFields()
    decision = decide(stamped)
    if not decision.allowed:
        return Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{principal.agency} may not publish {stamped.type} here: {decision.reason} "
            f"(policy {decision.policy_version[:12]})",
            decision=decision,
        )
    subject = subjects.event_subject(
        stamped.plane, stamped.type, stamped.jurisdiction.division_code
    )
    headers = envelope.cloudevents_headers(stamped)
    headers[envelope.CONTENT_DIGEST_HEADER] = envelope.content_digest(stamped).hex()
    return Admitted(
        stamped, subject, stamped.SerializeToString(), headers, decision, checked.advisories
    )
