"""What GetIncident tells the sender of an event and the command centre beyond the event itself:
the tracked messages' status (acknowledgements) and each event's recipients.

Both follow TrackingService's rule (gateway.core.workflows.tracking_view.may_see): an event's
sender, or the command centre; anyone else is told neither (not even that another agency was
kept from something). The recipient lines are gateway.core.projections.recipients'; this module
fetches what they are judged with: the policy in force when each event was received (the policy
archive; the current one, said so, only where the archive holds none), the grants on record at
that moment, and the tracker's entries (one read per tracked message, shared with the
acknowledgements).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dutylink.policies.engine import Decision
from dutylink.policies.model import Policy
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.access.auth import Principal
from gateway.access.authorization import Authorizer, FixedPolicy
from gateway.core.projections.board import Entry, IncidentView
from gateway.core.projections.recipients import RecipientLine, recipient_lines
from gateway.core.settings import Agency
from gateway.core.workflows.tracking import Tracked
from gateway.core.workflows.tracking_view import may_see, tracked_message
from gateway.store.policy_archive import PolicyArchive
from gateway.store.tracker import Tracker

# Tracked messages whose status one incident's answer carries, at most.
MAX_ACKNOWLEDGEMENTS = 100
# Events judged between two yields to the event loop (about 0.2 ms each with the sample policy,
# ten agencies: an incident at the board's bound of 5,000 events takes about a second).
YIELD_EVERY = 200

# Which events' extras the caller may be told: may_see for its agency and roles, by sender.
ShownTo = Callable[[event_pb2.Event], bool]
# A tracked message by (sender, event id).
TrackedBy = dict[tuple[str, str], Tracked]


def shown_to(authorizer: Authorizer, principal: Principal) -> ShownTo:
    """Whether `principal` may be told an event's recipients and status, with the roles the
    policy of `authorizer` (the one in force at the moment asked about) grants it."""
    roles = authorizer.held_roles(principal)
    return lambda event: may_see(event.source, principal.agency, roles)


async def tracked_statuses(
    tracker: Tracker | None, view: IncidentView, shown: ShownTo
) -> TrackedBy:
    """The tracker's entries for the incident's tracked messages the caller may ask about, in
    timeline order, at most MAX_ACKNOWLEDGEMENTS."""
    found: TrackedBy = {}
    if tracker is None:
        return found
    for entry in view.timeline:
        event = entry.event
        if not tracker.tracks(event) or not shown(event):
            continue
        tracked = await tracker.status(event.plane, event.source, event.id)
        if tracked is not None:
            found[(event.source, event.id)] = tracked
        if len(found) >= MAX_ACKNOWLEDGEMENTS:
            break
    return found


def acknowledgements(tracked: TrackedBy) -> list[gateway_pb2.TrackedMessage]:
    return [tracked_message(message) for message in tracked.values()]


@dataclass(frozen=True)
class RecipientsJudge:
    """Judges the recipients of an incident's events among the known `agencies`, each with the
    roles it is configured with (as its subscriptions hold them)."""

    agencies: Sequence[Agency]

    async def lines(
        self,
        archive: PolicyArchive | None,
        fallback: Authorizer,
        view: IncidentView,
        stored: Mapping[int, event_pb2.Event],
        shown: ShownTo,
        tracked: TrackedBy,
    ) -> dict[int, tuple[RecipientLine, ...]]:
        """The recipient lines of each event of `view` the caller may be told them of, by stream
        sequence; each judged on the event as stored (`stored`, by sequence), not as the caller
        was shown it, under the policy in force when it was received, with the grants active
        then (`fallback`'s, the authorizer of the moment asked about, where the archive holds
        no policy for then). Raises StoreError when the archive cannot be read."""
        entries = [e for e in view.timeline if e.sequence in stored and shown(e.event)]
        moments = [entry.received for entry in entries]
        policies = await archive.in_force_at_each(moments) if archive else [None] * len(entries)
        judges: dict[str, Authorizer] = {}  # one evaluator per policy version in this answer
        roles = {agency.id: frozenset(agency.roles) for agency in self.agencies}
        found = {}
        for done, (entry, policy) in enumerate(zip(entries, policies, strict=True), 1):
            if done % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long timeline does not hold up the other calls
            event = stored[entry.sequence]
            authorizer = _authorizer(policy, judges, fallback)
            found[entry.sequence] = recipient_lines(
                event,
                (agency.id for agency in self.agencies),
                _decide(authorizer, event, entry, roles),
                tracked=tracked.get((event.source, event.id)),
                policy_not_archived=policy is None,
            )
        return found


def _authorizer(
    policy: Policy | None, judges: dict[str, Authorizer], fallback: Authorizer
) -> Authorizer:
    if policy is None:
        return fallback
    if policy.version not in judges:
        judges[policy.version] = Authorizer(FixedPolicy(policy), fallback.grants)
    return judges[policy.version]


def _decide(
    authorizer: Authorizer,
    event: event_pb2.Event,
    entry: Entry,
    roles: Mapping[str, frozenset[str]],
) -> Callable[[str], Decision]:
    def decide(agency: str) -> Decision:
        # At the moment it was received: the grants active then, not those declared since.
        return authorizer.decide(Principal(agency, roles[agency]), "receive", event, entry.received)

    return decide
