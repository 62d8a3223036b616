"""The policy vocabulary and its values: agencies, rules, redactions, deadlines, break-glass
grants.

Plain frozen data with no I/O. Enumerations (classification, plane, priority, incident category
and severity) are named as in the YAML files ("RESTRICTED", "EXERCISE") and stored as the
protobuf enum numbers, derived from the descriptors so the policy language never drifts from
the schema.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from google.protobuf.descriptor import FileDescriptor

from dutylink.incidents import incident_ids as incident_ids
from dutylink.v1 import event_pb2, incident_pb2, options_pb2, warning_pb2

Action = Literal["publish", "receive"]
Effect = Literal["allow", "deny"]
ACTIONS: tuple[Action, ...] = ("publish", "receive")
EFFECTS: tuple[Effect, ...] = ("allow", "deny")
# The event families ("incident", "resource", "warning"): the fields of the envelope's payload
# oneof, so the policy language and the subjects never drift from the schema.
FAMILIES: tuple[str, ...] = tuple(
    field.name for field in event_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
)
ANY = "*"


def _names(file: FileDescriptor, enum: str, prefix: str) -> dict[str, int]:
    """`{"PUBLIC": 1, ...}` from `CLASSIFICATION_PUBLIC = 1`, lowest first, UNSPECIFIED left out."""
    values = file.enum_types_by_name[enum].values
    return {v.name.removeprefix(prefix): v.number for v in values if v.number != 0}


CLASSIFICATIONS = _names(event_pb2.DESCRIPTOR, "Classification", "CLASSIFICATION_")
PLANES = _names(event_pb2.DESCRIPTOR, "Plane", "PLANE_")
PRIORITIES = _names(event_pb2.DESCRIPTOR, "Priority", "PRIORITY_")
INCIDENT_CATEGORIES = _names(incident_pb2.DESCRIPTOR, "IncidentCategory", "INCIDENT_CATEGORY_")
# Level I (EXTRAORDINARY, 1) is the gravest; "at least LARGE" means levels I to III.
INCIDENT_SEVERITIES = _names(incident_pb2.DESCRIPTOR, "IncidentSeverity", "INCIDENT_SEVERITY_")
SENSITIVITIES = _names(options_pb2.DESCRIPTOR, "Sensitivity", "SENSITIVITY_")
# CAP `severity` and `urgency` of a warning's info blocks (deadlines select warnings by them).
CAP_SEVERITIES = _names(warning_pb2.DESCRIPTOR, "CapSeverity", "CAP_SEVERITY_")
CAP_URGENCIES = _names(warning_pb2.DESCRIPTOR, "CapUrgency", "CAP_URGENCY_")
LOWEST_CLASSIFICATION = min(CLASSIFICATIONS.values())
HIGHEST_CLASSIFICATION = max(CLASSIFICATIONS.values())


def name_of(names: dict[str, int], number: int) -> str:
    """The policy name of an enum number, or the number itself when it is not a named value."""
    return next((name for name, value in names.items() if value == number), str(number))


_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
_PREFIX = re.compile(r"[1-8](?:[0-9]|[0-9]{3}|[0-9]{5})")


def type_pattern_error(pattern: str) -> str | None:
    """Why `pattern` is not "*", "<family>.*" or "<family>.<name>"; None when it is fine."""
    if pattern == ANY:
        return None
    family, dot, name = pattern.partition(".")
    if not dot or family not in FAMILIES or not (name == ANY or _TYPE_NAME.fullmatch(name)):
        return (
            f"bad type pattern '{pattern}' (expected '*', '<family>.*' or '<family>.<name>', "
            f"family one of {', '.join(FAMILIES)}, e.g. 'incident.*' or 'incident.reported')"
        )
    return None


def jurisdiction_error(prefix: str) -> str | None:
    """Why `prefix` is no 2-, 4- or 6-digit division-code prefix; None when it is one."""
    if _PREFIX.fullmatch(prefix):
        return None
    return (
        f"bad jurisdiction prefix '{prefix}' (expected 2, 4 or 6 digits of a GB/T 2260 "
        "division code: province '31', city '3101', district '310115')"
    )


TypeScope = dict[str, frozenset[str] | None]


def type_scope(patterns: tuple[str, ...]) -> TypeScope:
    """Family -> the exact types the patterns allow in it (None: the whole family)."""
    scope: TypeScope = {}
    for pattern in patterns:
        family, _, name = pattern.partition(".")
        if pattern == ANY:
            scope.update(dict.fromkeys(FAMILIES))
        elif name == ANY:
            scope[family] = None
        elif family not in scope:
            scope[family] = frozenset({pattern})
        elif (names := scope[family]) is not None:
            scope[family] = names | {pattern}
    return scope


def resolve_agencies(
    named: tuple[str, ...], excluded: frozenset[str], declared: tuple[str, ...]
) -> frozenset[str]:
    """The agency ids a rule names: `("*",)` is every declared agency; minus `excluded`."""
    chosen = set(declared) if ANY in named else set(named)
    return frozenset(chosen - excluded)


@dataclass(frozen=True)
class Finding:
    """One problem (or lint warning) in the policy files, located by file and line (1-based;
    0 when the finding is about a whole file or about the schema)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


class PolicyError(ValueError):
    """The policy files are invalid; `findings` holds every error of the load, in file order."""

    def __init__(self, findings: list[Finding] | tuple[Finding, ...]) -> None:
        self.findings = tuple(findings)
        super().__init__("\n".join(str(f) for f in self.findings))


