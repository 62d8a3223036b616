"""Policy files -> `Policy`: parse the YAML keeping line marks, validate everything, lint.

Long because it validates every key of the policy format with its own `file:line` message, checks
names across files (duplicate and unknown agencies and roles) and lints what does not stop a load
(shadowed and unreachable rules, sensitive fields left unredacted) and checks deadlines against
the event-type catalogue; the format is in policies/README.md.

`parse_policy` is pure (file name -> YAML text); `load_policy` only reads the files first.
Every problem of a load is collected into one `PolicyError` whose lines read
"policies/fire.yaml:12: unknown classification 'SECERT' (expected one of ...)". The nodes of
`yaml.compose` keep start marks, which plain `safe_load` data would lose. The format is described
in policies/README.md.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from dutylink.catalogue import Catalogue, EventType, load_catalogue
from dutylink.policies.model import (
    ACTIONS,
    ANY,
    CAP_SEVERITIES,
    CAP_URGENCIES,
    CLASSIFICATIONS,
    EFFECTS,
    EXPECTATIONS,
    FAMILIES,
    HIGHEST_CLASSIFICATION,
    INCIDENT_CATEGORIES,
    INCIDENT_SEVERITIES,
    LOWEST_CLASSIFICATION,
    PLANES,
    PRIORITIES,
    SENSITIVITIES,
    UNTRACKED_FAMILIES,
    Agency,
    BreakGlass,
    Deadline,
    EscalationLevel,
    Expectation,
    Finding,
    Policy,
    PolicyError,
    Redaction,
    Rule,
    jurisdiction_error,
    name_of,
    resolve_agencies,
    type_pattern_error,
    type_scope,
)
from dutylink.policies.redaction import covers, field_path_error, sensitive_fields

SAMPLE_DIR = Path(__file__).parent

_TOP_KEYS = ("roles", "agencies", "break_glass", "rules", "redactions", "deadlines")
_AGENCY_KEYS = ("id", "name", "description", "clearance", "roles")
_RULE_KEYS = (
    "id",
    "description",
    "effect",
    "action",
    "agencies",
    "except_agencies",
    "roles",
    "types",
    "jurisdictions",
    "planes",
    "min_classification",
    "max_classification",
    "min_priority",
    "categories",
    "min_severity",
    "only_parties",
    "purpose",
    "legal_basis",
)
_REDACTION_KEYS = ("id", "description", "fields", "for_agencies", "unless_agencies", "types")
_BREAK_GLASS_KEYS = ("roles", "max_duration_hours")
_DEADLINE_KEYS = (
    "id",
    "description",
    "types",
    "severities",
    "urgencies",
    "min_priority",
    "planes",
    "expect",
    "within",
    "escalate",
)
_LEVEL_KEYS = ("after", "to", "deputy")
# Deadlines and escalation delays are whole numbers of one unit ("90s", "15m", "24h", "3d"),
# at most LONGEST_DEADLINE (a tracker holds its timers that long); at most MAX_LEVELS levels
# (Escalation.level's bound in escalation.proto).
_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
LONGEST_DEADLINE = dt.timedelta(days=30)
MAX_LEVELS = 16
_STATE_PREFIX = "state:"
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# The gateway routes, stores and audits by these; withholding them would break delivery.
_UNREDACTABLE = frozenset({
    "id", "source", "type", "time", "received_time", "jurisdiction",
    "jurisdiction.division_code", "classification", "plane", "priority", *FAMILIES,
})  # fmt: skip


@dataclass(frozen=True)
class _Name:
    """A declared id or a reference to one, with where it was written."""

    kind: str
    value: str
    file: str
    line: int


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _label(node: Node, kind: str) -> str:
    """`rule 'fire-publishes'` when the entry has a plain id: messages then name their subject."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value == "id" and isinstance(value, ScalarNode):
                return f"{kind} '{value.value}'"
    return kind


def _suggest(value: str, choices: Collection[str]) -> str:
    hint = difflib.get_close_matches(value, list(choices), n=1)
    if hint:
        return f" (did you mean '{hint[0]}'?)"
    return f" (expected one of {', '.join(choices)})" if choices else ""


