"""Who received an event of an incident's timeline, and what the policy withheld from whom: one
line per agency but the sender, with the access policy's receive decision for it and, when the
gateway tracks the message, that agency's status with it (delivered, acknowledged, declined).

Pure: the decisions come in as a function (the edge judges them under the policy in force when
the event was received, so a later policy change does not rewrite the timeline), the tracked
status as a value. Who may be shown these lines (the sender and the command centre,
gateway.core.workflows.tracking_view.may_see) is the edge's to check.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dutylink.policies.engine import Decision
from dutylink.policies.redaction import redact
from dutylink.v1 import event_pb2
from gateway.core.workflows.recipients import others
from gateway.core.workflows.tracking import Recipient, Tracked

# The receive decision of the policy for one agency and the event at hand.
Decide = Callable[[str], Decision]


class Outcome(enum.Enum):
    RECEIVES = "receives"
    RECEIVES_REDACTED = "receives_redacted"  # some fields withheld
    WITHHELD = "withheld"  # the policy keeps the event from it


@dataclass(frozen=True)
class RecipientLine:
    agency: str
    outcome: Outcome
    rule_ids: tuple[str, ...]  # the allow rules, or the deny rules; none: no rule allows
    reason: str
    redacted_fields: tuple[str, ...]  # withheld from it, of those the event has
    policy_version: str
    policy_not_archived: bool  # judged under another policy: none on record for then
    tracked: Recipient | None  # its status when the message is tracked for it


def recipient_lines(
    event: event_pb2.Event,
    agencies: Iterable[str],
    decide: Decide,
    *,
    tracked: Tracked | None = None,
    policy_not_archived: bool = False,
) -> tuple[RecipientLine, ...]:
    """Every agency of `agencies` but the sender, sorted, with `decide(agency)`'s decision on
    `event` and the fields it withheld (those the event had: as a delivery reports them);
    `tracked` (the tracker's entry for the event) adds each one's status with it."""
    statuses = {r.agency: r for r in tracked.recipients} if tracked is not None else {}
    withheld_for: dict[tuple[str, ...], tuple[str, ...]] = {}  # agencies share redactions
    lines = []
    for agency in others(event, agencies):
        decision = decide(agency)
        paths = decision.redacted_fields if decision.allowed else ()
        if paths not in withheld_for:
            withheld_for[paths] = redact(event, paths)[1] if paths else ()
        withheld = withheld_for[paths]
        if not decision.allowed:
            outcome = Outcome.WITHHELD
        else:
            outcome = Outcome.RECEIVES_REDACTED if withheld else Outcome.RECEIVES
        lines.append(
            RecipientLine(
                agency,
                outcome,
                decision.rule_ids,
                decision.reason,
                withheld,
                decision.policy_version,
                policy_not_archived,
                statuses.get(agency),
            )
        )
    return tuple(lines)
