"""The failure drills' workload: publishers and subscribers that record every step in a
`gateway.testkit.history.History`, the final read through each node, and the audit check.

Publishers send incidents with ids `<publisher>-<counter>`, one event (or one batch) at a time,
retrying with the same ids while the answer is retryable, like a careful department system;
subscribers use `confirm_acks`, so an ack counts only once JetStream recorded it. The gateways
are reached through a multi-address gRPC target, as a client behind a load balancer would: when
one replica dies the channel moves to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import nats
import nats.errors
import nats.js.errors

from dutylink.adapters.sdk.client import (
    NO_RETRY,
    AckNotConfirmedError,
    DutyLinkClient,
    Subscription,
)
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.audit.note import Verifier
from gateway.audit.verify import verify_log
from gateway.core import subjects
from gateway.store.audit_reader import read_log
from gateway.testkit.cluster import LocalCluster
from gateway.testkit.history import History, Outcome
from tests.conftest import TOKENS
from tests.factories import incident_event

# A retryable answer leaves the outcome open: the event may or may not be stored.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
PUBLISHER_AGENCY = "fire"
# Batch results carry google.rpc codes (ints).
STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}


def target(addresses: Sequence[str], first: int = 0) -> str:
    """A gRPC target naming every gateway replica, starting with `first` (pick-first: the
    channel uses the first that answers and moves on when it fails)."""
    rotated = [*addresses[first:], *addresses[:first]]
    return "ipv4:" + ",".join(rotated)


async def until(condition: Callable[[], bool], within: float, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(interval)


def drill_event(event_id: str) -> event_pb2.Event:
    event = incident_event()
    event.id = event_id
    return event


@dataclasses.dataclass
class Counters:
    """What the workload saw, for a drill to show its fault had an effect."""

    retryable_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    reopened: int = 0

    def retried(self, code: grpc.StatusCode) -> None:
        self.retryable_errors[code.name] = self.retryable_errors.get(code.name, 0) + 1


class Workload:
    def __init__(
        self,
        history: History,
        addresses: Sequence[str],
        *,
        publishers: int = 2,
        batch: int = 0,
        pause: float = 0.01,
        give_up: float = 60.0,
    ) -> None:
        self.history = history
        self.addresses = list(addresses)
        self.publishers = publishers
        self.batch = batch  # 0: unary Publish; else PublishBatch of this many
        self.pause = pause  # between one publisher's sends
        self.give_up = give_up  # stop retrying one send after this long (outcome unknown)
        self.counters = Counters()
        self.publishing = asyncio.Event()
        self.published_count = 0
        self._reading: dict[str, asyncio.Event] = {}  # cleared: that subscriber is stalled
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribers: list[asyncio.Task[None]] = []
        self._draining = asyncio.Event()

    # --- publishers ------------------------------------------------------------------------------

    async def _send(self, client: DutyLinkClient, name: str, ids: list[str]) -> None:
        """Publish `ids` until each is acknowledged or refused, or `give_up` passes."""
        deadline = time.monotonic() + self.give_up
        remaining = list(ids)
        while remaining and time.monotonic() < deadline:
            try:
                if self.batch:
                    results = await client.publish_batch(
                        [drill_event(i) for i in remaining], timeout=10
                    )
                    retry = []
                    for event_id, result in zip(remaining, results, strict=True):
                        if result.HasField("receipt"):
                            self.history.published(name, event_id)
                        elif (code := STATUS_BY_CODE.get(result.error.code)) in RETRYABLE:
                            assert code is not None
                            self.counters.retried(code)
                            retry.append(event_id)
                        else:
                            self.history.refused(name, event_id)
                    remaining = retry
                else:
                    await client.publish(drill_event(remaining[0]), timeout=10)
                    self.history.published(name, remaining[0])
                    remaining = []
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    for event_id in remaining:
                        self.history.refused(name, event_id)
                    return
                self.counters.retried(error.code())
            if remaining:
                await asyncio.sleep(0.2)

    async def _publish(self, index: int) -> None:
        name = f"p{index}"
        client = DutyLinkClient(
            target(self.addresses, index % len(self.addresses)),
            token=TOKENS[PUBLISHER_AGENCY],
            retry=NO_RETRY,  # the workload retries itself, counting what it meets
        )
        counter = 0
        try:
            while self.publishing.is_set():
                ids = [f"{name}-{counter + k:06d}" for k in range(max(1, self.batch))]
                counter += len(ids)
                for event_id in ids:
                    self.history.attempted(name, event_id)
                await self._send(client, name, ids)
                self.published_count += len(ids)
                await asyncio.sleep(self.pause)
        finally:
            await client.close()

    # --- subscribers -----------------------------------------------------------------------------

    async def _open(self, client: DutyLinkClient, agency: str) -> Subscription:
        while True:
            subscription = client.subscribe(
                "drill", families=["incident"], max_in_flight=64, confirm_acks=True
            )
            try:
                await subscription.open()
                return subscription
            except grpc.aio.AioRpcError as error:
                await subscription.close()
                if error.code() not in RETRYABLE:
                    raise
                self.counters.retried(error.code())
                await asyncio.sleep(0.5)

    async def _subscribe(self, agency: str, first: int) -> None:
        client = DutyLinkClient(target(self.addresses, first), token=TOKENS[agency], retry=NO_RETRY)
        try:
            while True:
                subscription = await self._open(client, agency)
                try:
                    await self._read(subscription, agency)
                except* (grpc.aio.AioRpcError, ConnectionError, TimeoutError):
                    self.counters.reopened += 1
                finally:
                    await subscription.close(timeout=1.0)
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    async def _read(self, subscription: Subscription, agency: str) -> None:
        """Read deliveries and ack each in its own task, as a department system handling events
        concurrently would (and as `DutyLinkClient.consume` does): one confirmed ack at a time
        would make the subscriber's pace one ack round trip per event, which on a loaded
        machine falls far behind the publishers, so the drain would end with events unread."""
        async with asyncio.TaskGroup() as acks:  # a lost stream (an ack's error) ends them all
            while True:
                await self._reading[agency].wait()  # stalled: stops reading the stream
                delivery = await subscription.next(timeout=None)
                if delivery is None:
                    raise ConnectionError("the subscription ended")
                self.history.delivered(agency, delivery.event.id, sequence=delivery.stream_sequence)
                if not self._reading[agency].is_set():
                    continue  # stalled while this one was on its way: never acked
                acks.create_task(self._ack(subscription, agency, delivery))

    async def _ack(
        self, subscription: Subscription, agency: str, delivery: gateway_pb2.Delivery
    ) -> None:
        try:
            await subscription.ack(delivery, timeout=10)
        except AckNotConfirmedError:  # a redelivery superseded it, or JetStream failed
            self.history.ack_unconfirmed(agency, delivery.event.id)
            return
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            self.history.ack_unconfirmed(agency, delivery.event.id)  # sent: it may have landed
            raise
        self.history.confirmed(agency, delivery.event.id)

    # --- running ---------------------------------------------------------------------------------

    async def start(self, subscribers: Sequence[str] = ("police",)) -> None:
        """Subscribers first (new durable subscriptions start at "now"), then publishers."""
        for index, agency in enumerate(subscribers):
            self.history.subscriber(agency)
            self._reading[agency] = asyncio.Event()
            self._reading[agency].set()
            self._subscribers.append(
                asyncio.create_task(self._subscribe(agency, index % len(self.addresses)))
            )
        await asyncio.sleep(1.0)  # each subscription opened before the first event
        self.publishing.set()
        self._tasks = [asyncio.create_task(self._publish(i)) for i in range(self.publishers)]

    def stall(self, agency: str) -> None:
        """`agency`'s subscriber stops reading its stream (and acking) until `release`."""
        self._reading[agency].clear()

    def release(self) -> None:
        for reading in self._reading.values():
            reading.set()

    async def stop_publishing(self) -> None:
        self.publishing.clear()
        await asyncio.gather(*self._tasks)

    async def drain(self, within: float = 90.0) -> None:
        """Stop publishing, then let subscribers read until every acknowledged event is
        confirmed by each of them (or `within` passes: the checker then counts what is left)."""
        await self.stop_publishing()
        self.release()
        with contextlib.suppress(TimeoutError):
            await until(self._drained, within)
        for task in self._subscribers:
            task.cancel()
        await asyncio.gather(*self._subscribers, return_exceptions=True)

    def _drained(self) -> bool:
        acknowledged = {
            event
            for event, outcome in self.history.outcomes.items()
            if outcome is Outcome.ACKNOWLEDGED
        }
        return all(acknowledged <= record.confirmed for record in self.history.subscribers.values())

    async def run_until(self, count: int, within: float = 60.0) -> None:
        """Wait until publishers attempted at least `count` events in all."""

        def reached() -> bool:
            for task in [*self._tasks, *self._subscribers]:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise AssertionError("a workload task failed") from task.exception()
            return self.published_count >= count

        await until(reached, within)