class _FileParser:
    """Reads one file's nodes into policy values, noting errors, declarations and references;
    the cross-file checks run once every file is read."""

    def __init__(self, file: str, findings: list[Finding], catalogue: Catalogue) -> None:
        self.file = file
        self.findings = findings
        self.catalogue = catalogue
        self.declared: list[_Name] = []
        self.references: list[_Name] = []
        self.agencies: list[Agency] = []
        self.rules: list[Rule] = []
        self.redactions: list[Redaction] = []
        self.deadlines: list[Deadline] = []
        self.roles: list[str] = []
        self.break_glass: list[tuple[BreakGlass, int]] = []

    # --- node helpers --------------------------------------------------------------------

    def error(self, node: Node, message: str) -> None:
        self.findings.append(Finding(self.file, _line(node), message))

    def mapping(
        self, node: Node, what: str, keys: Sequence[str], required: Sequence[str] = ()
    ) -> dict[str, Node] | None:
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping of keys to values")
            return None
        fields: dict[str, Node] = {}
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key is None:
                self.error(key_node, f"keys in {what} must be plain names")
            elif key in fields:
                self.error(key_node, f"duplicate key '{key}' in {what}")
            elif key not in keys:
                self.error(key_node, f"unknown key '{key}' in {what}{_suggest(key, keys)}")
            else:
                fields[key] = value
        for key in required:
            if key not in fields:
                self.error(node, f"{what} is missing required key '{key}'")
        return fields

    def scalar(self, node: Node | None, what: str) -> str | None:
        if node is None:
            return None
        if not isinstance(node, ScalarNode) or node.value == "":
            self.error(node, f"{what} must be a single non-empty value")
            return None
        return str(node.value)

    def scalars(self, node: Node | None, what: str) -> list[tuple[str, Node]]:
        """A one-value scalar or a list of them, each with its node (for its line)."""
        if node is None:
            return []
        items = node.value if isinstance(node, SequenceNode) else [node]
        values = []
        for item in items:
            if (value := self.scalar(item, f"each entry of {what}")) is not None:
                values.append((value, item))
        if isinstance(node, SequenceNode) and not items:
            self.error(node, f"{what} is empty; leave the key out instead")
        return values

    def choice(self, node: Node | None, what: str, names: Mapping[str, int]) -> int | None:
        value = self.scalar(node, what)
        if value is None or node is None:
            return None
        if value not in names:
            self.error(node, f"unknown {what} '{value}' (expected one of {', '.join(names)})")
            return None
        return names[value]

    def choices(self, node: Node | None, what: str, names: Mapping[str, int]) -> frozenset[int]:
        found = set()
        for value, item in self.scalars(node, f"{what}s"):
            if value not in names:
                self.error(item, f"unknown {what} '{value}' (expected one of {', '.join(names)})")
            else:
                found.add(names[value])
        return frozenset(found)

    def identifier(self, node: Node | None, kind: str) -> str | None:
        value = self.scalar(node, f"{kind} id")
        if value is None or node is None:
            return None
        if not _ID.fullmatch(value):
            self.error(node, f"bad {kind} id '{value}' (lower-case letters, digits, . _ -)")
            return None
        self.declared.append(_Name(kind, value, self.file, _line(node)))
        return value

    def names(self, node: Node | None, kind: str, what: str, allow_any: bool) -> tuple[str, ...]:
        values = self.scalars(node, what)
        names = []
        for value, item in values:
            if value == ANY and allow_any:
                if len(values) > 1:
                    self.error(item, f"'*' in {what} stands alone (it already means every {kind})")
            elif value == ANY:
                self.error(item, f"'*' is not allowed in {what}; name the {kind}s")
            else:
                self.references.append(_Name(kind, value, self.file, _line(item)))
            names.append(value)
        return tuple(names)

    def text(self, node: Node | None, what: str) -> str:
        return self.scalar(node, what) or ""

    def flag(self, node: Node | None, what: str) -> bool:
        """`true` or `false` (absent: false); anything else is an error, not a guess."""
        value = self.scalar(node, what)
        if value is None or node is None or value in ("true", "false"):
            return value == "true"
        self.error(node, f"{what} must be true or false, not '{value}'")
        return False

    # --- sections --------------------------------------------------------------------------

    def document(self, root: Node) -> None:
        sections = self.mapping(root, "a policy file", _TOP_KEYS)
        if sections is None:
            return
        if (roles := sections.get("roles")) is not None:
            self.role_section(roles)
        for node in self._items(sections.get("agencies"), "agencies"):
            if (agency := self.agency(node)) is not None:
                self.agencies.append(agency)
        if (glass := sections.get("break_glass")) is not None:
            # Errors about the section as a whole point at its key, not at its first entry.
            key = next(k for k, v in root.value if v is glass)
            self.break_glass_section(glass, _line(key))
        for node in self._items(sections.get("rules"), "rules"):
            if (rule := self.rule(node)) is not None:
                self.rules.append(rule)
        for node in self._items(sections.get("redactions"), "redactions"):
            if (redaction := self.redaction(node)) is not None:
                self.redactions.append(redaction)
        for node in self._items(sections.get("deadlines"), "deadlines"):
            if (deadline := self.deadline(node)) is not None:
                self.deadlines.append(deadline)

    def role_section(self, node: Node) -> None:
        if not isinstance(node, MappingNode):
            self.error(node, "'roles' must map each role id to a line saying what it is for")
            return
        for key_node, value in node.value:
            role = self.identifier(key_node, "role")
            self.text(value, f"description of role '{role}'")
            if role is not None:
                self.roles.append(role)

    def _items(self, node: Node | None, what: str) -> list[Node]:
        if node is None:
            return []
        if not isinstance(node, SequenceNode):
            self.error(node, f"'{what}' must be a list (entries start with '- ')")
            return []
        return list(node.value)

    def agency(self, node: Node) -> Agency | None:
        fields = self.mapping(node, _label(node, "agency"), _AGENCY_KEYS, ("id", "name"))
        if fields is None:
            return None
        errors = len(self.findings)
        agency_id = self.identifier(fields.get("id"), "agency")
        name = self.text(fields.get("name"), "name")
        self.text(fields.get("description"), "description")
        clearance = self.choice(fields.get("clearance"), "classification", CLASSIFICATIONS)
        roles = self.names(fields.get("roles"), "role", "roles", allow_any=False)
        if len(self.findings) > errors or agency_id is None:
            return None
        return Agency(agency_id, name, clearance, frozenset(roles), self.file, _line(node))

    def break_glass_section(self, node: Node, line: int) -> None:
        fields = self.mapping(node, "break_glass", _BREAK_GLASS_KEYS, _BREAK_GLASS_KEYS)
        if fields is None:
            return
        roles = self.names(fields.get("roles"), "role", "break_glass roles", allow_any=False)
        hours_node = fields.get("max_duration_hours")
        hours = self.scalar(hours_node, "max_duration_hours")
        if hours is None or hours_node is None:
            return
        try:
            duration = dt.timedelta(hours=float(hours))
        except (ValueError, OverflowError):
            duration = dt.timedelta(0)
        if duration <= dt.timedelta(0):
            self.error(hours_node, f"max_duration_hours must be a positive number, not '{hours}'")
        else:
            self.break_glass.append((BreakGlass(frozenset(roles), duration), line))

    def types(self, node: Node | None, what: str) -> tuple[str, ...]:
        patterns = []
        for value, item in self.scalars(node, what):
            if error := type_pattern_error(value):
                self.error(item, error)
            else:
                patterns.append(value)
        return tuple(patterns)

    def rule(self, node: Node) -> Rule | None:
        required = ("id", "effect", "action", "agencies", "types")
        label = _label(node, "rule")
        fields = self.mapping(node, label, _RULE_KEYS, required)
        if fields is None:
            return None
        errors = len(self.findings)
        get = fields.get
        rule_id = self.identifier(get("id"), "rule")
        effect, action = self.text(get("effect"), "effect"), self.text(get("action"), "action")
        for value, key, allowed in (
            (effect, "effect", EFFECTS),
            (action, "action", ACTIONS),
        ):
            if value and value not in allowed:
                self.error(
                    fields[key], f"unknown {key} '{value}' (expected one of {', '.join(allowed)})"
                )
        agencies = self.names(get("agencies"), "agency", "agencies", allow_any=True)
        excluded = self.names(get("except_agencies"), "agency", "except_agencies", allow_any=False)
        roles = self.names(get("roles"), "role", "roles", allow_any=False)
        types = self.types(get("types"), "types")
        jurisdictions = []
        for value, item in self.scalars(get("jurisdictions"), "jurisdictions"):
            if error := jurisdiction_error(value):
                self.error(item, error)
            jurisdictions.append(value)
        planes = self.choices(get("planes"), "plane", PLANES)
        lowest = self.choice(get("min_classification"), "classification", CLASSIFICATIONS)
        ceiling = self.choice(get("max_classification"), "classification", CLASSIFICATIONS)
        if lowest is not None and ceiling is not None and lowest > ceiling:
            self.error(node, f"{label}: min_classification is above max_classification")
        min_priority = self.choice(get("min_priority"), "priority", PRIORITIES)
        categories = self.choices(get("categories"), "incident category", INCIDENT_CATEGORIES)
        min_severity = self.choice(get("min_severity"), "incident severity", INCIDENT_SEVERITIES)
        for key in ("categories", "min_severity"):
            if key in fields and types and set(type_scope(types)) != {"incident"}:
                self.error(
                    fields[key], f"{key} apply to incidents only; types must all be incident.*"
                )
        only_parties = self.flag(get("only_parties"), "only_parties")
        if only_parties and action != "receive":
            self.error(fields["only_parties"], "only_parties applies to receive rules only")
        purpose = self.text(get("purpose"), "purpose")
        if (effect, action) == ("allow", "receive"):
            if ceiling is None and "max_classification" not in fields:
                self.error(
                    node,
                    f"{label}: a receive allow rule needs max_classification "
                    "(the receiver's ceiling)",
                )
            if not purpose and "purpose" not in fields:
                self.error(
                    node,
                    f"{label}: a receive allow rule needs a purpose "
                    "(PIPL purpose binding: what the receivers use the events for)",
                )
        if len(self.findings) > errors or rule_id is None:
            return None
        return Rule(
            id=rule_id,
            effect=effect,  # type: ignore[arg-type]  # checked against EFFECTS above
            action=action,  # type: ignore[arg-type]
            agencies=agencies,
            types=types,
            except_agencies=frozenset(excluded),
            roles=frozenset(roles),
            jurisdictions=tuple(jurisdictions),
            planes=planes,
            min_classification=lowest or LOWEST_CLASSIFICATION,
            max_classification=ceiling or HIGHEST_CLASSIFICATION,
            min_priority=min_priority or 0,
            categories=categories,
            min_severity=min_severity or 0,
            only_parties=only_parties,
            purpose=purpose,
            legal_basis=self.text(get("legal_basis"), "legal_basis"),
            description=self.text(get("description"), "description"),
            file=self.file,
            line=_line(node),
        )

    def redaction(self, node: Node) -> Redaction | None:
        label = _label(node, "redaction")
        fields = self.mapping(node, label, _REDACTION_KEYS, ("id", "fields"))
        if fields is None:
            return None
        errors = len(self.findings)
        redaction_id = self.identifier(fields.get("id"), "rule")
        paths = []
        for path, item in self.scalars(fields.get("fields"), "fields"):
            if path in _UNREDACTABLE:
                self.error(
                    item, f"'{path}' cannot be redacted: the gateway routes and audits by it"
                )
            elif error := field_path_error(path):
                self.error(item, error)
            paths.append(path)
        receivers = self.names(fields.get("for_agencies"), "agency", "for_agencies", allow_any=True)
        kept = self.names(
            fields.get("unless_agencies"), "agency", "unless_agencies", allow_any=False
        )
        if "for_agencies" not in fields and "unless_agencies" not in fields:
            self.error(
                node, f"{label} needs for_agencies and/or unless_agencies (who loses the fields)"
            )
        types = self.types(fields.get("types"), "types")
        description = self.text(fields.get("description"), "description")
        if len(self.findings) > errors or redaction_id is None:
            return None
        return Redaction(
            id=redaction_id,
            fields=tuple(paths),
            for_agencies=receivers,
            unless_agencies=frozenset(kept),
            types=types,
            description=description,
            file=self.file,
            line=_line(node),
        )

    # --- deadlines -----------------------------------------------------------------------------

    def deadline(self, node: Node) -> Deadline | None:
        label = _label(node, "deadline")
        required = ("id", "types", "expect", "within", "escalate")
        fields = self.mapping(node, label, _DEADLINE_KEYS, required)
        if fields is None:
            return None
        errors = len(self.findings)
        get = fields.get
        deadline_id = self.identifier(get("id"), "rule")
        types, tracked = self.tracked(get("types"))
        families = {t.family for t in tracked}
        severities: frozenset[int] = frozenset()
        if (node_s := get("severities")) is not None:
            if families == {"warning"}:
                severities = self.choices(node_s, "CAP severity", CAP_SEVERITIES)
            elif families == {"incident"}:
                severities = self.choices(node_s, "incident severity", INCIDENT_SEVERITIES)
            elif tracked:
                self.error(node_s, "severities apply to warnings (CAP severity) or incidents "
                           "(incident severity); types must all be warning.* or all incident.*")  # fmt: skip
        urgencies = self.choices(get("urgencies"), "CAP urgency", CAP_URGENCIES)
        if (node_u := get("urgencies")) is not None and tracked and families != {"warning"}:
            self.error(node_u, "urgencies apply to warnings only; types must all be warning.*")
        min_priority = self.choice(get("min_priority"), "priority", PRIORITIES)
        planes = self.choices(get("planes"), "plane", PLANES)
        expect, states = self.expectation(get("expect"), tracked)
        within = self.duration(get("within"), "within", zero_allowed=False)
        levels = self.levels(get("escalate"))
        description = self.text(get("description"), "description")
        if len(self.findings) > errors or deadline_id is None or expect is None or not within:
            return None
        return Deadline(
            id=deadline_id,
            types=types,
            expect=expect,
            within=within,
            escalate=levels,
            states=states,
            severities=severities,
            urgencies=urgencies,
            min_priority=min_priority or 0,
            planes=planes,
            description=description,
            file=self.file,
            line=_line(node),
        )

    def tracked(self, node: Node | None) -> tuple[tuple[str, ...], list[EventType]]:
        """A deadline's `types` patterns and the catalogue types they select; each pattern
        must select some, and none may be an answer or an escalation (those are not tracked)."""
        patterns: list[str] = []
        found: list[EventType] = []
        known = [t.type for t in self.catalogue.types]
        for pattern, item in self.scalars(node, "types"):
            family, _, name = pattern.partition(".")
            patterns.append(pattern)
            if error := type_pattern_error(pattern):
                self.error(item, error)
            elif pattern == ANY:
                self.error(item, "a deadline tracks named types or families, not '*'")
            elif family in UNTRACKED_FAMILIES:
                self.error(item, f"'{pattern}': {family} events are not tracked by deadlines")
            elif name == ANY:
                found.extend(self.catalogue.types_of(family=family))
            elif (entry := self.catalogue.get(pattern)) is None:
                self.error(item, f"unknown event type '{pattern}'{_suggest(pattern, known)}")
            else:
                found.append(entry)
        return tuple(patterns), found

    def expectation(
        self, node: Node | None, tracked: list[EventType]
    ) -> tuple[Expectation | None, tuple[str, ...]]:
        value = self.scalar(node, "expect")
        if value is None or node is None:
            return None, ()
        if not value.startswith(_STATE_PREFIX):
            if value not in EXPECTATIONS or value == "state":
                self.error(node, f"unknown expect '{value}' (expected acknowledged, delivered "
                           "or state:<lifecycle state>, e.g. state:handling)")  # fmt: skip
                return None, ()
            return ("acknowledged" if value == "acknowledged" else "delivered"), ()
        wanted = tuple(value.removeprefix(_STATE_PREFIX).split("|"))
        lifecycles = sorted({t.lifecycle or "" for t in tracked})
        if not tracked:  # the types are wrong, and already reported
            return None, ()
        if lifecycles != [lc for lc in lifecycles if lc] or len(lifecycles) != 1:
            untracked = sorted(t.type for t in tracked if not t.lifecycle)
            why = (
                f"{', '.join(untracked)} moves no lifecycle"
                if untracked
                else f"the types span the lifecycles {', '.join(lifecycles)}"
            )
            self.error(node, f"expect '{value}' needs types of one lifecycle: {why}")
            return None, ()
        states = self.catalogue.lifecycle(lifecycles[0]).states
        unknown = [state for state in wanted if state not in states]
        for state in unknown:
            self.error(
                node,
                f"unknown state '{state}' of lifecycle {lifecycles[0]}{_suggest(state, states)}",
            )
        return ("state", wanted) if not unknown else (None, ())

    def duration(self, node: Node | None, what: str, *, zero_allowed: bool) -> dt.timedelta:
        """A duration such as "90s", "15m", "24h", "3d"; zero when missing or wrong."""
        value = self.scalar(node, what)
        if value is None or node is None:
            return dt.timedelta(0)
        if (match := _DURATION.fullmatch(value)) is None:
            self.error(node, f"bad duration '{value}' for {what} (expected a whole number and "
                       "a unit s, m, h or d, e.g. 90s, 15m, 24h, 3d)")  # fmt: skip
            return dt.timedelta(0)
        duration = dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
        if duration > LONGEST_DEADLINE:
            self.error(node, f"{what} {value} is longer than {LONGEST_DEADLINE.days}d")
        elif not duration and not zero_allowed:
            self.error(node, f"{what} must be longer than 0")
        return duration

    def levels(self, node: Node | None) -> tuple[EscalationLevel, ...]:
        items = self._items(node, "escalate")
        if node is not None and isinstance(node, SequenceNode) and not items:
            self.error(node, "escalate needs at least one level")
        if len(items) > MAX_LEVELS:
            self.error(items[MAX_LEVELS], f"escalate has more than {MAX_LEVELS} levels")
        levels: list[EscalationLevel] = []
        for number, item in enumerate(items, start=1):
            fields = self.mapping(item, f"escalation level {number}", _LEVEL_KEYS, ("after", "to"))
            if fields is None:
                continue
            after = self.duration(fields.get("after"), "after", zero_allowed=True)
            if levels and "after" in fields and after <= levels[-1].after:
                self.error(fields["after"], f"level {number} fires after {fields['after'].value}, "
                           f"not later than level {number - 1}: levels go in strictly "
                           "increasing order of after")  # fmt: skip
            to = self.recipients(fields.get("to"))
            deputy = self.names(fields.get("deputy"), "agency", "deputy", allow_any=False)
            levels.append(EscalationLevel(after, to, deputy, _line(item)))
        return tuple(levels)

    def recipients(self, node: Node | None) -> tuple[str, ...]:
        """Agency ids and the catalogue's standing roles ("command_centre", "supervisor")."""
        names = []
        for value, item in self.scalars(node, "to"):
            if value == ANY:
                self.error(item, "'*' is not allowed in to; name agencies or standing roles")
            elif value not in self.catalogue.standing_roles:
                self.references.append(_Name("agency", value, self.file, _line(item)))
            names.append(value)
        return tuple(names)


