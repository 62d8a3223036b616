"""The lifecycle and ledger guard at the door (gateway.core.admission.StatefulGuards) over the
key-value store with compare-and-set.

For the events admission let through, in order: read the aggregates and item lines they touch
(gateway.core.workflows.judge.needs) in one request, then the item lines the thread index
entries name in another, judge them, and write every changed entry in one atomic batch, each on
the revision read (KeyValueStore.write_all). If another writer (another gateway replica) changed
any of them first, nothing of the batch is written, and the batch is read and judged again: so
two replicas never both accept a transition from one state, and a double booking by two replicas
at one moment leaves one commitment. After `MAX_ATTEMPTS` lost races the events still in
contention are refused as CONFLICT (ABORTED: retry with the same id). A store that cannot be
reached refuses the events as UNAVAILABLE (also retryable).

A batch with more changed entries than the store takes in one atomic write (BatchTooLargeError:
JetStream's limit is 1,000 messages) is written key by key instead, each with compare-and-set;
if any of those loses a race, the writes that landed are taken back (compare-and-set again, on
the revision just written) before reading again.

Writes happen before the audit entry and the store: an event whose transition is written but
which is then not stored comes back as a retry with the same id, and the entries remember it
(gateway.core.workflows.base.RECENT_EVENTS) so it passes without moving anything twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from dutylink.catalogue import Catalogue
from dutylink.v1 import event_pb2
from gateway.access.auth import Principal
from gateway.core.admission import Admitted, Commitment, Committed, RefusalKind, Refused
from gateway.core.kv import BatchTooLargeError, ConflictError, KeyValueStore, Snapshot, Write
from gateway.core.ports import StoreError
from gateway.core.workflows import judge, ledger_codec
from gateway.core.workflows.base import Actor
from gateway.core.workflows.base import AggregateState as LifecycleState
from gateway.core.workflows.judge import Changes, Judgement, Needs, Thread, View
from gateway.core.workflows.ledger_state import ItemKey, ItemLine, Ledger

log = structlog.get_logger("dutylink.lifecycle")

# Lost races before the events still in contention are refused as CONFLICT.
MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class _Read:
    """A view and the revision each of its entries was read at (a deleted entry: its deletion's
    revision; never written: not in `revisions`), and the present entries' bytes."""

    view: View
    revisions: dict[str, int]
    raw: dict[str, bytes]


