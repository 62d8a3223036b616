"""Break-glass declarations on JetStream (gateway.core.ports.Grants): kept for the mandatory
review, one per grant id, and followed by every replica."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.core import subjects
from gateway.core.ports import MESSAGE_ID_HEADER, Stored
from gateway.store.connection import NatsConnection
from gateway.store.errors import STORE_FAILURES, translate
from gateway.store.events import stored

# How long stopping waits for the follower's unsubscribe before going on without it.
_STOP_SECONDS = 5.0


class JetStreamGrants:
    def __init__(self, connection: NatsConnection) -> None:
        self._connection = connection
        self._following: JetStreamContext.PushSubscription | None = None

    async def record_grant(self, grant_id: str, data: bytes) -> Stored:
        """Keep a break-glass declaration (never deleted: it is listed for review)."""
        try:
            ack = await self._connection.js.publish(
                f"{subjects.GRANTS_PREFIX}.{grant_id}",
                data,
                stream=subjects.GRANTS_STREAM,
                headers={MESSAGE_ID_HEADER: grant_id},
            )
        except STORE_FAILURES as error:
            raise translate(error) from error
        return stored(ack)

    async def follow_grants(self, on_grant: Callable[[bytes], None]) -> None:
        """Replay every recorded declaration, then keep delivering new ones as they come."""

        async def deliver(message: Msg) -> None:
            on_grant(message.data)

        try:
            self._following = await self._connection.js.subscribe(
                f"{subjects.GRANTS_PREFIX}.>",
                stream=subjects.GRANTS_STREAM,
                cb=deliver,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL,
            )
        except STORE_FAILURES as error:
            raise translate(error) from error

    async def stop_following(self) -> None:
        """Stop the follower before the connection closes: an ordered consumer left open keeps
        nats-py's heartbeat and flow-control tasks pending past the connection's end."""
        following, self._following = self._following, None
        if following is not None:
            with contextlib.suppress(*STORE_FAILURES, TimeoutError):
                async with asyncio.timeout(_STOP_SECONDS):
                    await following.unsubscribe()