# --- the whole policy ------------------------------------------------------------------------


def policy_version(texts: Mapping[str, str]) -> str:
    """SHA-256 (hex) over every file, sorted by file name: each file as its name and its text
    (UTF-8, line endings normalised to LF), both length-prefixed so no two sets of files hash
    alike. Only the file name counts, not the directory, so every copy of the same files has the
    same version."""
    digest = hashlib.sha256()
    for name, text in sorted((PurePath(n).name, t) for n, t in texts.items()):
        for part in (name.encode(), text.replace("\r\n", "\n").encode()):
            digest.update(b"%d:" % len(part))
            digest.update(part)
    return digest.hexdigest()


def _yaml_error(file: str, error: yaml.YAMLError) -> Finding:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if "alphabetic or numeric character" in problem:
        problem += ' (write "*" in quotes: a bare * starts a YAML alias)'
    return Finding(file, int(mark.line) + 1 if mark else 0, f"not valid YAML: {problem}")


def _check_names(parsers: list[_FileParser], findings: list[Finding]) -> None:
    """Duplicate declarations and references to undeclared agencies and roles."""
    first: dict[tuple[str, str], _Name] = {}
    for name in (n for p in parsers for n in p.declared):
        if (earlier := first.get((name.kind, name.value))) is not None:
            findings.append(
                Finding(
                    name.file,
                    name.line,
                    f"duplicate {name.kind} id '{name.value}' "
                    f"(first declared at {earlier.file}:{earlier.line})",
                )
            )
        else:
            first[(name.kind, name.value)] = name
    known = {kind: [v for k, v in first if k == kind] for kind in ("agency", "role")}
    for ref in (n for p in parsers for n in p.references):
        if ref.value not in known[ref.kind]:
            message = f"unknown {ref.kind} '{ref.value}'{_suggest(ref.value, known[ref.kind])}"
            findings.append(Finding(ref.file, ref.line, message))


