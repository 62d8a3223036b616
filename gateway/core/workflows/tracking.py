"""Business acknowledgement and escalation for one message (a warning, an assignment, a resource
request, a task): which agencies it was meant for, which of them it reached, which took it
(acknowledged) or turned it down (declined, with a reason), and the deadlines that escalate
when they pass. Pure: no I/O; time comes in as arguments.
Long because the fold is one state machine: recipients, deputies, deadlines and their levels
meet and resolve each other, and its invariants read best in one place.

A transport ack says a system received bytes; here each intended recipient agency moves
pending → delivered → acknowledged | declined, and one the policy withholds the message from is
`withheld`: never counted as missing. A deadline is armed when tracking starts, from the rules
in force then (their version is kept, so a changed configuration applies only to messages
tracked after it). When it passes unmet, its levels fire in order, each at most once: an
escalation names the agencies still pending and whom to notify. A late answer is still
recorded; if it meets a deadline that had escalated, the deadline resolves (once) rather than
escalating again.

The edge (gateway.store.tracker) keeps the entries and publishes what the folds return as
the gateway's own escalation events.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from dutylink.policies import deadlines as rules
from dutylink.policies.model import Deadline, EscalationLevel
from dutylink.v1 import event_pb2


class Status(enum.Enum):
    PENDING = "pending"  # meant for it, not yet delivered to any of its subscriptions
    DELIVERED = "delivered"  # delivered at least once, not answered
    ACKNOWLEDGED = "acknowledged"
    DECLINED = "declined"
    WITHHELD = "withheld"  # the policy keeps the message from it: not expected to answer


ANSWERED = frozenset({Status.ACKNOWLEDGED, Status.DECLINED})


class Expect(enum.Enum):
    """What meets a deadline."""

    DELIVERED = "delivered"  # every intended recipient has it
    ACKNOWLEDGED = "acknowledged"  # every intended recipient answered (declining is an answer)
    STATE = "state"  # the tracked aggregate entered one of `ArmedDeadline.states`


@dataclass(frozen=True)
class Recipient:
    agency: str
    status: Status = Status.PENDING
    delivered_at: datetime | None = None
    answered_at: datetime | None = None
    answered_by: str = ""  # the person or post that acknowledged or declined
    reason: str = ""  # why it declined
    # A deputy the message was re-routed to by an escalation: the agencies it stands in for
    # (its acknowledgement answers for those still silent).
    deputy_for: tuple[str, ...] = ()

    @property
    def outstanding(self) -> bool:
        """Expected to answer and has not."""
        return self.status in (Status.PENDING, Status.DELIVERED)


@dataclass(frozen=True)
class ArmedLevel:
    """One escalation level: fires `after` the deadline passed, notifies `notify` (agencies,
    resolved from the rule's agencies and standing roles when the deadline was armed) and
    re-routes the message to `deputies`."""

    after: timedelta
    notify: tuple[str, ...]
    deputies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArmedDeadline:
    """A deadline rule armed for one message: met by `expect` before `due`, escalating through
    `levels` (ordered by `after`) if not. `fired` counts the levels that fired; `resolved_at`
    is when it was met after having escalated."""

    deadline_id: str
    expect: Expect
    due: datetime
    levels: tuple[ArmedLevel, ...]
    states: tuple[str, ...] = ()  # with Expect.STATE: any one of them meets it
    fired: int = 0
    met_at: datetime | None = None
    resolved_at: datetime | None = None

    def __post_init__(self) -> None:
        afters = [level.after for level in self.levels]
        if not self.levels or afters != sorted(set(afters)) or afters[0] < timedelta(0):
            raise ValueError(
                f"deadline {self.deadline_id}: levels need distinct, ascending, non-negative delays"
            )
        if (self.expect is Expect.STATE) != bool(self.states):
            raise ValueError(
                f"deadline {self.deadline_id}: states are named with Expect.STATE only"
            )

    def fires_at(self, level: int) -> datetime:
        """When level `level` (1-based) fires if the deadline is not met."""
        return self.due + self.levels[level - 1].after


@dataclass(frozen=True)
class Escalation:
    """What the edge publishes as `escalation.raised` (or `escalation.resolved`)."""

    event_id: str
    deadline_id: str
    level: int
    resolved: bool
    pending: tuple[str, ...]
    notify: tuple[str, ...]
    deputies: tuple[str, ...]
    due: datetime
    rules_version: str


@dataclass(frozen=True)
class Tracked:
    """One tracked message: its recipients (sorted by agency) and armed deadlines."""

    event_id: str
    event_type: str
    sender: str
    started: datetime
    rules_version: str
    recipients: tuple[Recipient, ...]
    deadlines: tuple[ArmedDeadline, ...] = ()
    states: tuple[str, ...] = ()  # the aggregate states entered since tracking started
    plane: int = 0  # the message's plane and jurisdiction: its escalations go out in them
    division_code: str = ""
    incidents: tuple[str, ...] = ()  # the incidents it belongs to: its escalations name them
    restarted_at: datetime | None = None  # when its aggregate was last reopened

    def recipient(self, agency: str) -> Recipient | None:
        return next((r for r in self.recipients if r.agency == agency), None)

    def next_due(self) -> datetime | None:
        """When `due` next has something to do (None: nothing left)."""
        times = [
            d.fires_at(d.fired + 1)
            for d in self.deadlines
            if d.met_at is None and d.fired < len(d.levels)
        ]
        return min(times, default=None)


def arm(
    deadlines: Sequence[Deadline],
    event: event_pb2.Event,
    notified: Callable[[EscalationLevel], Iterable[str]],
) -> tuple[ArmedDeadline, ...]:
    """The policy's `deadlines` for `event` (dutylink.policies.deadlines.deadlines_for), armed: due from
    its receipt, each level's agencies resolved now by `notified` (the deputies among them)."""
    return tuple(
        ArmedDeadline(
            deadline_id=deadline.id,
            expect=Expect(deadline.expect),
            due=rules.due(deadline, event),
            levels=tuple(
                ArmedLevel(level.after, tuple(sorted(notified(level))), tuple(level.deputy))
                for level in deadline.escalate
            ),
            states=deadline.states,
        )
        for deadline in deadlines
    )


def start(
    event_id: str,
    event_type: str,
    sender: str,
    started: datetime,
    rules_version: str,
    intended: Iterable[str],
    withheld: Iterable[str] = (),
    deadlines: Sequence[ArmedDeadline] = (),
    plane: int = 0,
    division_code: str = "",
    incidents: Iterable[str] = (),
) -> Tracked:
    """Tracking from the moment the message was accepted. `withheld`: agencies among the
    intended that the policy keeps it from. The sender is never its own recipient."""
    kept_from = set(withheld)
    agencies = sorted(set(intended) - {sender})
    recipients = tuple(
        Recipient(a, Status.WITHHELD if a in kept_from else Status.PENDING) for a in agencies
    )
    tracked = Tracked(
        event_id,
        event_type,
        sender,
        started,
        rules_version,
        recipients,
        tuple(deadlines),
        plane=plane,
        division_code=division_code,
        incidents=tuple(dict.fromkeys(incidents)),
    )
    return _settle(tracked, started)[0]


def delivered(tracked: Tracked, agency: str, at: datetime) -> tuple[Tracked, list[Escalation]]:
    """The message reached one of `agency`'s subscriptions at `at` (the first time counts)."""
    found = tracked.recipient(agency)
    if found is None or found.status is not Status.PENDING:
        return tracked, []
    return _settle(_with(tracked, replace(found, status=Status.DELIVERED, delivered_at=at)), at)


def answered(
    tracked: Tracked,
    agency: str,
    acknowledged: bool,
    at: datetime,
    by: str = "",
    reason: str = "",
) -> tuple[Tracked, list[Escalation]]:
    """`agency` acknowledged (or declined, with `reason`) the message at `at`; what that
    resolves. The first answer counts; an agency the message was not meant for, or withheld
    from, changes nothing (the edge audits its answer all the same)."""
    found = tracked.recipient(agency)
    if found is None or found.status in ANSWERED or found.status is Status.WITHHELD:
        return tracked, []
    status = Status.ACKNOWLEDGED if acknowledged else Status.DECLINED
    answer = replace(
        found,
        status=status,
        answered_at=at,
        answered_by=by,
        reason=reason,
        delivered_at=found.delivered_at or at,
    )
    return _settle(_with(tracked, answer), at)


def entered(tracked: Tracked, state: str, at: datetime) -> tuple[Tracked, list[Escalation]]:
    """The tracked aggregate entered `state` at `at`."""
    if state in tracked.states:
        return tracked, []
    return _settle(replace(tracked, states=(*tracked.states, state)), at)


def restarted(tracked: Tracked, at: datetime) -> tuple[Tracked, list[Escalation]]:
    """Its aggregate was reopened at `at`: every deadline starts over, as long as it was when
    armed, its levels unfired; the states entered before no longer count. The same reopening
    told twice changes nothing."""
    if tracked.restarted_at is not None and at <= tracked.restarted_at:
        return tracked, []
    deadlines = tuple(
        replace(d, due=at + (d.due - tracked.started), fired=0, met_at=None, resolved_at=None)
        for d in tracked.deadlines
    )
    return _settle(replace(tracked, deadlines=deadlines, states=(), restarted_at=at), at)


def due(tracked: Tracked, now: datetime) -> tuple[Tracked, list[Escalation]]:
    """Fire every level whose time has come (each at most once), oldest first."""
    escalations: list[Escalation] = []
    deadlines = []
    for deadline in tracked.deadlines:
        while (
            deadline.met_at is None
            and deadline.fired < len(deadline.levels)
            and deadline.fires_at(deadline.fired + 1) <= now
        ):
            deadline = replace(deadline, fired=deadline.fired + 1)
            escalation = _escalation(tracked, deadline, resolved=False)
            escalations.append(escalation)
            tracked = _rerouted(tracked, escalation)
        deadlines.append(deadline)
    return replace(tracked, deadlines=tuple(deadlines)), escalations


def _rerouted(tracked: Tracked, escalation: Escalation) -> Tracked:
    """The message re-routed to the escalation's deputies: each becomes a recipient that
    answers for the agencies still pending (one already a recipient stays as it is)."""
    for deputy in escalation.deputies:
        if deputy != tracked.sender and tracked.recipient(deputy) is None and escalation.pending:
            tracked = _with(tracked, Recipient(deputy, deputy_for=escalation.pending))
    return tracked


def _with(tracked: Tracked, recipient: Recipient) -> Tracked:
    others = [r for r in tracked.recipients if r.agency != recipient.agency]
    return replace(tracked, recipients=tuple(sorted([*others, recipient], key=lambda r: r.agency)))


def _met(tracked: Tracked, deadline: ArmedDeadline) -> bool:
    if deadline.expect is Expect.STATE:
        return any(state in tracked.states for state in deadline.states)
    return not outstanding(tracked, deadline)


def _awaited(tracked: Tracked) -> list[Recipient]:
    """The recipients an acknowledgement is still awaited from: unanswered ones no deputy has
    answered for, and deputies while someone they stand in for is such a one."""
    covered = {
        agency
        for r in tracked.recipients
        if r.deputy_for and r.status is Status.ACKNOWLEDGED
        for agency in r.deputy_for
    }
    silent = {
        r.agency
        for r in tracked.recipients
        if r.outstanding and not r.deputy_for and r.agency not in covered
    }
    return [
        r
        for r in tracked.recipients
        if (r.agency in silent) or (r.deputy_for and r.outstanding and silent & set(r.deputy_for))
    ]


def _settle(tracked: Tracked, at: datetime) -> tuple[Tracked, list[Escalation]]:
    """Mark the deadlines this change met; one that had escalated resolves (once)."""
    resolutions = []
    deadlines = []
    for deadline in tracked.deadlines:
        if deadline.met_at is None and _met(tracked, deadline):
            deadline = replace(deadline, met_at=at)
            if deadline.fired:
                deadline = replace(deadline, resolved_at=at)
                resolutions.append(_escalation(tracked, deadline, resolved=True))
        deadlines.append(deadline)
    return replace(tracked, deadlines=tuple(deadlines)), resolutions


def _escalation(tracked: Tracked, deadline: ArmedDeadline, *, resolved: bool) -> Escalation:
    level = deadline.levels[deadline.fired - 1]
    pending = () if resolved else outstanding(tracked, deadline)
    return Escalation(
        tracked.event_id,
        deadline.deadline_id,
        deadline.fired,
        resolved,
        pending,
        level.notify,
        () if resolved else level.deputies,
        deadline.due,
        tracked.rules_version,
    )


def outstanding(tracked: Tracked, deadline: ArmedDeadline) -> tuple[str, ...]:
    """The agencies a deadline still waits for (none for a state deadline: it waits for the
    aggregate, whose assigned agencies the edge names)."""
    if deadline.expect is Expect.STATE:
        return ()
    if deadline.expect is Expect.DELIVERED:
        return tuple(
            r.agency for r in tracked.recipients if r.status is Status.PENDING and not r.deputy_for
        )
    return tuple(r.agency for r in _awaited(tracked))


@dataclass(frozen=True)
class Summary:
    """The status of one message as the sender and the command centre see it."""

    intended: int  # recipients expected to answer (withheld ones and deputies left out)
    delivered: int
    acknowledged: int
    declined: int
    pending: tuple[str, ...]  # expected, not answered (nor answered for by a deputy)
    withheld: tuple[str, ...]
    rerouted: tuple[str, ...] = ()  # the deputies an escalation re-routed the message to

    def __str__(self) -> str:
        """ "delivered 9 of 9, acknowledged 7, declined 1, pending 1: transport"."""
        text = (
            f"delivered {self.delivered} of {self.intended}, acknowledged "
            f"{self.acknowledged}, declined {self.declined}, pending {len(self.pending)}"
        )
        if self.pending:
            text += ": " + ", ".join(self.pending)
        if self.withheld:
            text += f"; withheld by policy from {', '.join(self.withheld)}"
        if self.rerouted:
            text += f"; re-routed to {', '.join(self.rerouted)}"
        return text


def summary(tracked: Tracked) -> Summary:
    expected = [
        r for r in tracked.recipients if r.status is not Status.WITHHELD and not r.deputy_for
    ]
    awaited = {r.agency for r in _awaited(tracked)}
    return Summary(
        intended=len(expected),
        delivered=sum(1 for r in expected if r.status is not Status.PENDING),
        acknowledged=sum(1 for r in expected if r.status is Status.ACKNOWLEDGED),
        declined=sum(1 for r in expected if r.status is Status.DECLINED),
        pending=tuple(r.agency for r in expected if r.agency in awaited),
        withheld=tuple(r.agency for r in tracked.recipients if r.status is Status.WITHHELD),
        rerouted=tuple(r.agency for r in tracked.recipients if r.deputy_for),
    )
