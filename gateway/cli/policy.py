"""`dutylink policy`: check, explain and review the access policies (see policies/README.md).

Long because `matrix` is about half of it: it reduces every rule to its simplest terms per agency
and family, with deny overlaps and jurisdiction notes, to print a table people can review; `check`
and `explain` are thin over dutylink.policies.loader and dutylink.policies.engine.

`check` validates the files as the gateway would load them, `explain` shows how one decision is
made, `matrix` summarises who may publish and receive what, for review meetings. Policy errors
print one `file:line: reason` each on stderr and exit 1; bad arguments and unreadable input exit
2. `explain` exits 0 for ALLOW and 1 for DENY, so scripts can test a decision.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dutylink.policies.engine import Evaluator
from dutylink.policies.loader import SAMPLE_DIR, parse_policy, policy_files
from dutylink.policies.model import (
    CLASSIFICATIONS,
    FAMILIES,
    HIGHEST_CLASSIFICATION,
    INCIDENT_CATEGORIES,
    INCIDENT_SEVERITIES,
    LOWEST_CLASSIFICATION,
    PLANES,
    PRIORITIES,
    Action,
    Agency,
    Finding,
    Policy,
    PolicyError,
    Rule,
    name_of,
    resolve_agencies,
    type_scope,
)
from dutylink.v1 import event_pb2

policy_app = typer.Typer(
    help="Check, explain and review the access policies.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Policy directory: every *.yaml in it (default: the sample policies).",
        exists=True,
        file_okay=False,
        show_default=False,
    ),
]


def _fail(status: int, message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(status)


def _plural(count: int, noun: str, plural: str = "") -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _console(width: int = 160) -> Console:
    """A terminal keeps its width; a pipe or file gets at least `width` columns, so that rule
    ids and the matrix cells are not squeezed into 80."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, width))


def _policy_files(files: Sequence[Path], directory: Path | None) -> list[Path]:
    if files and directory is not None:
        _fail(2, "error: give policy FILES or --dir, not both")
    if files:
        return list(files)
    folder = SAMPLE_DIR if directory is None else directory
    found = policy_files(folder)
    if not found:
        _fail(2, f"error: {folder}: no policy files (*.yaml)")
    return found


def _load(files: Sequence[Path], *, findings_exit: int = 1) -> Policy:
    """Read and parse the files. An unreadable file exits 2; policy errors are printed one per
    line (`file:line: reason`) and exit `findings_exit` (1; `explain` uses 2, its 1 is DENY)."""
    texts = {}
    for path in files:
        try:
            texts[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            _fail(2, f"error: {path}: cannot read: {reason}")
    try:
        return parse_policy(texts)
    except PolicyError as error:
        for finding in error.findings:
            typer.echo(str(finding), err=True)
        _fail(findings_exit, f"error: {_plural(len(error.findings), 'error')} in the policy files")


def _warning(finding: Finding) -> str:
    """`file:line: warning: message` (`file: warning: ...` for a finding about a whole file)."""
    return str(Finding(finding.file, finding.line, f"warning: {finding.message}"))


def _summary(policy: Policy) -> str:
    counts = ", ".join(
        (
            _plural(len(policy.agencies), "agency", "agencies"),
            _plural(len(policy.rules), "rule"),
            _plural(len(policy.redactions), "redaction"),
            _plural(len(policy.deadlines), "deadline"),
        )
    )
    return f"policy {policy.version[:12]}: {counts}"


# --- check ----------------------------------------------------------------------------------


@policy_app.command()
def check(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Policy files (default: the *.yaml files of --dir).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    directory: DirOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail (exit 1) on warnings as well as errors.")
    ] = False,
) -> None:
    """Validate policy files: every error as file:line: reason, then the lint warnings."""
    policy = _load(_policy_files(files or [], directory))
    for finding in policy.warnings:
        typer.echo(_warning(finding), err=True)
    if strict and policy.warnings:
        _fail(1, f"error: {_plural(len(policy.warnings), 'warning')} (--strict)")
    note = f" ({_plural(len(policy.warnings), 'warning')})" if policy.warnings else ""
    typer.echo(f"{_summary(policy)}{note}")


# --- explain --------------------------------------------------------------------------------