def _covers(outer: Rule, inner: Rule, agencies: tuple[str, ...]) -> bool:
    """True when `outer` matches every (agency, roles, event) that `inner` matches."""
    if outer.action != inner.action:
        return False
    outer_agencies = resolve_agencies(outer.agencies, outer.except_agencies, agencies)
    if not resolve_agencies(inner.agencies, inner.except_agencies, agencies) <= outer_agencies:
        return False
    outer_types, inner_types = type_scope(outer.types), type_scope(inner.types)
    for family, names in inner_types.items():
        if family not in outer_types:
            return False
        wider = outer_types[family]
        if wider is not None and (names is None or not names <= wider):
            return False

    def within(wide: Collection[object], narrow: Collection[object]) -> bool:
        # "any" (empty) covers everything; a listed set covers only its own subsets.
        return not wide or (bool(narrow) and set(narrow) <= set(wide))

    return (
        within(outer.roles, inner.roles)
        and within(outer.planes, inner.planes)
        and within(outer.categories, inner.categories)
        and (
            not outer.jurisdictions
            or (
                bool(inner.jurisdictions)
                and all(i.startswith(tuple(outer.jurisdictions)) for i in inner.jurisdictions)
            )
        )
        and outer.min_classification <= inner.min_classification
        and outer.max_classification >= inner.max_classification
        and outer.min_priority <= inner.min_priority
        and (not outer.min_severity or 0 < inner.min_severity <= outer.min_severity)
        and (not outer.only_parties or inner.only_parties)
    )


