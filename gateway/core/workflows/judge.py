"""The stateful half of admission: a batch of admitted events judged, in order, against the
lifecycle aggregates and ledger item lines they touch, as read from the key-value store.

The edge (gateway.store.lifecycle_guard) asks `needs` what to read, reads it into a `View`
(with the thread index, a second read for the item lines it names), calls `judge`, and writes
each changed entry with compare-and-set. Events of one batch see the earlier ones' effects,
as if published one after the other. A refused event changes nothing.

An entry remembers the ids of the last events that changed it (`recent`): a retry of an event
whose transition was written but which was never stored (the audit or the store failed after
the commit) is recognised as done and passes unchanged, so the commit is idempotent by event
id. Pure: no I/O; time comes in as `now`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from dutylink.catalogue import Catalogue
from dutylink.v1 import event_pb2
from gateway.core.admission import StateProblem
from gateway.core.subjects import PLANE_TOKENS
from gateway.core.workflows import ledger
from gateway.core.workflows.base import (
    Actor,
    AggregateState,
    IllegalTransition,
    encode_key_token,
    remember,
)
from gateway.core.workflows.ledger_scope import scope
from gateway.core.workflows.ledger_state import (
    Applied,
    ItemKey,
    ItemLine,
    Ledger,
    Refusal,
    plain,
)
from gateway.core.workflows.machine import aggregate_refs, decide, preconditions, unmet
from gateway.core.workflows.notices import replenishment_event

# Thread index entries: `ledger_thread.<plane>.<exchange>` -> the item lines holding its lines.
THREAD_INDEX_PREFIX = "ledger_thread"

Thread = tuple[int, str]  # (plane, EDXL-RM originating_message_id)


def thread_key(thread: Thread) -> str:
    plane, originating = thread
    return f"{THREAD_INDEX_PREFIX}.{PLANE_TOKENS.get(plane, str(plane))}.{encode_key_token(originating)}"


def encode_thread_index(items: frozenset[ItemKey]) -> bytes:
    rows = sorted([key.plane, key.agency, key.item_id] for key in items)
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode()


def decode_thread_index(data: bytes) -> frozenset[ItemKey]:
    """The item lines a thread index entry names; ValueError if it is not one."""
    rows = json.loads(data)
    if not isinstance(rows, list):
        raise ValueError("a thread index entry is a list of [plane, agency, item]")
    return frozenset(ItemKey(int(plane), str(agency), str(item)) for plane, agency, item in rows)


@dataclass(frozen=True)
class Needs:
    """What judging a batch reads: lifecycle aggregates (by key-value key: those the events
    move and those their preconditions look at), item lines, and the thread index entries
    whose item lines are read as well."""

    aggregates: frozenset[str] = frozenset()
    items: frozenset[ItemKey] = frozenset()
    threads: frozenset[Thread] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.aggregates or self.items or self.threads)


def needs(catalogue: Catalogue, events: Sequence[event_pb2.Event]) -> Needs:
    """What to read before judging `events` (nothing for informational types)."""
    aggregates: set[str] = set()
    items: set[ItemKey] = set()
    threads: set[Thread] = set()
    for event in events:
        aggregates.update(ref.kv_key for ref in aggregate_refs(event, catalogue))
        aggregates.update(p.ref.kv_key for p in preconditions(event, catalogue))
        needed = scope(event)
        items.update(needed.items)
        threads.update(needed.threads)
    return Needs(frozenset(aggregates), frozenset(items), frozenset(threads))


@dataclass(frozen=True)
class View:
    """The state read (absent entries are missing or None), and after `judge`, the state the
    accepted events leave."""

    aggregates: Mapping[str, AggregateState | None] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    threads: Mapping[Thread, frozenset[ItemKey]] = field(default_factory=dict)


@dataclass(frozen=True)
class Judged:
    """One event's judgement: refused (`problems`) or accepted, with the events the gateway
    publishes of its own because of it (replenishment notices)."""

    problems: tuple[StateProblem, ...] = ()
    notices: tuple[event_pb2.Event, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Changes:
    """What to write back: the entries the accepted events changed, and the aggregates they
    only read for a precondition, as they are, so that compare-and-set refuses the batch if
    another replica moved one of them since it was read."""

    aggregates: frozenset[str] = frozenset()
    items: frozenset[ItemKey] = frozenset()
    threads: frozenset[Thread] = frozenset()

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            self.aggregates | other.aggregates,
            self.items | other.items,
            self.threads | other.threads,
        )

    def __bool__(self) -> bool:
        return bool(self.aggregates or self.items or self.threads)


@dataclass(frozen=True)
class Judgement:
    """A batch's judgement: one `Judged` per event, the view after, and what changed."""

    verdicts: tuple[Judged, ...]
    view: View
    changes: Changes