def _read_event(path: Path) -> event_pb2.Event:
    """An Event from proto3 JSON: a bare Event, or an object with the Event under "event" (as
    in a PublishRequest). Anything unreadable exits 2 naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        _fail(2, f"error: {path}: cannot read: {reason}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        _fail(2, f"error: {path}: not valid JSON: {error}")
    if isinstance(document, dict) and isinstance(document.get("event"), dict):
        document = document["event"]
    if not isinstance(document, dict):
        _fail(2, f"error: {path}: expected a JSON object (a dutylink.v1.Event)")
    try:
        return json_format.ParseDict(document, event_pb2.Event())
    except json_format.ParseError as error:
        _fail(2, f"error: {path}: not a dutylink.v1.Event: {error}")


def _roles(value: str) -> frozenset[str]:
    return frozenset(role.strip() for role in value.split(",") if role.strip())


@policy_app.command()
def explain(
    agency: Annotated[
        str, typer.Option("--agency", help="The agency id deciding for.", show_default=False)
    ],
    action: Annotated[
        Action, typer.Option("--action", help="publish or receive.", show_default=False)
    ],
    event_file: Annotated[
        Path,
        typer.Option(
            "--event",
            help='Proto3 JSON of a dutylink.v1.Event, bare or under "event".',
            dir_okay=False,
            show_default=False,
        ),
    ],
    directory: DirOption = None,
    roles: Annotated[
        str, typer.Option("--roles", help="Roles the caller holds, comma-separated: r1,r2.")
    ] = "",
) -> None:
    """Show one decision and how every rule of the action and family fared; exit 0 ALLOW, 1 DENY."""
    event = _read_event(event_file)
    policy = _load(_policy_files([], directory), findings_exit=2)
    held = _roles(roles)
    explanation = Evaluator(policy).explain(agency, held, action, event)
    decision = explanation.decision
    profile = policy.agency(agency)
    verdict = "ALLOW" if decision.allowed else "DENY"
    typer.echo(f"{verdict}: {decision.reason}")
    typer.echo(
        f"  {agency} {action} {event.type or '(no type)'}"
        f"{f' from {event.source}' if event.source else ''}"
        f"{f' (event {event.id})' if event.id else ''}"
    )
    typer.echo(f"  rules: {', '.join(decision.rule_ids) or '—'}")
    typer.echo(f"  policy version: {decision.policy_version[:12]}")
    if profile is not None and (ignored := sorted(held - profile.roles)):
        typer.echo(
            f"  note: the policy does not grant {agency} the role(s) {', '.join(ignored)}; "
            "they do not count"
        )

    family = event.type.partition(".")[0]
    table = Table(title=f"{action} rules for {family or '(no type)'} events")
    table.add_column("rule", no_wrap=True)
    table.add_column("effect")
    table.add_column("outcome")
    for check in explanation.checks:
        matched = check.outcome == "matches"
        style = ("red" if check.effect == "deny" else "green") if matched else "dim"
        table.add_row(Text(check.rule_id), Text(check.effect), Text(check.outcome, style=style))
    if explanation.checks:
        _console().print(table)
    else:
        typer.echo(f"no {action} rule covers {family or 'events without a type'}")

    if not decision.allowed:
        typer.echo("redacted fields: — (denied: nothing is delivered)")
    elif action == "publish":
        typer.echo("redacted fields: — (publishing withholds nothing)")
    elif decision.redacted_fields:
        typer.echo(f"redacted fields: {', '.join(decision.redacted_fields)}")
        typer.echo(f"  by redactions: {', '.join(decision.redaction_ids)}")
    elif event.source == agency:
        typer.echo("redacted fields: none (an agency receives its own events unredacted)")
    else:
        typer.echo("redacted fields: none")
    if not decision.allowed:
        raise typer.Exit(1)


# --- matrix ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Term:
    """What one or more allow rules let an agency do in one family: the types (None: all), the
    classification range, and the conditions besides (empty or 0: any). Jurisdictions are left
    out: the matrix notes them once below the table."""

    names: frozenset[str] | None
    floor: int
    ceiling: int
    roles: frozenset[str] = frozenset()
    planes: frozenset[int] = frozenset()
    categories: frozenset[int] = frozenset()
    min_priority: int = 0
    min_severity: int = 0
    only_parties: bool = False

    def conditions(self) -> tuple[object, ...]:
        return (self.floor, self.ceiling, self.roles, self.planes, self.categories,
                self.min_priority, self.min_severity, self.only_parties)  # fmt: skip

    def covers(self, other: _Term) -> bool:
        """True when this term allows everything `other` allows."""

        def within(wide: frozenset[object], narrow: frozenset[object]) -> bool:
            return not wide or (bool(narrow) and narrow <= wide)

        return (
            (self.names is None or (other.names is not None and other.names <= self.names))
            and self.floor <= other.floor
            and self.ceiling >= other.ceiling
            and within(self.roles, other.roles)
            and within(self.planes, other.planes)
            and within(self.categories, other.categories)
            and self.min_priority <= other.min_priority
            and (not self.min_severity or 0 < other.min_severity <= self.min_severity)
            and (not self.only_parties or other.only_parties)
        )


def _term(rule: Rule, names: frozenset[str] | None, profile: Agency) -> _Term | None:
    """The rule as a term for this agency; None when it can never match for it (it needs a role
    the policy does not grant the agency, or its range lies above the agency's clearance)."""
    ceiling = rule.max_classification
    if rule.action == "receive" and profile.clearance is not None:
        ceiling = min(ceiling, profile.clearance)
    roles = rule.roles & profile.roles
    if rule.min_classification > ceiling or (rule.roles and not roles):
        return None
    return _Term(names, rule.min_classification, ceiling, roles, rule.planes, rule.categories,
                 rule.min_priority, rule.min_severity, rule.only_parties)  # fmt: skip


def _simplest(terms: Iterable[_Term]) -> list[_Term]:
    """Terms with equal conditions merged (their types joined), then those that another term
    covers dropped; in rule order."""
    merged: dict[tuple[object, ...], _Term] = {}
    for term in terms:
        key = term.conditions()
        if (seen := merged.get(key)) is not None:
            names = None if seen.names is None or term.names is None else seen.names | term.names
            term = dataclasses.replace(seen, names=names)
        merged[key] = term
    kept = list(merged.values())
    return [t for t in kept if not any(o is not t and o.covers(t) for o in kept)]


def _levels(term: _Term, receive: bool) -> str:
    floor, ceiling = (name_of(CLASSIFICATIONS, n) for n in (term.floor, term.ceiling))
    low, high = term.floor > LOWEST_CLASSIFICATION, receive or term.ceiling < HIGHEST_CLASSIFICATION
    if low and high:
        return floor if floor == ceiling else f"{floor} to {ceiling}"
    return f"≥{floor}" if low else f"≤{ceiling}" if high else ""


def _term_text(term: _Term, receive: bool) -> str:
    """`all`, `≤RESTRICTED`, `request, request_information`, `≤INTERNAL if plane TEST`."""
    levels = _levels(term, receive)
    if term.names is None:
        scope = levels or "all"
    else:
        types = ", ".join(sorted(name.partition(".")[2] for name in term.names))
        scope = f"{types} {levels}".strip()
    conditions = []
    if term.roles:
        conditions.append(f"role {'/'.join(sorted(term.roles))}")
    if term.planes:
        conditions.append(f"plane {'/'.join(name_of(PLANES, p) for p in sorted(term.planes))}")
    if term.categories:
        categories = (name_of(INCIDENT_CATEGORIES, c) for c in sorted(term.categories))
        conditions.append(f"category {'/'.join(categories)}")
    if term.min_severity:
        conditions.append(f"severity {name_of(INCIDENT_SEVERITIES, term.min_severity)} or graver")
    if term.min_priority:
        conditions.append(f"priority ≥{name_of(PRIORITIES, term.min_priority)}")
    if term.only_parties:
        conditions.append("a party to it")
    return f"{scope} if {', '.join(conditions)}" if conditions else scope


def _overlaps(deny: Rule, names: frozenset[str] | None, term: _Term) -> bool:
    """Whether a deny rule can take away part of what `term` allows (types and classification;
    the other conditions are assumed to overlap)."""
    types_meet = names is None or term.names is None or bool(names & term.names)
    return types_meet and max(deny.min_classification, term.floor) <= min(
        deny.max_classification, term.ceiling
    )


def _part(
    policy: Policy, profile: Agency, family: str, action: Action
) -> tuple[list[str], list[str]]:
    """What one agency may do in one family (`["≤RESTRICTED", ...]`, empty when nothing) and the
    deny rules that cut into it."""
    declared = policy.agency_ids
    terms, denies = [], []
    for rule in policy.rules:
        if rule.action != action:
            continue
        if profile.id not in resolve_agencies(rule.agencies, rule.except_agencies, declared):
            continue
        scope = type_scope(rule.types)
        if family not in scope:
            continue
        if rule.effect == "allow":
            if (term := _term(rule, scope[family], profile)) is not None:
                terms.append(term)
        elif not rule.roles or rule.roles & profile.roles:
            denies.append((rule, scope[family]))
    kept = _simplest(terms)
    denied = [r.id for r, names in denies if any(_overlaps(r, names, t) for t in kept)]
    return [_term_text(term, action == "receive") for term in kept], denied


def _cell(policy: Policy, profile: Agency, family: str, markdown: bool) -> str:
    """`pub: all (deny: rule-id) · rcv: ≤RESTRICTED` for Markdown; in a terminal table one line
    per term (the rule ids would not fit beside the terms), "—" when nothing."""
    labels: tuple[tuple[str, Action], ...] = (("pub", "publish"), ("rcv", "receive"))
    parts = []
    for label, action in labels:
        terms, denied = _part(policy, profile, family, action)
        if not terms:
            continue
        if markdown:
            deny = f" (deny: {', '.join(denied)})" if denied else ""
            parts.append(f"{label}: {'; '.join(terms)}{deny}")
        else:
            lines = [*terms, *(f"(deny: {rule_id})" for rule_id in denied)]
            parts.append(f"{label}: " + "\n  ".join(lines))
    return (" · " if markdown else "\n").join(parts) or "—"


def _jurisdiction_note(policy: Policy) -> str:
    """Which jurisdictions the allow rules are limited to, since the cells leave them out."""
    groups: dict[str, list[str]] = {}
    for rule in policy.rules:
        if rule.effect == "allow":
            groups.setdefault(", ".join(rule.jurisdictions) or "anywhere", []).append(rule.id)
    described = [
        f"{where}: {', '.join(ids) if len(ids) <= 3 else _plural(len(ids), 'rule')}"
        for where, ids in groups.items()
    ]
    return f"Jurisdictions of the allow rules (not shown in the cells): {'; '.join(described)}."


_LEGEND = (
    "pub: may publish, rcv: may receive; 'all' or the types named, with the classification "
    "range (receive is capped by the agency's clearance) and the rules' conditions; "
    "'(deny: ...)' marks deny rules that cut into it; '—': nothing."
)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


@policy_app.command()
def matrix(
    directory: DirOption = None,
    output: Annotated[
        Literal["rich", "markdown"],
        typer.Option("--format", help="rich (terminal table) or markdown (for the minutes)."),
    ] = "rich",
) -> None:
    """Agency x event family: what each agency may publish and receive, for review meetings."""
    policy = _load(_policy_files([], directory))
    header = ["agency", "clearance", *FAMILIES]
    rows = [
        [
            profile.id,
            "—" if profile.clearance is None else name_of(CLASSIFICATIONS, profile.clearance),
            *(_cell(policy, profile, family, output == "markdown") for family in FAMILIES),
        ]
        for profile in policy.agencies
    ]
    title = f"Access matrix, policy {policy.version[:12]}"
    if output == "markdown":
        typer.echo(f"**{title}**\n")
        typer.echo("| " + " | ".join(header) + " |")
        typer.echo("|" + "---|" * len(header))
        for row in rows:
            typer.echo("| " + " | ".join(_markdown_cell(cell) for cell in row) + " |")
        typer.echo(f"\n{_LEGEND}\n{_jurisdiction_note(policy)}")
        return
    table = Table(
        title=title,
        caption=f"{_LEGEND}\n{_jurisdiction_note(policy)}",
        caption_justify="left",
        show_lines=True,
    )
    for column in header:
        table.add_column(column, no_wrap=column in ("agency", "clearance"), overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    # Three family columns need about 50 characters each to keep the rule ids on one line.
    _console(width=200).print(table)
