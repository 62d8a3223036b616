"""Admission of one published event, as a pipeline of guards: validation, the claimed source,
the catalogue (a known type carrying its required fields), the policy decision. Pure: the policy
decision comes in as a function; no grpc here (refusal kinds become gRPC codes and audit
outcomes in gateway.rpc.calls). The lifecycles and the ledger judge the admitted events after
it, in order, through `StatefulGuards` (the edge reads and writes their state).

Each guard is `(principal, event) -> Passed | Refused`, reading no state (the stateful guards
judge whole batches after admission). The first refusal ends the pipeline. The door guards
(validation, claimed source) see the event as sent; then the event is stamped (authenticated
source, time of receipt) and the later guards see the stamped event, so the catalogue, the
policy and the stateful guards judge what would be stored (a field the gateway
stamps is never missing). The catalogue speaks before the policy: a type nobody declared, or an
event without what its type requires, is the caller's mistake (INVALID), not a permission.

The same function serves Publish and each event of PublishBatch (`admit_all`: one request,
one moment of receipt), so both refuse and accept alike; the servicer only turns the outcome
into a status or a per-event result.

Unknown fields never pass the door: they are dropped from the stored event (and from every
request when it is decoded, see gateway.rpc.calls), so no policy, redaction or receiver meets a
field that no rule was written for.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from google.protobuf import timestamp_pb2

from dutylink.catalogue import Catalogue, load_catalogue
from dutylink.policies.engine import Decision
from dutylink.v1 import event_pb2
from gateway.access.auth import Principal
from gateway.core import envelope, subjects
from gateway.core.crypto import SHA256, HashSuite
from gateway.core.lanes import lane_of
from gateway.core.sealing import SEALED_HEADER, Sealer
from gateway.core.validation import FieldProblem, Validator


class RefusalKind(enum.Enum):
    """Why admission says no, by whose fault; the edge maps each to a status and an outcome."""

    INVALID = "invalid"  # the event breaks a field rule or a limit
    DENIED = "denied"  # the caller may not publish it (source or policy)
    ILLEGAL_TRANSITION = "illegal_transition"  # the aggregate's state does not allow it
    CONFLICT = "conflict"  # another writer changed the aggregate first
    FULL = "full"  # a ledger or quota has no room left
    UNAVAILABLE = "unavailable"  # the state a guard needs cannot be read now


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
class StateProblem:
    """Why an aggregate's state refuses an event (a lifecycle transition, a ledger line), for
    the caller to see what the gateway holds: which aggregate ("incident/actual/INC-1",
    "ledger/actual/fire/AMB"), its current state and version, and what it allows from there."""

    aggregate: str
    state: str
    version: int
    allowed: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Refused:
    """Why an event is not stored: its kind, a message for the caller, the fields at fault,
    and for a stateful refusal the aggregates' states that refuse it."""

    kind: RefusalKind
    message: str
    problems: tuple[FieldProblem, ...] = field(default=())
    decision: Decision | None = None
    state_problems: tuple[StateProblem, ...] = field(default=())


@dataclass(frozen=True)
class Passed:
    """A guard's yes, with what it learned on the way (advice, the policy's decision)."""

    advisories: tuple[FieldProblem, ...] = ()
    decision: Decision | None = None


PASSED = Passed()

Guard = Callable[[Principal, event_pb2.Event], Passed | Refused]


class Commitment(Protocol):
    """What the stateful guards made of a batch: each event admitted or refused (`outcomes`),
    the events the gateway publishes of its own because of the admitted ones (`notices`, e.g.
    a replenishment notice), and `take_back` for admitted events this request did not store."""

    @property
    def outcomes(self) -> Sequence[Admitted | Refused]: ...

    @property
    def notices(self) -> Sequence[event_pb2.Event]: ...

    async def take_back(self, not_stored: Sequence[Admitted]) -> None:
        """Undo the transitions of `not_stored`: events the store refused for good, and retries
        it held already (judged afresh where their entries had forgotten their ids), so the
        aggregates never run ahead of the stream nor count an event twice."""
        ...


class StatefulGuards(Protocol):
    """The stateful guards (lifecycles, the resource ledger), the one hook the publish path
    (gateway.rpc.publish) calls after admission: `commit` judges the admitted events in order
    against the aggregates they touch, and writes their transitions (compare-and-set, gateway.
    core.kv) before their audit entries and the store. A lost race is judged again; what still
    does not fit is refused (ILLEGAL_TRANSITION, CONFLICT, UNAVAILABLE). A commit is idempotent
    by event id: an event committed but then not stored (audit or store unavailable) comes back
    as a retry with the same id and passes."""

    async def commit(
        self, principal: Principal, outcomes: Sequence[Admitted | Refused]
    ) -> Commitment: ...


