"""The policy evaluator: (agency, roles, action, event) -> `Decision`. Pure and clock-free.

Rules are compiled once per policy into lookups keyed by (action, family, agency), so a decision
only looks at the rules that can apply to it. Deny overrides allow; nothing allowed is denied
("no rule allows"). A receive decision also carries the fields to withhold (the redactions that
apply to the receiver, minus what active break-glass grants un-redact); `redaction.redact`
applies them. An agency's own events are never redacted for it: it already holds the data.

Roles count only when the caller holds them *and* the policy gives them to its agency, so a
gateway configuration cannot widen what the reviewed policy grants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dutylink.policies.model import (
    ACTIONS,
    ANY,
    CLASSIFICATIONS,
    FAMILIES,
    INCIDENT_CATEGORIES,
    INCIDENT_SEVERITIES,
    PLANES,
    PRIORITIES,
    Grant,
    Policy,
    Rule,
    incident_ids,
    jurisdiction_error,
    name_of,
    resolve_agencies,
    type_pattern_error,
    type_scope,
)
from dutylink.policies.redaction import covers, field_path_error, minimal_paths
from dutylink.v1 import event_pb2


@dataclass(frozen=True)
class Decision:
    """What the policy says about one (agency, action, event).

    `rule_ids`: every matching allow rule (plus the grants that took effect) when allowed, the
    matching deny rules when denied, empty when no rule allows. `redacted_fields`: paths to
    withhold before delivery (receive only); `redaction_ids`: the redactions they come from.
    """

    allowed: bool
    rule_ids: tuple[str, ...]
    reason: str
    redacted_fields: tuple[str, ...] = ()
    policy_version: str = ""
    redaction_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    """How one rule fared in `Evaluator.explain`: `outcome` is "matches" or why it does not."""

    rule_id: str
    effect: str
    outcome: str


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    checks: tuple[Check, ...]


class _CompiledRule:
    """A rule's conditions for one family, as sets and tuples ready for quick tests."""

    __slots__ = ("agencies", "categories", "effect", "id", "max_classification",
                 "min_classification", "min_priority", "min_severity", "names",
                 "only_parties", "planes", "prefixes", "roles")  # fmt: skip

    def __init__(self, rule: Rule, names: frozenset[str] | None, agencies: frozenset[str]):
        self.id = rule.id
        self.effect = rule.effect
        self.agencies = agencies
        self.names = names
        self.planes = rule.planes
        self.min_classification = rule.min_classification
        self.max_classification = rule.max_classification
        self.min_priority = rule.min_priority
        self.roles = rule.roles
        self.prefixes = tuple(rule.jurisdictions)
        self.categories = rule.categories
        self.min_severity = rule.min_severity
        self.only_parties = rule.only_parties

    def matches(
        self,
        event_type: str,
        division: str,
        plane: int,
        classification: int,
        priority: int,
        roles: frozenset[str],
        event: event_pb2.Event,
        agency: str,
    ) -> bool:
        # Kept in step with `mismatch` (a property test checks they agree); this one is the
        # hot path, so it builds no strings.
        return (
            (self.names is None or event_type in self.names)
            and (not self.planes or plane in self.planes)
            and self.min_classification <= classification <= self.max_classification
            and priority >= self.min_priority
            and (not self.roles or not self.roles.isdisjoint(roles))
            and (not self.prefixes or division.startswith(self.prefixes))
            and (not self.categories or event.incident.category in self.categories)
            and (not self.min_severity or 0 < event.incident.severity <= self.min_severity)
            and (not self.only_parties or agency in parties(event))
        )

    def mismatch(self, agency: str, roles: frozenset[str], event: event_pb2.Event) -> str | None:
        """Why the rule does not match, for people; None when it matches."""
        level, division = event.classification, event.jurisdiction.division_code
        incident = event.incident
        if agency not in self.agencies:
            return f"not for agency {agency}"
        if self.names is not None and event.type not in self.names:
            return f"type {event.type} is not one of {', '.join(sorted(self.names))}"
        if self.planes and event.plane not in self.planes:
            return (
                f"plane {_named(PLANES, event.plane)} is not one of {_named(PLANES, *self.planes)}"
            )
        if level < self.min_classification:
            return f"classification {_named(CLASSIFICATIONS, level)} is below {_named(CLASSIFICATIONS, self.min_classification)}"
        if level > self.max_classification:
            return f"classification {_named(CLASSIFICATIONS, level)} is above the ceiling {_named(CLASSIFICATIONS, self.max_classification)}"
        if event.priority < self.min_priority:
            return f"priority {_named(PRIORITIES, event.priority)} is below {_named(PRIORITIES, self.min_priority)}"
        if self.roles and self.roles.isdisjoint(roles):
            return f"needs one of the roles {', '.join(sorted(self.roles))}"
        if self.prefixes and not division.startswith(self.prefixes):
            return f"jurisdiction {division or '(none)'} is outside {', '.join(self.prefixes)}"
        if self.categories and incident.category not in self.categories:
            return f"incident category {_named(INCIDENT_CATEGORIES, incident.category)} is not one of {_named(INCIDENT_CATEGORIES, *self.categories)}"
        if self.min_severity and not 0 < incident.severity <= self.min_severity:
            needed = f"{_named(INCIDENT_SEVERITIES, self.min_severity)} or graver"
            if not incident.severity:
                return f"incident is not graded (needs {needed})"
            return f"incident severity {_named(INCIDENT_SEVERITIES, incident.severity)} is below {needed}"
        if self.only_parties and agency not in (named := parties(event)):
            return f"{agency} is not a party to the event (its parties: {', '.join(sorted(named))})"
        return None