def judge(
    catalogue: Catalogue,
    view: View,
    actor: Actor,
    events: Sequence[event_pb2.Event],
    now: datetime,
) -> Judgement:
    """Judge `events` (all by `actor`, received at `now`) one after the other."""
    # One working copy for the whole batch, each accepted event's entries laid over it: copying
    # the view per event made a batch of new aggregates cost the square of its size.
    aggregates, items, threads = dict(view.aggregates), dict(view.ledger.items), dict(view.threads)
    moved: set[str] = set()
    changed_items: set[ItemKey] = set()
    changed_threads: set[Thread] = set()
    verdicts: list[Judged] = []
    for event in events:
        current = View(aggregates, Ledger(items), threads)
        verdict, overlay, changed = _judge_one(catalogue, current, actor, event, now)
        verdicts.append(verdict)
        aggregates.update(overlay.aggregates)
        items.update(overlay.ledger.items)
        threads.update(overlay.threads)
        moved |= changed.aggregates
        changed_items |= changed.items
        changed_threads |= changed.threads
    after = View(aggregates, Ledger(items), threads)
    changes = Changes(frozenset(moved), frozenset(changed_items), frozenset(changed_threads))
    return Judgement(tuple(verdicts), after, changes)


def _judge_one(
    catalogue: Catalogue, view: View, actor: Actor, event: event_pb2.Event, now: datetime
) -> tuple[Judged, View, Changes]:
    """One event's judgement against `view` (left as it is), the entries it writes (a view of
    those only) and what it changed."""
    problems: list[StateProblem] = []
    aggregates: dict[str, AggregateState | None] = {}
    moved: set[str] = set()
    retry = False
    for ref in aggregate_refs(event, catalogue):
        state = view.aggregates.get(ref.kv_key)
        if state is not None and event.id in state.recent:
            retry = True  # an event already judged and written
            continue
        verdict = decide(catalogue, ref, state, actor, event, now)
        if isinstance(verdict, IllegalTransition):
            problems.append(_transition_problem(verdict))
            continue
        aggregates[ref.kv_key] = verdict.new_state
        moved.add(ref.kv_key)
    read: set[str] = set()
    if not retry:  # what it read may have moved on since it was written
        for precondition in preconditions(event, catalogue):
            state = view.aggregates.get(precondition.ref.kv_key)
            illegal = unmet(catalogue, precondition, state, now)
            if illegal is not None:
                problems.append(_transition_problem(illegal))
            elif state is not None:
                read.add(precondition.ref.kv_key)
    applied = _apply_ledger(view.ledger, event, retry)
    problems.extend(_ledger_problem(view.ledger, refusal) for refusal in applied.refusals)
    if problems:
        return Judged(tuple(problems)), View(), Changes()
    items: dict[ItemKey, ItemLine] = {}
    threads: dict[Thread, frozenset[ItemKey]] = {}
    changed_threads: set[Thread] = set()
    for key in applied.changed:
        item = applied.ledger.items[key]
        items[key] = replace(item, recent=remember(item.recent, event.id))
        before = view.ledger.items.get(key)
        for holding in item.holdings:
            if before is not None and before.holding(holding.line) == holding:
                # Held already, so indexed already; and only the event's own exchanges were
                # read, so another's index entry must not be written here.
                continue
            thread = (key.plane, holding.line.thread)
            indexed = threads.get(thread, view.threads.get(thread, frozenset()))
            if key not in indexed:
                threads[thread] = indexed | {key}
                changed_threads.add(thread)
    after = View(aggregates, Ledger(items), threads)
    changed = Changes(
        frozenset(moved | read), frozenset(applied.changed), frozenset(changed_threads)
    )
    notices = tuple(
        replenishment_event(notice, items[notice.item].version, event)
        for notice in applied.replenishments
    )
    return Judged(notices=notices), after, changed


def _apply_ledger(current: Ledger, event: event_pb2.Event, retry: bool) -> Applied:
    """The event's ledger fold; none for a retry: an entry it moved remembers it (all of an
    event's entries are written together, so the item lines hold it too, even once they
    forgot its id)."""
    if retry or any(event.id in item.recent for item in current.items.values()):
        return Applied(current)
    return ledger.apply(current, event)


def _transition_problem(illegal: IllegalTransition) -> StateProblem:
    ref = illegal.aggregate
    return StateProblem(
        aggregate=f"{ref.lifecycle}/{ref.plane}/{ref.key}",
        state=illegal.current_state,
        version=illegal.version,
        allowed=illegal.allowed,
        reason=illegal.reason,
    )


def _ledger_problem(current: Ledger, refusal: Refusal) -> StateProblem:
    key = refusal.item
    item: ItemLine | None = current.items.get(key)
    plane = PLANE_TOKENS.get(key.plane, str(key.plane))
    return StateProblem(
        aggregate=f"ledger/{plane}/{key.agency}/{key.item_id}",
        state=f"available {plain(refusal.available)}",
        version=item.version if item else 0,
        reason=str(refusal),
    )


def describe(problems: Sequence[StateProblem]) -> str:
    """One message for a refusal: each aggregate, its state and version, what it allows."""
    parts = []
    for problem in problems:
        allowed = f"; allowed from there: {', '.join(problem.allowed)}" if problem.allowed else ""
        parts.append(
            f"{problem.aggregate} is '{problem.state}' (version {problem.version}): "
            f"{problem.reason}{allowed}"
        )
    return "; ".join(parts)
