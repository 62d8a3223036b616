"""This replica's duty board (gateway.core.projections.board), fed from the event stream.

An ordered consumer (no acks, nothing kept on the server: it goes with the connection) reads
every event from the stream's first, so each start rebuilds the board the stream says, and keeps
it live after; a gap (a reconnect, a lost message) makes nats-py start it again where it was.
Subscribers of `changes()` hear the incidents each event changed (the BoardService's stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from dutylink.v1 import event_pb2
from gateway.core import subjects
from gateway.core.ports import StoreUnavailableError
from gateway.core.projections.board import Board, IncidentKey
from gateway.core.projections.loop import LoopStep, incident_grade, loop_steps, takes_a_step
from gateway.core.sealing import SEALED_HEADER, Keyring, SealingError, open_sealed
from gateway.store.errors import STORE_FAILURES

log = structlog.get_logger("dutylink.board")
# A watcher slower than this many changes behind loses its oldest: it is told to read again.
_WATCH_QUEUE = 1024
# How long stopping waits for the consumer's unsubscribe before going on without it.
_STOP_SECONDS = 5.0

# A step of an incident's loop, with the incident's category and severity (for the metrics).
OnStep = Callable[[LoopStep, int, int], None]


def _ignore(step: LoopStep, category: int, severity: int) -> None:
    pass


# The sealing key ring in force when an event is folded (None: nothing to open with).
Keys = Callable[[], Keyring | None]


def _no_keys() -> Keyring | None:
    return None


class BoardFeed:
    """The board, and the consumer that feeds it once `follow` started it."""

    def __init__(self, on_step: OnStep = _ignore, keys: Keys = _no_keys) -> None:
        self.board = Board()
        self._on_step = on_step
        self._keys = keys
        self._stepped: dict[IncidentKey, set[str]] = {}
        self._subscription: JetStreamContext.PushSubscription | None = None
        self._watchers: set[asyncio.Queue[IncidentKey | None]] = set()
        self._folded = asyncio.Condition()

    async def follow(self, js: JetStreamContext) -> None:
        """Start folding the event stream from its first event."""
        try:
            self._subscription = await js.subscribe(
                f"{subjects.EVENTS_PREFIX}.>",
                stream=subjects.EVENTS_STREAM,
                cb=self._fold,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL,
                pending_msgs_limit=-1,
            )
        except STORE_FAILURES as error:
            raise StoreUnavailableError(f"cannot start the board's consumer: {error!r}") from error

    async def stop(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            # Bounded: a shutdown never waits on the store for the board (it holds nothing).
            with contextlib.suppress(*STORE_FAILURES, TimeoutError):
                async with asyncio.timeout(_STOP_SECONDS):
                    await subscription.unsubscribe()
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    async def _fold(self, message: Msg) -> None:
        sequence = message.metadata.sequence.stream
        try:
            event = event_pb2.Event.FromString(message.data)
        except Exception:  # the gateway stores only what it parsed; never crash the feed
            log.error("board.unreadable_event", sequence=sequence)
            return
        # The board shows each viewer what a delivery would carry: the personal fields too
        # (in memory only), where the policy lets the viewer have them.
        if sealed := (message.headers or {}).get(SEALED_HEADER):
            try:
                open_sealed(message.data, sealed, self._keys(), parsed=event)
            except SealingError as error:  # shown without its personal fields
                log.error("board.unopenable_event", sequence=sequence, reason=str(error))
        changed = self.board.add(message.metadata.sequence.stream, event)
        if takes_a_step(event):
            for key in changed:
                self._observe_steps(key)
        for key in changed:
            for queue in self._watchers:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(key)
        async with self._folded:
            self._folded.notify_all()

    def _observe_steps(self, key: IncidentKey) -> None:
        """Tell `on_step` of each step the incident reached that it was not told of yet (once
        per step and incident: a rebuild tells the history again, as the stream has it)."""
        events = [stored.event for stored in self.board.timeline(key)]
        told = self._stepped.setdefault(key, set())
        for step in loop_steps(events):
            if step.step not in told:
                told.add(step.step)
                self._on_step(step, *incident_grade(events, key.incident_id))

    async def folded_up_to(self, sequence: int, timeout: float) -> bool:
        """Wait until the board holds every event up to stream `sequence`; False on timeout."""
        try:
            async with asyncio.timeout(timeout), self._folded:
                await self._folded.wait_for(lambda: self.board.last_sequence >= sequence)
        except TimeoutError:
            return False
        return True

    async def changes(self) -> AsyncIterator[IncidentKey]:
        """The incidents changed from now on, until the feed stops."""
        queue: asyncio.Queue[IncidentKey | None] = asyncio.Queue(_WATCH_QUEUE)
        self._watchers.add(queue)
        try:
            while (key := await queue.get()) is not None:
                yield key
        finally:
            self._watchers.discard(queue)