@dataclass(frozen=True)
class Committed:
    """A commitment with nothing to take back."""

    outcomes: Sequence[Admitted | Refused]
    notices: Sequence[event_pb2.Event] = ()

    async def take_back(self, not_stored: Sequence[Admitted]) -> None:
        return None


class NoStatefulGuards:
    """No stateful guard: nothing is read or committed (`[gateway] enforce_lifecycles`)."""

    async def commit(
        self, principal: Principal, outcomes: Sequence[Admitted | Refused]
    ) -> Commitment:
        return Committed(outcomes)


def validation_guard(validator: Validator, max_event_bytes: int) -> Guard:
    """Size, then the field rules; advice that is not followed passes as advisories."""

    def guard(_: Principal, event: event_pb2.Event) -> Passed | Refused:
        size = event.ByteSize()
        if size > max_event_bytes:
            problem = FieldProblem(
                "", f"event is {size} bytes; the limit is {max_event_bytes}", "event.max_bytes"
            )
            return Refused(RefusalKind.INVALID, problem.description, (problem,))
        checked = validator.check(event)
        if checked.problems:
            fields = ", ".join(sorted({p.field or p.rule_id for p in checked.problems}))
            return Refused(RefusalKind.INVALID, f"invalid event: {fields}", tuple(checked.problems))
        return Passed(advisories=tuple(checked.advisories))

    return guard


def claimed_source_guard(principal: Principal, event: event_pb2.Event) -> Passed | Refused:
    """A source, when given, must be the calling agency: nobody publishes in another's name."""
    if event.source and event.source != principal.agency:
        return Refused(
            RefusalKind.DENIED,
            f"source '{event.source}' is not the calling agency '{principal.agency}'",
        )
    return PASSED


# Where a caller learns the types the gateway knows and the fields each requires.
CATALOGUE_HINT = "`dutylink catalogue list` prints the known types and the fields each requires"


def catalogue_guard(catalogue: Catalogue) -> Guard:
    """The event's type must be in the catalogue, and the event must carry every field its
    type requires (one problem per missing field path). Runs on the stamped event."""

    def guard(_: Principal, event: event_pb2.Event) -> Passed | Refused:
        entry = catalogue.get(event.type)
        if entry is None:
            problem = FieldProblem(
                "type", f"'{event.type}' is not a catalogued type; {CATALOGUE_HINT}",
                "catalogue.unknown_type",
            )  # fmt: skip
            return Refused(
                RefusalKind.INVALID, f"unknown event type: {problem.description}", (problem,)
            )
        missing = entry.missing_fields(event)
        if missing:
            problems = tuple(
                FieldProblem(path, f"{event.type} requires it", "catalogue.required")
                for path in missing
            )
            return Refused(
                RefusalKind.INVALID,
                f"{event.type} requires fields that are not set: {', '.join(missing)}",
                problems,
            )
        return PASSED

    return guard


def policy_guard(decide: Callable[[event_pb2.Event], Decision]) -> Guard:
    """The access policy's publish decision on the stamped event."""

    def guard(principal: Principal, event: event_pb2.Event) -> Passed | Refused:
        decision = decide(event)
        if not decision.allowed:
            return Refused(
                RefusalKind.DENIED,
                f"{principal.agency} may not publish {event.type} here: {decision.reason} "
                f"(policy {decision.policy_version[:12]})",
                decision=decision,
            )
        return Passed(decision=decision)

    return guard