def parties(event: event_pb2.Event) -> frozenset[str]:
    """The agencies an event concerns (for `only_parties` rules): its publisher; an incident's
    lead and involved agencies; a task's owning and supervising agencies; the agency that owns
    the stock a ledger notice is about; the publisher of the message an acknowledgement
    answers; an escalation's tracked message's publisher, pending and notified agencies."""
    found = {event.source}
    kind = event.WhichOneof("payload")
    if kind == "incident":
        found.update(event.incident.involved_agencies)
        found.add(event.incident.lead_agency)
    elif kind == "task":
        found.update((event.task.owner_agency, event.task.supervising_agency))
    elif kind == "inventory":
        inventory = event.inventory
        notice = inventory.WhichOneof("kind")
        if notice == "replenishment_needed":
            found.add(inventory.replenishment_needed.agency)
        elif notice == "reservation_expired":
            found.add(inventory.reservation_expired.agency)
    elif kind == "acknowledgement":
        found.add(event.acknowledgement.event_source)
    elif kind == "escalation":
        found.add(event.escalation.tracked_source)
        found.update(event.escalation.pending_agencies)
        found.update(event.escalation.notified_agencies)
    found.discard("")
    return frozenset(found)


def _named(names: dict[str, int], *numbers: int) -> str:
    """Policy names of enum numbers, in order: "ACTUAL, TEST"."""
    return ", ".join(name_of(names, n) for n in sorted(numbers))


@dataclass(frozen=True)
class _CompiledRedaction:
    id: str
    names: frozenset[str] | None
    fields: tuple[str, ...]


def _incident_ids(event: event_pb2.Event) -> set[str]:
    """The incidents an event belongs to, for scoping break-glass grants."""
    return {event.correlation_id, *incident_ids(event)} - {""}


def _in_scope(grant: Grant, agency: str, event: event_pb2.Event) -> bool:
    if grant.agencies and agency not in grant.agencies:
        return False
    if grant.jurisdiction and not event.jurisdiction.division_code.startswith(grant.jurisdiction):
        return False
    return not grant.incident_id or grant.incident_id in _incident_ids(event)


def _grant_permits(grant: Grant, event: event_pb2.Event) -> bool:
    scope = type_scope(grant.receive_types).get(event.type.partition(".")[0], frozenset())
    return (scope is None or event.type in scope) and (
        event.classification <= grant.max_classification
    )


