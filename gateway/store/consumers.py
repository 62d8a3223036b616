"""A runner for the gateway's internal consumers (projections, timers): reads one stream's
messages in order through a durable JetStream pull consumer and hands each to an async handler.

    async with ConsumerRunner(js, spec, handler, replica="gw-1"):
        ...   # handler(delivery) runs for each message until the block ends

- Acked after the handler returns (and the ack confirmed), so a restart resumes after the last
  handled message: nothing acked is handled again, and nothing unacked is lost.
- A handler that raises gets the message again after `spec.backoff` (the next delay for each
  failure); after `spec.max_deliveries` tries it is reported (`on_gave_up`, a warning log line)
  and terminated, so the messages after it can go on.
- One message in flight per durable (`max_ack_pending` 1): messages are handled in stream
  order, redeliveries included, and in `ONE_REPLICA` mode also across replicas.
- `EVERY_REPLICA`: each replica its own durable (`<durable>_<replica>`), so each replica sees
  every message (e.g. an in-memory projection). `ONE_REPLICA`: one durable shared by all
  replicas, so each message is handled once among them (e.g. a timer that publishes).
- Stopping waits for the handler at work and the pull in flight (at most `spec.poll_seconds`):
  no pull request is left behind to swallow a message until its ack wait runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.core.ports import StoreUnavailableError
from gateway.core.started import Started
from gateway.core.streams import ConsumerSpec
from gateway.store.errors import STORE_FAILURES

log = structlog.get_logger("dutylink.consumers")
# After a failed pull (NATS away, a leader change): wait this long before the next.
_PULL_RETRY_SECONDS = 1.0
# How long an ack waits for JetStream's confirmation (a loaded server answers late, not never).
_ACK_CONFIRM_SECONDS = 5.0


@dataclass(frozen=True)
class Delivery:
    """A message as a handler sees it: plain values, no NATS types."""

    subject: str
    data: bytes
    stream_sequence: int
    attempt: int  # 1 on first delivery
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Delivery], Awaitable[None]]
GaveUp = Callable[[Delivery, BaseException], Awaitable[None]]


class ConsumerRunner(Started):
    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        replica: str,
        on_gave_up: GaveUp | None = None,
    ) -> None:
        self.spec = spec
        self.durable = spec.durable_for(replica)
        self._js = js
        self._handler = handler
        self._on_gave_up = on_gave_up
        self._pull: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        spec = self.spec
        config = api.ConsumerConfig(
            durable_name=self.durable,
            filter_subject=spec.filter_subject,
            deliver_policy=api.DeliverPolicy.NEW if spec.from_new else api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait,
            # One more than ours: a message whose runner died during its last try is
            # delivered once more, so it still reaches the code that reports it.
            max_deliver=spec.max_deliveries + 1,
            max_ack_pending=1,
        )
        try:
            if spec.replay_on_start:  # this replica's own durable: nobody else reads it
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._js.delete_consumer(spec.stream, self.durable)
            # Creates the durable, or finds it as a restart or another replica left it.
            await self._js.add_consumer(spec.stream, config)
            self._pull = await self._js.pull_subscribe_bind(self.durable, stream=spec.stream)
        except STORE_FAILURES as error:
            raise StoreUnavailableError(
                f"cannot start consumer {self.durable} on {spec.stream}: "
                f"{type(error).__name__}: {error}"
            ) from error
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(self._pull), name=f"consumer {self.durable}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await task
            except Exception:
                log.exception("consumer.crashed", durable=self.durable)
        if self._pull is not None:
            pull, self._pull = self._pull, None
            with contextlib.suppress(*STORE_FAILURES):
                await pull.unsubscribe()  # the durable stays: the next start resumes it

    async def _run(self, pull: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                messages = await pull.fetch(1, timeout=self.spec.poll_seconds)
            except nats.errors.TimeoutError:
                continue
            except STORE_FAILURES as error:  # NATS away, a leader change: try again
                log.warning("consumer.pull_failed", durable=self.durable, error=repr(error))
                await asyncio.sleep(_PULL_RETRY_SECONDS)
                continue
            for message in messages:
                await self._handle(message)

    async def _handle(self, message: Msg) -> None:
        meta = message.metadata
        delivery = Delivery(
            subject=message.subject,
            data=message.data,
            stream_sequence=meta.sequence.stream,
            attempt=meta.num_delivered or 1,
            headers=dict(message.headers or {}),
        )
        working = asyncio.create_task(self._keep_alive(message))
        try:
            await self._handler(delivery)
        except Exception as error:
            await self._failed(message, delivery, error)
            return
        finally:
            working.cancel()
        try:
            await message.ack_sync(timeout=_ACK_CONFIRM_SECONDS)
        except STORE_FAILURES as error:
            # Not confirmed: JetStream delivers it again after ack_wait; handlers are
            # idempotent per stream sequence for this reason.
            log.warning("consumer.ack_lost", durable=self.durable, error=repr(error))

    async def _keep_alive(self, message: Msg) -> None:
        """While the handler works, tell JetStream so twice per ack_wait: a slow handler is not
        given the message a second time; a dead one's is redelivered after ack_wait."""
        while True:
            await asyncio.sleep(self.spec.ack_wait / 2)
            with contextlib.suppress(*STORE_FAILURES):
                await message.in_progress()

    async def _failed(self, message: Msg, delivery: Delivery, error: Exception) -> None:
        if delivery.attempt < self.spec.max_deliveries:
            log.info(
                "consumer.retry",
                durable=self.durable,
                sequence=delivery.stream_sequence,
                attempt=delivery.attempt,
                error=repr(error),
            )
            with contextlib.suppress(*STORE_FAILURES):  # else: again after ack_wait
                await message.nak(delay=self.spec.delay_after(delivery.attempt))
            return
        log.warning(
            "consumer.gave_up",
            durable=self.durable,
            sequence=delivery.stream_sequence,
            attempts=delivery.attempt,
            error=repr(error),
        )
        if self._on_gave_up is not None:
            try:
                await self._on_gave_up(delivery, error)
            except Exception:
                log.exception("consumer.report_failed", durable=self.durable)
        with contextlib.suppress(*STORE_FAILURES):
            await message.term()