def _lint(
    rules: Sequence[Rule],
    redactions: Sequence[Redaction],
    agencies: tuple[str, ...],
    first_file: str,
) -> list[Finding]:
    """Warnings that do not stop a load: shadowed and unreachable rules, unredacted fields that
    the schema marks as sensitive."""
    warnings = []
    for index, rule in enumerate(rules):
        for other in rules[:index]:
            if other.effect != rule.effect:
                continue
            if _covers(other, rule, agencies):
                shadowed, by = rule, other
            elif _covers(rule, other, agencies):
                shadowed, by = other, rule
            else:
                continue
            warnings.append(
                Finding(
                    shadowed.file,
                    shadowed.line,
                    f"rule '{shadowed.id}' is shadowed by "
                    f"'{by.id}' ({by.file}:{by.line}), which matches everything it matches",
                )
            )
    for allow in (r for r in rules if r.effect == "allow"):
        for deny in (r for r in rules if r.effect == "deny"):
            if _covers(deny, allow, agencies):
                warnings.append(
                    Finding(
                        allow.file,
                        allow.line,
                        f"rule '{allow.id}' can never allow: deny rule "
                        f"'{deny.id}' ({deny.file}:{deny.line}) matches everything it matches",
                    )
                )
                break
    mentioned = [path for r in redactions for path in r.fields]
    unmentioned = [
        f"{path} ({name_of(SENSITIVITIES, marking)})"
        for path, marking in sensitive_fields()
        if not any(covers(m, path) for m in mentioned)
    ]
    if unmentioned:
        warnings.append(
            Finding(
                first_file,
                0,
                "fields marked (dutylink.v1.sensitivity) in the schema that no "
                f"redaction mentions, so every receiver gets them: {', '.join(unmentioned)}",
            )
        )
    return warnings