@dataclass(frozen=True)
class Pipeline:
    """The guards in order: `door` on the event as sent, `stamped` on the stamped event (the
    catalogue guard, then the policy guard). One policy guard must pass with a decision."""

    door: Sequence[Guard]
    stamped: Sequence[Guard]
    # Seals the personal fields of what passes (None: stored in clear); a sealed event must
    # still fit the store's message limit, `max_stored_bytes`.
    sealer: Sealer | None = None
    max_stored_bytes: int = 0
    hashing: HashSuite = SHA256  # the crypto profile's: of the content digest

    def run(
        self,
        principal: Principal,
        event: event_pb2.Event,
        received: timestamp_pb2.Timestamp,
    ) -> Admitted | Refused:
        advisories: list[FieldProblem] = []
        decision: Decision | None = None
        for guard in self.door:
            verdict = guard(principal, event)
            if isinstance(verdict, Refused):
                return verdict
            advisories.extend(verdict.advisories)
        stamped = envelope.stamped(event, principal.agency, received)
        stamped.DiscardUnknownFields()
        for guard in self.stamped:
            verdict = guard(principal, stamped)
            if isinstance(verdict, Refused):
                return verdict
            advisories.extend(verdict.advisories)
            decision = verdict.decision or decision
        if decision is None:
            raise ValueError("an admission pipeline needs a policy guard that decides")
        subject, data, headers = stored_form(stamped, self.sealer, self.hashing)
        if refused := self._too_large_sealed(data, headers):
            return refused
        return Admitted(stamped, subject, data, headers, decision, tuple(advisories))

    def _too_large_sealed(self, data: bytes, headers: dict[str, str]) -> Refused | None:
        sealed = headers.get(SEALED_HEADER)
        if sealed is None or not self.max_stored_bytes:
            return None
        size = len(data) + len(sealed)
        if size <= self.max_stored_bytes:
            return None
        problem = FieldProblem(
            "",
            f"event is {size} bytes once its personal fields are sealed; the limit is "
            f"{self.max_stored_bytes}",
            "event.max_bytes",
        )
        return Refused(RefusalKind.INVALID, problem.description, (problem,))


def stored_form(
    stamped: event_pb2.Event, sealer: Sealer | None = None, hashing: HashSuite = SHA256
) -> tuple[str, bytes, dict[str, str]]:
    """The subject, bytes and headers the event log stores an admitted (stamped) event under:
    its plane, type, jurisdiction and lane; its CloudEvents attributes and content digest (the
    crypto profile's `hashing`); with a `sealer`, its personal fields sealed
    (gateway.core.sealing: the sealer's profile gives the digest)."""
    subject = subjects.event_subject(
        stamped.plane, stamped.type, stamped.jurisdiction.division_code, lane_of(stamped)
    )
    headers = envelope.cloudevents_headers(stamped)
    if sealer is None:
        headers[envelope.CONTENT_DIGEST_HEADER] = envelope.content_digest(stamped, hashing).hex()
        return subject, stamped.SerializeToString(), headers
    sealed = sealer.seal(stamped)
    headers[envelope.CONTENT_DIGEST_HEADER] = sealed.content_digest.hex()
    if sealed.sealed is not None:
        headers[SEALED_HEADER] = sealed.sealed
    return subject, sealed.data, headers


def pipeline(
    validator: Validator,
    decide: Callable[[event_pb2.Event], Decision],
    *,
    max_event_bytes: int,
    catalogue: Catalogue | None = None,
    sealer: Sealer | None = None,
    hashing: HashSuite = SHA256,
) -> Pipeline:
    """The publish pipeline: validation, claimed source, the catalogue (None: the one shipped
    with the schemas), then policy; personal fields sealed by `sealer`, if any; content
    digests with the crypto profile's `hashing`."""
    return Pipeline(
        door=(validation_guard(validator, max_event_bytes), claimed_source_guard),
        stamped=(
            catalogue_guard(load_catalogue() if catalogue is None else catalogue),
            policy_guard(decide),
        ),
        sealer=sealer,
        max_stored_bytes=max_event_bytes,
        hashing=hashing,
    )


def admit(
    validator: Validator,
    decide: Callable[[event_pb2.Event], Decision],
    principal: Principal,
    event: event_pb2.Event,
    received: datetime,
    *,
    max_event_bytes: int,
    catalogue: Catalogue | None = None,
) -> Admitted | Refused:
    """Size, field rules, claimed source, the catalogue, then the access policy's publish
    decision (on the stamped event, so the policy sees the authenticated source)."""
    return admit_all(
        validator,
        decide,
        principal,
        (event,),
        received,
        max_event_bytes=max_event_bytes,
        catalogue=catalogue,
    )[0]


def admit_all(
    validator: Validator,
    decide: Callable[[event_pb2.Event], Decision],
    principal: Principal,
    events: Iterable[event_pb2.Event],
    received: datetime,
    *,
    max_event_bytes: int,
    catalogue: Catalogue | None = None,
    sealer: Sealer | None = None,
    hashing: HashSuite = SHA256,
) -> list[Admitted | Refused]:
    """`admit` for each event of a batch, all received at one moment (`received`). The
    servicer calls it a few events at a time, in fair turns among agencies."""
    stamp = envelope.timestamp(received)
    guards = pipeline(
        validator,
        decide,
        max_event_bytes=max_event_bytes,
        catalogue=catalogue,
        sealer=sealer,
        hashing=hashing,
    )
    return [guards.run(principal, event, stamp) for event in events]