class Evaluator:
    """Decides for one policy; build a new one when the policy changes (it is cheap)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.version = policy.version
        self._agencies = {a.id: a for a in policy.agencies}
        declared = policy.agency_ids
        by_family: dict[tuple[str, str], list[_CompiledRule]] = {}
        for rule in policy.rules:
            agencies = resolve_agencies(rule.agencies, rule.except_agencies, declared)
            for family, names in type_scope(rule.types).items():
                by_family.setdefault((rule.action, family), []).append(
                    _CompiledRule(rule, names, agencies)
                )
        self._by_family = {key: tuple(rules) for key, rules in by_family.items()}
        self._allow: dict[tuple[str, str, str], tuple[_CompiledRule, ...]] = {}
        self._deny: dict[tuple[str, str, str], tuple[_CompiledRule, ...]] = {}
        for (action, family), rules in self._by_family.items():
            for agency in declared:
                for effect, table in (("allow", self._allow), ("deny", self._deny)):
                    chosen = tuple(r for r in rules if r.effect == effect and agency in r.agencies)
                    if chosen:
                        table[(action, family, agency)] = chosen
        self._redactions: dict[tuple[str, str], tuple[_CompiledRedaction, ...]] = {}
        for redaction in policy.redactions:
            receivers = resolve_agencies(
                redaction.for_agencies or (ANY,), redaction.unless_agencies, declared
            )
            roots = {path.partition(".")[0] for path in redaction.fields}
            if redaction.types:
                scope = type_scope(redaction.types)
            else:
                # A payload path only ever applies to its family; an envelope path to all.
                scope = dict.fromkeys(roots if roots <= set(FAMILIES) else FAMILIES)
            for family, names in scope.items():
                for agency in receivers:
                    key = (family, agency)
                    entry = _CompiledRedaction(redaction.id, names, redaction.fields)
                    self._redactions[key] = (*self._redactions.get(key, ()), entry)

    def decide(
        self,
        agency: str,
        roles: frozenset[str],
        action: str,
        event: event_pb2.Event,
        *,
        grants: Sequence[Grant] = (),
        now: dt.datetime | None = None,
    ) -> Decision:
        """The decision for `agency` (holding `roles`) doing `action` ("publish" or "receive")
        with `event`. `grants` are break-glass grants; `now` (required with grants) tells the
        active ones from the expired, so the engine itself never reads a clock."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (expected publish or receive)")
        if grants and now is None:
            raise ValueError("decide(grants=...) needs now= to tell active grants from expired")
        version = self.version
        profile = self._agencies.get(agency)
        if profile is None:
            return Decision(
                False, (), f"unknown agency '{agency}' (not in the policy)", (), version
            )
        event_type = event.type
        family = event_type.partition(".")[0]
        classification = event.classification
        if (
            action == "receive"
            and profile.clearance is not None
            and classification > profile.clearance
        ):
            reason = (
                f"classification {name_of(CLASSIFICATIONS, classification)} is above "
                f"{agency}'s clearance {name_of(CLASSIFICATIONS, profile.clearance)}"
            )
            return Decision(False, (), reason, (), version)
        roles = roles & profile.roles
        key = (action, family, agency)
        facts = (event_type, event.jurisdiction.division_code, event.plane, classification,
                 event.priority, roles, event, agency)  # fmt: skip
        denied = tuple(r.id for r in self._deny.get(key, ()) if r.matches(*facts))
        if denied:
            plural = "s" if len(denied) > 1 else ""
            return Decision(
                False, denied, f"denied by rule{plural} {', '.join(denied)}", (), version
            )
        allowed = tuple(r.id for r in self._allow.get(key, ()) if r.matches(*facts))
        active = (
            [g for g in grants if g.active(now) and _in_scope(g, agency, event)]
            if grants and now is not None and action == "receive"
            else []
        )
        reason = f"allowed by {', '.join(allowed)}"
        if not allowed:
            allowed = tuple(g.id for g in active if g.receive_types and _grant_permits(g, event))
            reason = f"allowed by break-glass {', '.join(allowed)}"
        if not allowed:
            return Decision(False, (), "no rule allows", (), version)
        if action == "publish" or event.source == agency:
            return Decision(True, allowed, reason, (), version)
        withheld, sources, unredacting = self._withheld(family, agency, event_type, active)
        if unredacting:
            reason += f"; break-glass {', '.join(unredacting)} un-redacts fields"
        rule_ids = allowed + tuple(g for g in unredacting if g not in allowed)
        return Decision(True, rule_ids, reason, withheld, version, sources)

    def _withheld(
        self, family: str, agency: str, event_type: str, active: Iterable[Grant]
    ) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
        """(paths to withhold, redactions they come from, grants that un-redacted some)."""
        paths: dict[str, str] = {}
        for entry in self._redactions.get((family, agency), ()):
            if entry.names is None or event_type in entry.names:
                for path in entry.fields:
                    paths.setdefault(path, entry.id)
        unredacting = []
        for grant in active:
            lifted = [p for p in paths if any(covers(u, p) for u in grant.unredact)]
            for path in lifted:
                del paths[path]
            if lifted:
                unredacting.append(grant.id)
        withheld = minimal_paths(paths)
        sources = tuple(sorted({paths[p] for p in paths}))
        return withheld, sources, unredacting

    def explain(
        self,
        agency: str,
        roles: frozenset[str],
        action: str,
        event: event_pb2.Event,
        *,
        grants: Sequence[Grant] = (),
        now: dt.datetime | None = None,
    ) -> Explanation:
        """The decision plus, for every rule of this action and family, whether it matched and
        why not (for `dutylink policy explain`; slower than `decide`)."""
        decision = self.decide(agency, roles, action, event, grants=grants, now=now)
        profile = self._agencies.get(agency)
        held = roles & profile.roles if profile else frozenset()
        family = event.type.partition(".")[0]
        checks = tuple(
            Check(rule.id, rule.effect, rule.mismatch(agency, held, event) or "matches")
            for rule in self._by_family.get((action, family), ())
        )
        return Explanation(decision, checks)


