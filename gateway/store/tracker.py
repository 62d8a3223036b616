"""The deadline tracker at the edge: per-recipient status of the messages agencies must take (a
warning, an assignment, a resource request, a task, anything a deadline names), kept in the
key-value store, and the escalation notices their deadlines call for. The decisions are
gateway.core.workflows.tracking's; keys and notices gateway.core.workflows.tracking_events'.

Three inputs, each safe to repeat and to run on any replica:
- `observe(delivery)`: every stored event, in stream order, from one internal consumer shared by
  the replicas (gateway.store.consumers, ONE_REPLICA). A message to track starts its entry
  (create-only: a redelivery finds it there); an acknowledgement answers one; an event that
  moves an aggregate tells the messages waiting for that state.
- `delivered(event, agency)`: a subscription of `agency` got the message. Recorded first as a
  create-only marker per (message, agency), so a delivery that comes before the entry exists is
  folded in when the entry starts.
- `check()`: every `interval` seconds, fire the escalation levels whose time has come.

Every change is a compare-and-set on the entry's revision; the loser reads again. Notices are
published *before* the entry that says they fired is written, with ids and bytes that depend
only on the entry: a replica that dies in between, or a race between two, publishes the same
notice again and JetStream stores it once. So each level fires once, and a late answer after an
escalation resolves it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import structlog

from dutylink.catalogue import Catalogue
from dutylink.policies import deadlines as deadline_rules
from dutylink.v1 import event_pb2
from gateway.access.auth import Principal
from gateway.access.authorization import Authorizer
from gateway.core.envelope import incident_ids
from gateway.core.kv import ConflictError, KeyValueStore, TooManyKeysError
from gateway.core.ports import StoreError
from gateway.core.workflows import tracking, tracking_codec
from gateway.core.workflows.base import AggregateRef
from gateway.core.workflows.machine import aggregate_refs
from gateway.core.workflows.recipients import recipients
from gateway.core.workflows.tracking import Escalation, Tracked
from gateway.core.workflows.tracking_events import (
    ANSWERABLE_TYPES,
    DUE_PREFIX,
    Answer,
    acknowledged_warnings,
    answer_in,
    delivered_prefix,
    due_key,
    entered_states,
    escalation_events,
    open_key,
    plane_prefix,
    reopened,
    tracked_key,
    tracked_of,
    watch_key,
    watchers,
    with_watcher,
)
from gateway.store.consumers import Delivery
from gateway.store.periodic import Clock, PeriodicCheck, utc_now

log = structlog.get_logger("dutylink.tracker")

PublishEvents = Callable[[Sequence[event_pb2.Event]], Awaitable[object]]

# Compare-and-set attempts on one entry before the change is left to a redelivery.
MAX_ATTEMPTS = 8
# Tracked messages read from the store at once by the timer.
_READ_AT_ONCE = 64


class Tracker(PeriodicCheck):
    """One replica's tracker over the aggregates bucket."""

    name = "tracker"

    def __init__(
        self,
        store: KeyValueStore,
        authorizer: Authorizer,
        catalogue: Catalogue,
        publish: PublishEvents,
        *,
        interval: float,
        max_tracked: int,
        clock: Clock = utc_now,
        on_notice: Callable[[event_pb2.Event], None] = lambda notice: None,
    ) -> None:
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        super().__init__(interval)
        self._store = store
        self._authorizer = authorizer
        self._catalogue = catalogue
        self._publish = publish
        self.max_tracked = max_tracked
        self.clock = clock
        self._on_notice = on_notice  # each escalation notice once its entry is written (metrics)

    # --- what is tracked -------------------------------------------------------------------

    def tracks(self, event: event_pb2.Event) -> bool:
        """Whether `event` is a message whose recipients are expected to take it."""
        if event.type in ANSWERABLE_TYPES:
            return True
        return bool(deadline_rules.deadlines_for(self._authorizer.policy, event))

    async def status(self, plane: int, sender: str, event_id: str) -> Tracked | None:
        """The tracked message, or None if it is not (yet) tracked."""
        entry = await self._store.get(tracked_key(plane, sender, event_id))
        return tracking_codec.decode(entry.value) if entry is not None else None

    async def pending(self, plane: int, *, sender: str = "", limit: int) -> list[Tracked]:
        """The tracked messages of `plane` (of `sender` only, when named) that some recipient has
        yet to answer, newest first, at most `limit`. Reads the open index: at most
        `max_tracked` messages still waiting (TooManyKeysError beyond, as for the timer)."""
        prefix = open_key(f"{plane_prefix(plane)}.{sender}" if sender else plane_prefix(plane))
        indexed = await self._store.keys(prefix, limit=self.max_tracked)
        found = await self._store.get_many([tracked_of(key) for key in indexed])
        waiting = []
        for key, entry in found.entries.items():
            try:
                tracked = tracking_codec.decode(entry.value)
            except ValueError as error:
                log.error("tracker.unreadable_entry", key=key, error=str(error))
                continue
            if _waiting(tracked):  # the index may lag the entry by one write
                waiting.append(tracked)
        waiting.sort(key=lambda tracked: (tracked.started, tracked.event_id), reverse=True)
        return waiting[:limit]

    # --- inputs ----------------------------------------------------------------------------

    async def observe(self, delivery: Delivery) -> None:
        """One stored event (the internal consumer's handler; raising means: deliver it again
        later)."""
        event = event_pb2.Event.FromString(delivery.data)
        at = deadline_rules.received_at(event)
        answer = answer_in(event)
        if answer is not None:
            await self._answer(event.plane, answer, at)
        for ref in acknowledged_warnings(event):
            await self._each_watching(
                ref,
                lambda t: tracking.answered(t, event.source, True, at, event.warning.sender),
            )
        own = tracked_key(event.plane, event.source, event.id)
        for ref in reopened(event, self._catalogue):
            await self._each_watching(ref, lambda t: tracking.restarted(t, at), but=own)
        for ref, state in entered_states(event, self._catalogue):
            await self._entered(ref, state, at, cause=own)
        if self.tracks(event):
            await self._start(event)

    async def delivered(self, event: event_pb2.Event, agency: str) -> None:
        """A subscription of `agency` got `event` (call it for the events `tracks` names)."""
        at = self.clock()
        marker = f"{delivered_prefix(event.plane, event.source, event.id)}.{agency}"
        try:
            await self._store.create(marker, at.isoformat().encode())
        except ConflictError:
            return  # delivered before: the first time counts
        await self._change(
            tracked_key(event.plane, event.source, event.id),
            lambda tracked: tracking.delivered(tracked, agency, at),
        )

    async def check(self) -> int:
        """Fire every escalation level due now; the number of notices published."""
        now = self.clock()
        try:
            indexed = await self._store.keys(DUE_PREFIX, limit=self.max_tracked)
        except TooManyKeysError as error:
            log.error("tracker.too_many_tracked", limit=self.max_tracked, error=str(error),
                      message="no deadline fires until tracking.max_tracked is raised")  # fmt: skip
            return 0
        except StoreError as error:
            log.warning("tracker.store_unavailable", error=str(error))
            return 0
        fired = 0
        keys = [tracked_of(key) for key in indexed]
        for start in range(0, len(keys), _READ_AT_ONCE):
            read = await self._store.get_many(keys[start : start + _READ_AT_ONCE])
            for key, entry in read.entries.items():
                try:
                    next_due = tracking_codec.decode(entry.value).next_due()
                except ValueError:
                    next_due = now  # _change logs it
                if next_due is None or next_due > now:
                    continue
                try:
                    fired += await self._change(key, lambda tracked: tracking.due(tracked, now))
                except StoreError as error:
                    log.warning("tracker.check_failed", key=key, error=str(error))
        return fired

    # --- the changes -----------------------------------------------------------------------

    async def _start(self, event: event_pb2.Event) -> None:
        policy = self._authorizer.policy
        key = tracked_key(event.plane, event.source, event.id)
        refs = aggregate_refs(event, self._catalogue)
        for ref in refs:  # before the entry: a redelivery finds the entry and stops
            await self._watch(ref, key)
        now = self.clock()

        def may_receive(agency: str) -> bool:
            profile = policy.agency(agency)
            roles = profile.roles if profile is not None else frozenset()
            principal = Principal(agency, roles)
            return self._authorizer.decide(principal, "receive", event, now).allowed

        found = recipients(event, policy.agency_ids, may_receive)
        armed = tracking.arm(
            deadline_rules.deadlines_for(policy, event),
            event,
            lambda level: deadline_rules.notified(policy, self._catalogue, level, event),
        )
        tracked = tracking.start(
            event.id,
            event.type,
            event.source,
            deadline_rules.received_at(event),
            policy.version,
            found.intended,
            found.withheld,
            armed,
            plane=event.plane,
            division_code=event.jurisdiction.division_code,
            incidents=incident_ids(event),
        )
        # The indexes before the entry, for the same reason.
        if tracked.next_due() is not None:
            await self._create(due_key(key), key.encode())
        if _waiting(tracked):
            await self._create(open_key(key), key.encode())
        if not await self._create(key, tracking_codec.encode(tracked)):
            return
        log.info("tracker.started", event_id=event.id, sender=event.source,
                 recipients=len(found.intended), deadlines=len(armed))  # fmt: skip
        # Deliveries recorded before the entry existed (one read for every recipient).
        prefix = delivered_prefix(event.plane, event.source, event.id)
        wanted = [f"{prefix}.{agency}" for agency in found.intended]
        markers = await self._store.get_many(wanted) if wanted else None
        for marker, entry in sorted(markers.entries.items() if markers else ()):
            agency = marker.rsplit(".", 1)[1]
            at = datetime.fromisoformat(entry.value.decode())
            await self._change(key, functools.partial(tracking.delivered, agency=agency, at=at))

    async def _answer(self, plane: int, answer: Answer, at: datetime) -> None:
        key = tracked_key(plane, answer.sender, answer.event_id)
        changed = await self._change(
            key,
            lambda tracked: tracking.answered(
                tracked, answer.agency, answer.acknowledged, at, answer.by, answer.reason
            ),
        )
        if changed < 0:
            log.info("tracker.answer_untracked", event_id=answer.event_id, sender=answer.sender,
                     agency=answer.agency)  # fmt: skip

    async def _entered(self, ref: AggregateRef, state: str, at: datetime, cause: str) -> None:
        """Tell the messages waiting on `ref` that it entered `state` (not the message that
        moved it there: its own transition is where its tracking starts)."""
        await self._each_watching(
            ref, lambda tracked: tracking.entered(tracked, state, at), but=cause
        )

    async def _each_watching(
        self,
        ref: AggregateRef,
        change: Callable[[Tracked], tuple[Tracked, list[Escalation]]],
        but: str = "",
    ) -> None:
        """Apply `change` to every tracked message that belongs to `ref` (but the one at key
        `but`)."""
        entry = await self._store.get(watch_key(ref))
        if entry is None:
            return
        try:
            listed = watchers(entry.value)
        except ValueError as error:
            log.error("tracker.unreadable_entry", key=watch_key(ref), error=str(error))
            return
        for key in listed:
            if key != but:
                await self._change(key, change)

    async def _watch(self, ref: AggregateRef, tracked: str) -> None:
        """List `tracked` under `ref` (compare-and-set: replicas may add at once)."""
        key = watch_key(ref)
        for _ in range(MAX_ATTEMPTS):
            entry = await self._store.get(key)
            value = with_watcher(entry.value if entry else None, tracked)
            if value is None:
                return
            try:
                if entry is None:
                    await self._store.create(key, value)
                else:
                    await self._store.update(key, value, entry.revision)
            except ConflictError:
                continue
            return
        raise ConflictError.lost("aggregates", key, 0)

    async def _unindex(self, index_key: str) -> None:
        """Take a message out of an index (the timer's, once nothing is left to fire; the open
        one, once everyone answered). A failure only leaves one more entry to read."""
        index = await self._store.get(index_key)
        if index is not None:
            with contextlib.suppress(ConflictError):
                await self._store.delete(index_key, index.revision)

    async def _create(self, key: str, value: bytes) -> bool:
        try:
            await self._store.create(key, value)
        except ConflictError:
            return False
        return True

    async def _change(
        self, key: str, change: Callable[[Tracked], tuple[Tracked, list[Escalation]]]
    ) -> int:
        """Apply `change` to the entry at `key` with compare-and-set, publishing the notices it
        raises first; the number of notices (-1: no such entry)."""
        for _ in range(MAX_ATTEMPTS):
            entry = await self._store.get(key)
            if entry is None:
                return -1
            try:
                current = tracking_codec.decode(entry.value)
            except ValueError as error:
                log.error("tracker.unreadable_entry", key=key, error=str(error))
                return 0
            changed, escalations = change(current)
            if changed == current:
                return 0
            notices = escalation_events(changed, escalations)
            if notices:
                await self._publish(notices)
            # Restarted or reopened: indexed again before it is written.
            if changed.next_due() is not None and current.next_due() is None:
                await self._create(due_key(key), key.encode())
            if _waiting(changed) and not _waiting(current):
                await self._create(open_key(key), key.encode())
            try:
                await self._store.update(key, tracking_codec.encode(changed), entry.revision)
            except ConflictError:
                await asyncio.sleep(0)
                continue
            if changed.next_due() is None and current.next_due() is not None:
                await self._unindex(due_key(key))
            if _waiting(current) and not _waiting(changed):
                await self._unindex(open_key(key))
            for notice in notices:
                self._on_notice(notice)
                log.info("tracker.escalation", notice=notice.type, event_id=changed.event_id,
                         deadline=notice.escalation.deadline_id, level=notice.escalation.level,
                         pending=list(notice.escalation.pending_agencies))  # fmt: skip
            return len(notices)
        raise ConflictError.lost("aggregates", key, 0)


def _waiting(tracked: Tracked) -> bool:
    """Whether some recipient has yet to answer (a deputy's answer covers the silent)."""
    return bool(tracking.summary(tracked).pending)
