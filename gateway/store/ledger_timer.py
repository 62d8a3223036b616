"""The reservation-expiry timer: every `expiry_check_seconds` it reads the ledger's item lines
from the key-value store, and publishes an `inventory.reservation_expired` event for each
reservation past its expiry (gateway.core.workflows.expiry says which and builds them).

    timer = reservation_expiry_timer(store, publish, config.ledger)
    async with timer:   # checks at once, then every interval, until the block ends
        ...

- Survives restarts by construction: the reservations are in the store, so whichever replica
  looks next finds what is still due. Nothing is kept in memory that a restart would need.
- Fires once: every replica runs a timer, and they publish the same event with the same id for
  the same expiry; JetStream stores it once, and folding it again would change nothing.
- `publish` is the gateway's own publish pipeline (with the gateway's system principal): it
  returns when the events are accepted, stored or already stored, and raises otherwise. A
  failure is logged and tried again at the next check (the reservation is still in the store).
- Bounded: at most `max_items` item lines per plane and check. Past that the plane's expiries
  wait, with an error logged at each check, until the limit is raised; other planes go on.
- An entry that cannot be read (not an item line, or not the one its key names) is logged and
  skipped; it never stops the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from dutylink.v1 import common_pb2, event_pb2
from gateway.core.kv import KeyValueStore, TooManyKeysError
from gateway.core.ports import StoreError
from gateway.core.settings import LedgerSettings
from gateway.core.subjects import PLANE_TOKENS
from gateway.core.workflows.expiry import expiry_events
from gateway.core.workflows.ledger_state import ItemLine
from gateway.store.ledger_reader import item_lines
from gateway.store.periodic import Clock, PeriodicCheck, utc_now

log = structlog.get_logger("dutylink.ledger_timer")

# Publishes events through the gateway's admission pipeline; raises unless all were accepted.
PublishEvents = Callable[[Sequence[event_pb2.Event]], Awaitable[object]]

LEDGER_PREFIX = "ledger"
# Events handed to `publish` at once by default (pass `batch_size` to stay within a lower
# `[gateway] max_batch_events`).
PUBLISH_BATCH = 100


class ReservationExpiryTimer(PeriodicCheck):
    """One replica's timer over the store's ledger entries (gateway.store.periodic runs it)."""

    name = "ledger_timer"

    def __init__(
        self,
        store: KeyValueStore,
        publish: PublishEvents,
        *,
        interval: float,
        max_items: int,
        jurisdiction: common_pb2.Jurisdiction,
        clock: Clock = utc_now,
        batch_size: int = PUBLISH_BATCH,
    ) -> None:
        if max_items < 1 or batch_size < 1:
            raise ValueError("max_items and batch_size must be at least 1")
        super().__init__(interval)
        self._store = store
        self._publish = publish
        self.max_items = max_items
        self._jurisdiction = jurisdiction
        self._clock = clock
        self.batch_size = batch_size
        # Ids whose publish returned while their reservation was still due at the next check:
        # the store did not take the expiry in. Published again (the same id), and said loudly.
        self._published: set[str] = set()

    async def check(self) -> int:
        """Look once: publish the events of every reservation due now. The number of events
        whose publish returned."""
        items = await self._read_items()
        events = expiry_events(items, self._clock(), self._jurisdiction)
        due_ids = {event.id for event in events}
        for event in events:
            if event.id in self._published:
                log.warning(
                    "ledger_timer.still_due",
                    event_id=event.id,
                    agency=event.source,
                    item=event.inventory.reservation_expired.item_id,
                    message="its expiry was published but the ledger entry still holds the "
                    "reservation: publishing it again",
                )
        self._published &= due_ids
        published = 0
        for start in range(0, len(events), self.batch_size):
            batch = events[start : start + self.batch_size]
            try:
                await self._publish(batch)
            except Exception as error:  # the reservations stay in the store: next check
                log.warning(
                    "ledger_timer.publish_failed",
                    events=len(batch),
                    first_event_id=batch[0].id,
                    error=repr(error),
                    retry_seconds=self.interval,
                )
                continue
            published += len(batch)
            self._published.update(event.id for event in batch)
            log.info("ledger_timer.published", events=len(batch))
        return published

    async def _read_items(self) -> list[ItemLine]:
        """Every readable item line, plane by plane (a plane past the limit is skipped)."""
        items: list[ItemLine] = []
        for plane in PLANE_TOKENS.values():
            prefix = f"{LEDGER_PREFIX}.{plane}"
            try:
                entries = await self._store.entries(prefix, limit=self.max_items)
            except TooManyKeysError as error:
                log.error(
                    "ledger_timer.too_many_items",
                    plane=plane,
                    limit=self.max_items,
                    error=str(error),
                    message="this plane's reservations do not expire until ledger.max_items "
                    "is raised",
                )
                continue
            except StoreError as error:
                log.warning("ledger_timer.store_unavailable", plane=plane, error=str(error))
                continue
            items.extend(item_lines(entries, reader="ledger_timer"))
        return items


def reservation_expiry_timer(
    store: KeyValueStore,
    publish: PublishEvents,
    settings: LedgerSettings,
    *,
    clock: Clock = utc_now,
    batch_size: int = PUBLISH_BATCH,
) -> ReservationExpiryTimer:
    """The timer as the `[ledger]` settings configure it, over `store` (the aggregates
    bucket), publishing through `publish` at most `batch_size` events at a time."""
    return ReservationExpiryTimer(
        store,
        publish,
        interval=settings.expiry_check_seconds,
        max_items=settings.max_items,
        jurisdiction=common_pb2.Jurisdiction(division_code=settings.division_code),
        clock=clock,
        batch_size=batch_size,
    )