# --- after the run ---------------------------------------------------------------------------


async def final_reads(cluster: LocalCluster, history: History, settle_within: float = 60.0) -> None:
    """Read the event stream through each node: with direct gets allowed, a node answers from its
    own replica (a request goes to a local responder first), so diverging replicas show.

    Reads wait until the stream's leader sees every replica current: just after a heal the meta
    group agrees while the stream's own group may still be catching up, and a replica catching
    up does not answer direct gets (the request times out). A read that timed out is asked
    again; an answer is never asked again, so a divergent replica still shows."""
    async with asyncio.timeout(settle_within):
        last = await _settled_last_sequence(cluster)
    for node, url in zip(cluster.plan.nodes, cluster.gateway_urls, strict=True):
        history.final_read(node.name, await _read_through(url, history, last))


async def _settled_last_sequence(cluster: LocalCluster) -> int:
    """The event stream's last sequence once every replica is current (direct gets on)."""
    admin = await nats.connect(cluster.gateway_urls)
    try:
        js = admin.jetstream(timeout=5)
        while True:
            with contextlib.suppress(
                nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError
            ):
                info = await js.stream_info(subjects.EVENTS_STREAM)
                if not info.config.allow_direct:
                    await js.update_stream(dataclasses.replace(info.config, allow_direct=True))
                    await asyncio.sleep(1.0)  # every replica subscribes to the direct-get subject
                    continue
                replicas = info.cluster.replicas if info.cluster else None
                if all(peer.current and not peer.lag for peer in replicas or []):
                    return info.state.last_seq
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _read_through(
    url: str, history: History, last: int, attempts: int = 50
) -> list[tuple[int, str]]:
    """(sequence, event id) of the history's events as the node at `url` answers them."""
    client = await nats.connect(url)
    try:
        js = client.jetstream(timeout=5)
        found: dict[int, str] = {}
        unanswered = list(range(1, last + 1))
        for _ in range(attempts):
            timed_out: list[int] = []
            for start in range(0, len(unanswered), 200):
                sequences = unanswered[start : start + 200]
                raws = await asyncio.gather(
                    *(js.get_msg(subjects.EVENTS_STREAM, seq=s, direct=True) for s in sequences),
                    return_exceptions=True,
                )
                for sequence, raw in zip(sequences, raws, strict=True):
                    if isinstance(raw, nats.errors.TimeoutError):
                        timed_out.append(sequence)
                    elif isinstance(raw, nats.js.errors.NotFoundError):
                        continue
                    elif isinstance(raw, BaseException):
                        raise raw
                    else:
                        event_id = event_pb2.Event.FromString(raw.data or b"").id
                        if event_id in history.outcomes:
                            found[sequence] = event_id
            if not timed_out:
                return sorted(found.items())
            unanswered = timed_out
            await asyncio.sleep(0.2)
        raise AssertionError(f"{url} did not answer direct gets for sequences {unanswered[:10]}")
    finally:
        await client.close()


async def verify_audit_logs(nats_urls: Sequence[str], gateways: dict[str, Path]) -> dict[str, int]:
    """Verify each gateway's audit log as an auditor would (`gateways`: id → its public key
    file); returns the entries per gateway. Raises AssertionError naming the problems."""
    client = await nats.connect(list(nats_urls))
    sizes = {}
    try:
        for gateway_id, key_file in gateways.items():
            stored = await read_log(client.jetstream(), gateway_id)
            key = Verifier.from_key_string(key_file.read_text().strip())
            report = verify_log(
                stored.entries,
                stored.checkpoints,
                key,
                gateway_id,
                frame_problems=stored.frame_problems,
            )
            assert report.ok, f"{gateway_id}: {report.problems}"
            sizes[gateway_id] = report.entries
    finally:
        await client.close()
    return sizes
