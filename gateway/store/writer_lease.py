"""One writer per gateway id on a NATS: a lease, so two gateways started with the same
`gateway_id` never append to the same audit log.

The lease is the last message on `dutylink.writers.<gateway_id>` in a stream that keeps one
message per subject for `writer_lease_seconds`. Every write states the subject sequence it
expects to replace (`Nats-Expected-Last-Subject-Sequence`), so of two gateways racing for it one
wins and the other sees it held. The holder writes it again every third of the lease; a holder
that crashed stops doing so and its message lapses after the lease, so its successor waits that
long at most. A holder recorded with this host and this data directory is dead for sure (the
data-directory lock, which this gateway holds, would still be its): it is replaced at once, so
a gateway restarted after kill -9 does not wait. A clean stop writes an empty message: free.
Only subjects under `dutylink.>` and the stream API the gateway already uses are needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext

from gateway.core import subjects
from gateway.core.ports import StoreUnavailableError
from gateway.core.streams import writers_stream_spec
from gateway.store.streams import ensure_stream, stream_config

log = structlog.get_logger("dutylink.writer_lease")
# JetStream's error code for "wrong last sequence" (an expected-last-sequence header not met).
_WRONG_LAST_SEQUENCE = 10071
_NOT_FOUND = (nats.js.errors.NotFoundError,)
_NATS_FAILURES = (nats.errors.Error, asyncio.TimeoutError, OSError)
# JetStream removes a message a little after its max_age (~0.25 s measured): waited on top.
_EXPIRY_SLACK_SECONDS = 1.0
# A clean stop frees the lease if NATS answers this soon; else the lease lapses by itself.
_RELEASE_TIMEOUT_SECONDS = 2.0


class WriterLeaseError(RuntimeError):
    """Another live gateway holds this gateway id's lease."""


class _Taken(Exception):
    """A conditional write found another lease message than the one it expected."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: enough for an operator to find it, and an id for this process."""

    host: str
    pid: int
    data_dir: str
    instance: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, data directory {self.data_dir}"


def _decode(data: bytes | None) -> Holder | None:
    """The holder in a lease message; None for a released (empty) or unreadable one."""
    if not data:
        return None
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None


class WriterLease:
    """Take with `acquire`, keep with `keep` (a task until cancelled), give back with `release`."""

    def __init__(
        self,
        js: JetStreamContext,
        gateway_id: str,
        data_dir: str | Path,
        *,
        lease_seconds: float,
        replicas: int = 1,
        on_lost: Callable[[str], Awaitable[None]],
    ) -> None:
        self.gateway_id = gateway_id
        self.lease_seconds = lease_seconds
        self._js = js
        self._replicas = replicas
        self._on_lost = on_lost
        self._subject = subjects.writer_lease(gateway_id)
        self.me = Holder(
            host=socket.gethostname(),
            pid=os.getpid(),
            data_dir=str(Path(data_dir).resolve()),
            instance=uuid.uuid4().hex,
        )
        self._sequence = 0  # the subject sequence of our last lease message; 0: not held

    @property
    def held(self) -> bool:
        return self._sequence > 0

    async def _ensure_stream(self) -> None:
        spec = writers_stream_spec(self._replicas, self.lease_seconds)
        await ensure_stream(self._js, stream_config(spec))

    async def _current(self) -> tuple[int, Holder | None]:
        """The lease message now: its sequence (0: none) and holder (None: free)."""
        try:
            raw = await self._js.get_last_msg(subjects.WRITERS_STREAM, self._subject)
        except _NOT_FOUND:
            return 0, None
        return raw.seq or 0, _decode(raw.data)

    async def _write(self, payload: bytes, expected: int, timeout: float | None = None) -> int:
        try:
            ack = await self._js.publish(
                self._subject,
                payload,
                timeout=timeout,
                stream=subjects.WRITERS_STREAM,
                headers={"Nats-Expected-Last-Subject-Sequence": str(expected)},
            )
        except nats.js.errors.APIError as error:
            if error.err_code == _WRONG_LAST_SEQUENCE:
                raise _Taken from None
            raise
        return ack.seq

    def _free_for_me(self, holder: Holder | None) -> bool:
        return (
            holder is None
            or holder.instance == self.me.instance
            or (
                # Same host, same data directory: it held the lock this process holds now.
                (holder.host, holder.data_dir) == (self.me.host, self.me.data_dir)
            )
        )

    async def acquire(self) -> None:
        """Hold the lease, waiting at most `lease_seconds` (and a renewal, and JetStream's
        slack) for a crashed holder's to lapse; WriterLeaseError naming the holder if it
        does not."""
        payload = json.dumps(asdict(self.me)).encode()
        loop = asyncio.get_running_loop()
        wait = self.lease_seconds * 4 / 3 + _EXPIRY_SLACK_SECONDS
        deadline = loop.time() + wait
        try:
            await self._ensure_stream()
            while True:
                sequence, holder = await self._current()
                if self._free_for_me(holder):
                    try:
                        self._sequence = await self._write(payload, sequence)
                    except _Taken:
                        continue  # another gateway was quicker: look again
                    log.info("writer_lease.acquired", gateway_id=self.gateway_id)
                    return
                assert holder is not None
                if loop.time() >= deadline:
                    raise WriterLeaseError(
                        f"gateway id {self.gateway_id} is in use by another gateway on this NATS "
                        f"({holder.describe()}): two must not append to one audit log; stop it, "
                        f"or give this one another gateway_id"
                    )
                log.warning(
                    "writer_lease.held", gateway_id=self.gateway_id, holder=holder.describe()
                )
                await asyncio.sleep(min(self.lease_seconds / 3, deadline - loop.time()))
        except _NATS_FAILURES as error:
            raise StoreUnavailableError(
                f"cannot take the writer lease of gateway id {self.gateway_id}: "
                f"{type(error).__name__}: {error}"
            ) from error

    async def keep(self) -> None:
        """Renew the lease every third of `lease_seconds` until cancelled; if another gateway
        took it (after an outage longer than the lease), call `on_lost` once and return."""
        payload = json.dumps(asdict(self.me)).encode()
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                try:
                    self._sequence = await self._write(payload, self._sequence)
                    continue
                except _Taken:
                    sequence, holder = await self._current()
                if holder is not None and holder.instance == self.me.instance:
                    self._sequence = sequence  # our write went through, its answer got lost
                elif holder is None:  # lapsed while NATS was away, and nobody took it
                    self._sequence = await self._write(payload, sequence)
                else:
                    self._sequence = 0
                    await self._on_lost(
                        f"the writer lease of gateway id {self.gateway_id} was taken by "
                        f"another gateway ({holder.describe()})"
                    )
                    return
            except _Taken:
                continue  # raced again: the next round looks again
            except _NATS_FAILURES as error:
                # NATS away: nobody can write there meanwhile; renew when it is back.
                log.warning("writer_lease.not_renewed", error=f"{type(error).__name__}: {error}")

    async def release(self) -> None:
        """Leave the lease free for the next gateway with this id (best effort: a lease
        not released lapses by itself)."""
        if not self.held:
            return
        sequence, self._sequence = self._sequence, 0
        try:
            await self._write(b"", sequence, timeout=_RELEASE_TIMEOUT_SECONDS)
        except (_Taken, *_NATS_FAILURES) as error:
            log.warning("writer_lease.not_released", error=type(error).__name__)