class LifecycleGuard:
    """`StatefulGuards` for the catalogue's lifecycles and the resource ledger. `roles_of` gives
    the policy roles a principal holds (the catalogue maps them to its standing roles). Time is
    the batch's moment of receipt, as stamped on its events."""

    def __init__(
        self,
        kv: KeyValueStore,
        catalogue: Catalogue,
        roles_of: Callable[[Principal], frozenset[str]],
    ) -> None:
        self._kv = kv
        self.catalogue = catalogue
        self._roles_of = roles_of

    async def commit(
        self, principal: Principal, outcomes: Sequence[Admitted | Refused]
    ) -> Commitment:
        admitted = [o for o in outcomes if isinstance(o, Admitted)]
        needs = judge.needs(self.catalogue, [a.event for a in admitted])
        if not needs:
            return Committed(outcomes)
        roles = self.catalogue.standing_roles_of(self._roles_of(principal))
        actor = Actor(principal.agency, roles)
        events = [a.event for a in admitted]
        now = events[0].received_time.ToDatetime(tzinfo=UTC)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                read = await self._read(needs)
            except StoreError as error:
                return Committed(_refuse_admitted(outcomes, _unavailable(error)))
            judgement = judge.judge(self.catalogue, read.view, actor, events, now)
            writes = _writes(read, judgement)
            written, lost, failed = await self._write_all(read, writes)
            if failed is not None:
                return Committed(_refuse_admitted(outcomes, _unavailable(failed)))
            if not lost:
                answers = iter(_answers(admitted, judgement))
                return _LedgerCommitment(
                    [next(answers) if isinstance(o, Admitted) else o for o in outcomes],
                    [n for v in judgement.verdicts for n in v.notices],
                    _Written(
                        self, actor, events, now, read, written, {w.key: w.value for w in writes}
                    ),
                )
            log.info("lifecycle.race_lost", attempt=attempt, keys=sorted(lost)[:8])
        conflict = Refused(
            RefusalKind.CONFLICT,
            f"other gateway replicas kept changing the aggregates of this event "
            f"({MAX_ATTEMPTS} attempts); retry with the same event id",
        )
        return Committed(_refuse_admitted(outcomes, conflict))

    async def _read(self, needs: Needs) -> _Read:
        """Every entry `needs` names, then the item lines the thread index entries name."""
        thread_keys = {judge.thread_key(t): t for t in needs.threads}
        item_keys = {ledger_codec.kv_key(k): k for k in needs.items}
        first = await self._kv.get_many([*needs.aggregates, *thread_keys, *item_keys])
        found = first.entries
        threads: dict[Thread, frozenset[ItemKey]] = {}
        for key, thread in thread_keys.items():
            if key in found:
                threads[thread] = judge.decode_thread_index(found[key].value)
        indexed = {ledger_codec.kv_key(k): k for items in threads.values() for k in items}
        more = [key for key in indexed if key not in found and key not in item_keys]
        second = await self._kv.get_many(more) if more else Snapshot({}, {})
        found = found | second.entries
        deleted = first.deleted | second.deleted
        item_keys |= indexed
        aggregates = {
            key: LifecycleState.from_bytes(found[key].value) if key in found else None
            for key in needs.aggregates
        }
        items: dict[ItemKey, ItemLine] = {
            item: ledger_codec.decode(found[key].value)
            for key, item in item_keys.items()
            if key in found
        }
        view = View(aggregates, Ledger(items), threads)
        return _Read(
            view,
            deleted | {key: entry.revision for key, entry in found.items()},
            {key: entry.value for key, entry in found.items()},
        )

    async def _write_all(
        self, read: _Read, writes: Sequence[Write]
    ) -> tuple[dict[str, int], set[str], StoreError | None]:
        """Write all in one atomic batch: the revisions written, the keys of a lost race (then
        nothing was written), and the store's failure if there was one."""
        if not writes:
            return {}, set(), None
        try:
            written = await self._kv.write_all(writes)
        except BatchTooLargeError:
            return await self._write_each(read, writes)
        except ConflictError:
            return {}, {w.key for w in writes}, None
        except StoreError as error:
            return {}, set(), error
        return written, set(), None

    async def _write_each(
        self, read: _Read, writes: Sequence[Write]
    ) -> tuple[dict[str, int], set[str], StoreError | None]:
        """Write key by key; if any race was lost or the store failed, take the others back.
        For batches larger than the store writes atomically."""
        results = await asyncio.gather(*(self._write(w) for w in writes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, StoreError):
                raise result
        written = {w.key: r for w, r in zip(writes, results, strict=True) if isinstance(r, int)}
        lost = {w.key for w, r in zip(writes, results, strict=True) if isinstance(r, ConflictError)}
        failures = [
            r for r in results if isinstance(r, StoreError) and r.__class__ is not ConflictError
        ]
        if lost or failures:
            await self.restore(written, {key: read.raw.get(key) for key in written})
            return {}, lost, failures[0] if failures else None
        return written, set(), None

    async def _write(self, write: Write) -> int:
        if write.expected_revision == 0:
            return await self._kv.create(write.key, write.value)
        return await self._kv.update(write.key, write.value, write.expected_revision)

    async def restore(self, written: dict[str, int], values: dict[str, bytes | None]) -> None:
        """Put `values` back (None: the key was absent) over the revisions this guard wrote
        (compare-and-set), so nothing of a batch stays half-written."""

        async def undo(key: str, revision: int, value: bytes | None) -> None:
            try:
                if value is None:
                    await self._kv.delete(key, revision)
                else:
                    await self._kv.update(key, value, revision)
            except StoreError as error:
                # Someone built on it already, or the store is gone: the entry keeps the
                # change, remembered by event id, so a retry of the event passes.
                log.error("lifecycle.undo_failed", key=key, reason=str(error))

        await asyncio.gather(*(undo(k, written[k], values[k]) for k in written))


@dataclass(frozen=True)
class _Written:
    """A batch's transitions as written: what `take_back` needs to judge it again without
    the events that were never stored."""

    guard: LifecycleGuard
    actor: Actor
    events: Sequence[event_pb2.Event]
    now: datetime
    read: _Read
    revisions: dict[str, int]
    values: dict[str, bytes]


@dataclass(frozen=True)
class _LedgerCommitment:
    outcomes: Sequence[Admitted | Refused]
    notices: Sequence[event_pb2.Event]
    written: _Written

    async def take_back(self, not_stored: Sequence[Admitted]) -> None:
        """Judge the batch again from the state read, without `not_stored` (never stored, or
        stored before: retries), and put what that gives over the entries this batch wrote."""
        done = self.written
        dropped = {a.event.id for a in not_stored}
        kept = [e for e in done.events if e.id not in dropped]
        again = judge.judge(done.guard.catalogue, done.read.view, done.actor, kept, done.now)
        values: dict[str, bytes | None] = {key: done.read.raw.get(key) for key in done.revisions}
        values |= {w.key: w.value for w in _writes(done.read, again)}
        changed = {
            key: revision
            for key, revision in done.revisions.items()
            if values[key] != done.values[key]
        }
        if not changed:  # e.g. a retry of stored events, recognised by id: it moved nothing
            return
        log.warning("lifecycle.taken_back", events=sorted(dropped)[:8], keys=len(changed))
        await done.guard.restore(changed, {key: values[key] for key in changed})


def _refuse_admitted(
    outcomes: Sequence[Admitted | Refused], refusal: Refused
) -> list[Admitted | Refused]:
    return [refusal if isinstance(o, Admitted) else o for o in outcomes]


def _writes(read: _Read, judgement: Judgement) -> list[Write]:
    """The changed entries as writes on the revisions read."""
    changes: Changes = judgement.changes
    view = judgement.view
    writes: list[Write] = []
    for key in sorted(changes.aggregates):
        state = view.aggregates[key]
        assert state is not None  # a changed aggregate exists
        writes.append(Write(key, state.to_bytes(), read.revisions.get(key, 0)))
    for item in sorted(changes.items):
        key = ledger_codec.kv_key(item)
        value = ledger_codec.encode(view.ledger.items[item])
        writes.append(Write(key, value, read.revisions.get(key, 0)))
    for thread in sorted(changes.threads):
        key = judge.thread_key(thread)
        value = judge.encode_thread_index(view.threads[thread])
        writes.append(Write(key, value, read.revisions.get(key, 0)))
    return writes


def _answers(admitted: Sequence[Admitted], judgement: Judgement) -> list[Admitted | Refused]:
    answers: list[Admitted | Refused] = []
    for accepted, verdict in zip(admitted, judgement.verdicts, strict=True):
        if verdict.accepted:
            answers.append(accepted)
            continue
        answers.append(
            Refused(
                RefusalKind.ILLEGAL_TRANSITION,
                f"{accepted.event.type} refused: {judge.describe(verdict.problems)}",
                decision=accepted.decision,
                state_problems=verdict.problems,
            )
        )
    return answers


def _unavailable(error: StoreError) -> Refused:
    return Refused(
        RefusalKind.UNAVAILABLE,
        f"the lifecycle state cannot be read or written now ({error}); retry with the same "
        "event id",
    )