def _lint_deadlines(
    deadlines: Sequence[Deadline], agencies: Sequence[Agency], catalogue: Catalogue
) -> list[Finding]:
    """Warnings about escalation levels that name a standing role no agency holds: that part
    of the escalation would reach nobody."""
    held = {role for agency in agencies for role in agency.roles}
    return [
        Finding(deadline.file, level.line, f"deadline '{deadline.id}': escalation to {name} "
                f"reaches no agency (no agency holds the role '{catalogue.standing_roles[name]}')")
        for deadline in deadlines
        for level in deadline.escalate
        for name in level.to
        if name in catalogue.standing_roles and catalogue.standing_roles[name] not in held
    ]  # fmt: skip


def parse_policy(texts: Mapping[str, str], catalogue: Catalogue | None = None) -> Policy:
    """Build the policy from file name -> YAML text. Raises `PolicyError` with every error;
    lint warnings are returned in `Policy.warnings`. Deadlines are checked against `catalogue`
    (default: the one shipped with the schemas)."""
    catalogue = catalogue or load_catalogue()
    findings: list[Finding] = []
    parsers = []
    names = sorted(texts)
    basenames = [PurePath(n).name for n in names]
    for name, base in zip(names, basenames, strict=True):
        if basenames.count(base) > 1:
            findings.append(Finding(name, 0, f"two policy files are named '{base}'"))
        parser = _FileParser(name, findings, catalogue)
        parsers.append(parser)
        try:
            root = yaml.compose(texts[name], Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            findings.append(_yaml_error(name, error))
            continue
        if root is not None:
            parser.document(root)
    _check_names(parsers, findings)
    break_glass = [(bg, p.file, line) for p in parsers for bg, line in p.break_glass]
    for _, file, line in break_glass[1:]:
        findings.append(
            Finding(file, line, f"break_glass is declared twice (first in {break_glass[0][1]})")
        )
    if findings:
        order = {name: index for index, name in enumerate(names)}
        raise PolicyError(sorted(findings, key=lambda f: (order.get(f.file, -1), f.line)))
    agencies = tuple(a for p in parsers for a in p.agencies)
    rules = tuple(r for p in parsers for r in p.rules)
    redactions = tuple(r for p in parsers for r in p.redactions)
    deadlines = tuple(d for p in parsers for d in p.deadlines)
    agency_ids = tuple(a.id for a in agencies)
    return Policy(
        agencies=agencies,
        rules=rules,
        redactions=redactions,
        deadlines=deadlines,
        roles=tuple(r for p in parsers for r in p.roles),
        break_glass=break_glass[0][0] if break_glass else BreakGlass(),
        version=policy_version(texts),
        files=tuple(names),
        warnings=tuple(
            _lint(rules, redactions, agency_ids, names[0] if names else "")
            + _lint_deadlines(deadlines, agencies, catalogue)
        ),
    )


def read_policy_texts(files: Sequence[Path]) -> dict[str, str]:
    """The policy files' texts, by each file as given in `files`."""
    texts = {}
    for path in files:
        try:
            texts[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PolicyError([Finding(str(path), 0, f"cannot read: {error}")]) from None
    return texts


def load_policy(files: Sequence[Path]) -> Policy:
    """Read and parse the policy files; errors name each file as given in `files`."""
    return parse_policy(read_policy_texts(files))


def policy_files(directory: Path = SAMPLE_DIR) -> list[Path]:
    """The `*.yaml` files of a policy directory, in name order."""
    return sorted(directory.glob("*.yaml"))