# The role that may read and verify the audit log (gateway's AuditService).
AUDITOR_ROLE = "auditor"


def is_auditor(roles: frozenset[str]) -> bool:
    """Whether a caller holding `roles` may read the audit log."""
    return AUDITOR_ROLE in roles


def holds_break_glass_role(policy: Policy, agency: str, roles: frozenset[str]) -> bool:
    """Whether `agency`, holding `roles`, may declare break-glass: a role the policy names for
    break-glass that the agency's profile grants and the caller holds."""
    profile = policy.agency(agency)
    return profile is not None and bool(policy.break_glass.roles & roles & profile.roles)


class BreakGlassError(ValueError):
    """A break-glass declaration the policy does not permit; the message says why."""


def declare_grant(
    policy: Policy,
    *,
    grant_id: str,
    agency: str,
    roles: frozenset[str],
    reason: str,
    now: dt.datetime,
    duration: dt.timedelta,
    incident_id: str = "",
    jurisdiction: str = "",
    agencies: Iterable[str] = (),
    unredact: Sequence[str] = (),
    receive_types: Sequence[str] = (),
    max_classification: int = CLASSIFICATIONS["RESTRICTED"],
) -> Grant:
    """Check a break-glass declaration against the policy and return the grant, in force from
    `now` for `duration`. The caller records it (who, why, until when) for the mandatory review
    and passes it to `decide` while it lasts."""
    problems = []
    profile = policy.agency(agency)
    allowed_roles = policy.break_glass.roles
    if profile is None:
        problems.append(f"unknown agency '{agency}'")
    elif not holds_break_glass_role(policy, agency, roles):
        problems.append(
            f"{agency} holds none of the break-glass roles ({', '.join(sorted(allowed_roles)) or 'none in the policy'})"
        )
    if not reason.strip():
        problems.append("a reason is required (it is recorded for the review)")
    if now.tzinfo is None:
        problems.append("now must be timezone-aware")
    if not dt.timedelta(0) < duration <= policy.break_glass.max_duration:
        problems.append(
            f"duration {duration} is not within the policy's maximum {policy.break_glass.max_duration}"
        )
    if not (incident_id or jurisdiction):
        problems.append("name an incident_id or a jurisdiction prefix")
    if jurisdiction and (error := jurisdiction_error(jurisdiction)):
        problems.append(error)
    receivers = frozenset(agencies)
    if unknown := sorted(receivers - set(policy.agency_ids)):
        problems.append(f"unknown agencies: {', '.join(unknown)}")
    problems += [e for p in unredact if (e := field_path_error(p))]
    problems += [e for t in receive_types if (e := type_pattern_error(t))]
    if not (unredact or receive_types):
        problems.append("a grant must un-redact fields or permit receive_types")
    if problems:
        raise BreakGlassError(f"break-glass {grant_id}: " + "; ".join(problems))
    return Grant(
        id=grant_id,
        declared_by=agency,
        reason=reason,
        declared_at=now,
        not_after=now + duration,
        incident_id=incident_id,
        jurisdiction=jurisdiction,
        agencies=receivers,
        unredact=tuple(unredact),
        receive_types=tuple(receive_types),
        max_classification=max_classification,
    )