@dataclass(frozen=True)
class Agency:
    """A party to the exchange. `clearance` caps every event it may receive (None: no cap beyond
    its rules); `roles` are the roles the policy grants it."""

    id: str
    name: str
    clearance: int | None = None
    roles: frozenset[str] = frozenset()
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Rule:
    """Allow or deny one action on events matching every condition. Empty tuples and sets mean
    "any"; classification is the closed range `min_classification..max_classification`
    (for receive allow rules `max_classification` is the receiver's ceiling)."""

    id: str
    effect: Effect
    action: Action
    agencies: tuple[str, ...]
    types: tuple[str, ...]
    except_agencies: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    jurisdictions: tuple[str, ...] = ()
    planes: frozenset[int] = frozenset()
    min_classification: int = LOWEST_CLASSIFICATION
    max_classification: int = HIGHEST_CLASSIFICATION
    min_priority: int = 0
    categories: frozenset[int] = frozenset()
    min_severity: int = 0
    only_parties: bool = False
    purpose: str = ""
    legal_basis: str = ""
    description: str = ""
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Redaction:
    """Withhold `fields` (paths relative to `Event`) from the receivers it applies to: those in
    `for_agencies` (empty or "*": everyone) except those in `unless_agencies`."""

    id: str
    fields: tuple[str, ...]
    for_agencies: tuple[str, ...] = ()
    unless_agencies: frozenset[str] = frozenset()
    types: tuple[str, ...] = ()
    description: str = ""
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


Expectation = Literal["acknowledged", "delivered", "state"]
EXPECTATIONS: tuple[Expectation, ...] = ("acknowledged", "delivered", "state")
# Families a deadline cannot track: answers and the tracker's own notices are not tracked.
UNTRACKED_FAMILIES = frozenset({"acknowledgement", "escalation"})


@dataclass(frozen=True)
class EscalationLevel:
    """One level of a deadline's escalation: `after` the deadline passed (0: at once) the
    gateway notifies `to` (agency ids, or the catalogue's standing roles "command_centre" and
    "supervisor") and re-routes the tracked message to the `deputy` agencies."""

    after: dt.timedelta
    to: tuple[str, ...]
    deputy: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Deadline:
    """What must happen to a tracked message, and within how long of its receipt.

    A message is tracked when it matches every condition (empty: any): `types` patterns,
    `severities` (CAP severity for warnings, incident severity for incidents, by the family of
    `types`), `urgencies` (CAP, warnings only), `min_priority` and `planes`. `expect` is
    "acknowledged" (every recipient answered: acknowledged or declined), "delivered" (it
    reached one of every recipient's subscriptions) or "state" (its aggregate reached one of the lifecycle
    `states`). `escalate` lists the levels in order of `after`.
    """

    id: str
    types: tuple[str, ...]
    expect: Expectation
    within: dt.timedelta
    escalate: tuple[EscalationLevel, ...]
    states: tuple[str, ...] = ()
    severities: frozenset[int] = frozenset()
    urgencies: frozenset[int] = frozenset()
    min_priority: int = 0
    planes: frozenset[int] = frozenset()
    description: str = ""
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class BreakGlass:
    """Who may declare an emergency elevation, and for how long at most. The default allows
    nobody."""

    roles: frozenset[str] = frozenset()
    max_duration: dt.timedelta = dt.timedelta(0)


@dataclass(frozen=True)
class Grant:
    """A declared break-glass elevation, in force from `declared_at` until `not_after`.

    It applies to events of `incident_id` and/or within the `jurisdiction` prefix, for the
    receiving `agencies` (empty: all). It un-redacts `unredact` (a path or an ancestor of the
    redacted path) and, with `receive_types`, lets those agencies receive such events up to
    `max_classification` as an allow rule would; deny rules still override it.
    """

    id: str
    declared_by: str
    reason: str
    declared_at: dt.datetime
    not_after: dt.datetime
    incident_id: str = ""
    jurisdiction: str = ""
    agencies: frozenset[str] = frozenset()
    unredact: tuple[str, ...] = ()
    receive_types: tuple[str, ...] = ()
    max_classification: int = CLASSIFICATIONS["RESTRICTED"]

    def __post_init__(self) -> None:
        if not (self.incident_id or self.jurisdiction):
            raise ValueError(f"grant {self.id}: needs an incident_id or a jurisdiction prefix")

    def active(self, now: dt.datetime) -> bool:
        return self.declared_at <= now < self.not_after


@dataclass(frozen=True)
class Policy:
    """Everything the policy files say, plus `version`: the SHA-256 (hex) of their content,
    which accompanies every decision so an audit record names the exact policy."""

    agencies: tuple[Agency, ...]
    rules: tuple[Rule, ...]
    redactions: tuple[Redaction, ...] = ()
    deadlines: tuple[Deadline, ...] = ()
    roles: tuple[str, ...] = ()
    break_glass: BreakGlass = BreakGlass()
    version: str = ""
    files: tuple[str, ...] = ()
    warnings: tuple[Finding, ...] = ()

    @cached_property
    def agency_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.agencies)

    def agency(self, agency_id: str) -> Agency | None:
        return next((a for a in self.agencies if a.id == agency_id), None)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def deadline(self, deadline_id: str) -> Deadline | None:
        return next((d for d in self.deadlines if d.id == deadline_id), None)
