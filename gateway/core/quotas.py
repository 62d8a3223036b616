"""What each agency may hold of the gateway at once, so that one agency's bug or abuse degrades
only that agency: calls in progress (open subscriptions included), open subscriptions, and bytes
of publish requests being worked on. Pure accounting, no I/O: `Quotas.acquire` decides and
counts, `Quotas.release` gives back; the gRPC edge (gateway.rpc.quota_interceptor) calls them
around each call once it knows the caller.

`FairTurns` orders the expensive work of publishing (admission, which is CPU-bound and holds
the event loop) among agencies: round-robin over the agencies waiting, so that one agency's
many large batches queue behind each other instead of in front of everyone else's events.

The gateway-wide limits are kept here too (not by gRPC's own `maximum_concurrent_rpcs`, which
refuses before the caller is known and refuses health checks alike): health is never counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gateway.core.settings import GatewaySettings

# The bucket of callers that could not be authenticated (their calls are refused by the
# servicers, or are reflection): they share one agency's allowance, not the whole gateway.
UNAUTHENTICATED = ""


@dataclass(frozen=True)
class Limits:
    """The gateway-wide limits and each agency's share of them (config: [gateway])."""

    calls: int
    agency_calls: int
    agency_subscriptions: int
    publish_bytes: int
    agency_publish_bytes: int

    @classmethod
    def of(cls, settings: GatewaySettings) -> Limits:
        return cls(
            calls=settings.max_concurrent_rpcs,
            agency_calls=settings.agency_max_concurrent_rpcs,
            agency_subscriptions=settings.agency_max_subscriptions,
            publish_bytes=settings.max_publish_bytes_in_flight,
            agency_publish_bytes=settings.agency_max_publish_bytes_in_flight,
        )


@dataclass(frozen=True)
class Claim:
    """What one call holds until it ends."""

    agency: str
    subscription: bool = False
    publish_bytes: int = 0


@dataclass(frozen=True)
class Refusal:
    """A call not admitted: `message` names the limit (and its config key) that was reached."""

    message: str
    limit: str  # the config key, e.g. "agency_max_concurrent_rpcs" (for metrics)


@dataclass
class Usage:
    calls: int = 0
    subscriptions: int = 0
    publish_bytes: int = 0


def _who(agency: str) -> str:
    return f"agency '{agency}'" if agency != UNAUTHENTICATED else "unauthenticated callers"


@dataclass
class Quotas:
    """Counters per agency and in total."""

    limits: Limits
    total: Usage = field(default_factory=Usage)
    _agencies: dict[str, Usage] = field(default_factory=dict)

    def usage(self, agency: str) -> Usage:
        return self._agencies.get(agency, Usage())

    def acquire(
        self, agency: str, *, subscription: bool = False, publish_bytes: int = 0
    ) -> Claim | Refusal:
        """Count a call of `agency` in, or say which limit it would pass. Bytes: a request is
        admitted while nothing else of its agency (or of the gateway) is in flight even if it
        alone passes the limit, so a limit below the largest request slows, never blocks."""
        limits, total, mine = self.limits, self.total, self.usage(agency)
        who = _who(agency)
        if total.calls >= limits.calls:
            return Refusal(
                f"the gateway serves {total.calls} calls at once, its limit "
                f"(gateway.max_concurrent_rpcs = {limits.calls}); retry later",
                "max_concurrent_rpcs",
            )
        agency_calls = min(limits.agency_calls, limits.calls)
        if mine.calls >= agency_calls:
            return Refusal(
                f"{who} holds {mine.calls} calls at once, its limit "
                f"(gateway.agency_max_concurrent_rpcs = {agency_calls}); retry later",
                "agency_max_concurrent_rpcs",
            )
        if subscription and mine.subscriptions >= limits.agency_subscriptions:
            return Refusal(
                f"{who} holds {mine.subscriptions} open subscriptions, its limit "
                f"(gateway.agency_max_subscriptions = {limits.agency_subscriptions}); "
                "close one, or retry later",
                "agency_max_subscriptions",
            )
        if (
            publish_bytes
            and mine.publish_bytes
            and (mine.publish_bytes + publish_bytes > limits.agency_publish_bytes)
        ):
            return Refusal(
                f"{who} has {mine.publish_bytes} bytes of publish requests in progress; "
                f"{publish_bytes} more would pass its limit (gateway."
                f"agency_max_publish_bytes_in_flight = {limits.agency_publish_bytes}); retry later",
                "agency_max_publish_bytes_in_flight",
            )
        if (
            publish_bytes
            and total.publish_bytes
            and (total.publish_bytes + publish_bytes > limits.publish_bytes)
        ):
            return Refusal(
                f"the gateway has {total.publish_bytes} bytes of publish requests in progress; "
                f"{publish_bytes} more would pass its limit (gateway."
                f"max_publish_bytes_in_flight = {limits.publish_bytes}); retry later",
                "max_publish_bytes_in_flight",
            )
        mine = self._agencies.setdefault(agency, Usage())
        for usage in (total, mine):
            usage.calls += 1
            usage.subscriptions += subscription
            usage.publish_bytes += publish_bytes
        return Claim(agency, subscription, publish_bytes)

    def release(self, claim: Claim) -> None:
        mine = self._agencies[claim.agency]
        for usage in (self.total, mine):
            usage.calls -= 1
            usage.subscriptions -= claim.subscription
            usage.publish_bytes -= claim.publish_bytes
        if mine.calls == 0:
            del self._agencies[claim.agency]  # no entry per agency that once called


@dataclass
class FairTurns:
    """At most `slots` turns held at once; when all are held, the next turn goes to the agency
    waiting longest since its last turn (round-robin over agencies), each agency's waiters in
    their order of arrival. Pure: `request` returns a ticket and whether it may start now; a
    queued ticket is started by a later `finish` (which returns the tickets to start) or
    dropped by `cancel`."""

    slots: int
    held: int = 0
    _next_ticket: int = 0
    _waiting: dict[str, deque[int]] = field(default_factory=dict)  # agency → tickets, in order
    _rotation: deque[str] = field(default_factory=deque)  # agencies with waiters, next first

    def request(self, agency: str) -> tuple[int, bool]:
        self._next_ticket += 1
        ticket = self._next_ticket
        if self.held < self.slots and not self._rotation:
            self.held += 1
            return ticket, True
        if agency not in self._waiting:
            self._waiting[agency] = deque()
            self._rotation.append(agency)
        self._waiting[agency].append(ticket)
        return ticket, False

    def finish(self) -> list[int]:
        """A turn ended: the tickets that start now (at most one)."""
        self.held -= 1
        return self._start_next()

    def cancel(self, agency: str, ticket: int) -> None:
        """A queued ticket gave up (its call was cancelled) before its turn."""
        queue = self._waiting.get(agency)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._waiting[agency]
                self._rotation.remove(agency)

    def _start_next(self) -> list[int]:
        if self.held >= self.slots or not self._rotation:
            return []
        agency = self._rotation.popleft()
        queue = self._waiting[agency]
        ticket = queue.popleft()
        if queue:
            self._rotation.append(agency)  # its next waiter goes after the other agencies'
        else:
            del self._waiting[agency]
        self.held += 1
        return [ticket]
