"""Event validation, as field-level problems. Pure.

Two passes. First the cheap structural limits, in one walk that stops early: the number of
messages and list items (`max_event_elements`), each list's `repeated.max_items` and each
string's `string.max_len` as declared in proto/, and the range of every Timestamp and Duration
(protobuf's: years 0001-9999, nanos 0..999,999,999). Only a message within them meets the
protovalidate rules, whose cost grows with the elements and the violations (and holds the event
loop). At most `max_violations` problems are listed; the rest are counted in a last one. In a
message of more than FULL_REPORT_ELEMENTS the rules stop at the first violation.

Advice rides on the same walk: each field's `(dutylink.v1.advice)` (declared next to its hard
rule in proto/: longer, more items, a repeated item, a pattern) and the message-level rules of
`MESSAGE_ADVICE` (orderings CAP does not require). Advisories never refuse: an event that
breaks only advice is accepted and they are reported beside it, at most `max_violations`.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import protovalidate
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from buf.validate import validate_pb2
from dutylink.v1 import options_pb2
from gateway.core.settings import GatewaySettings

# protobuf's Timestamp range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
# protobuf's Duration range: ±10,000 years.
DURATION_MAX_SECONDS = 315_576_000_000
MAX_NANOS = 999_999_999
# The rule id of the problem that stands for the violations not listed.
CUT_RULE = "violations.cut"
# Up to this many messages and list items every violation is collected; beyond, the rules stop
# at the first one (each violation costs several times what a valid element does, so a big
# event that breaks a rule everywhere would cost several times the worst valid one).
FULL_REPORT_ELEMENTS = 256


@dataclass(frozen=True)
class FieldProblem:
    """One violated rule: where, what, and the rule's id (e.g. "string.pattern")."""

    field: str
    description: str
    rule_id: str


@dataclass(frozen=True)
class Checked:
    """A message's hard problems (any refuses it) and its advisories (none refuses it)."""

    problems: tuple[FieldProblem, ...]
    advisories: tuple[FieldProblem, ...]


@dataclass(frozen=True)
class MessageAdvice:
    """A message-level advisory rule: its id, what it advises, and when it is not followed."""

    rule_id: str
    description: str
    broken: Callable[[Message], bool]


def _at_or_before(message: Message, later: str, earlier: str) -> bool:
    """`later` is set and not after `earlier` (unset: the epoch, as protovalidate's CEL has it)."""
    if not message.HasField(later):
        return False
    a, b = getattr(message, later), getattr(message, earlier)
    return (a.seconds, a.nanos) <= (b.seconds, b.nanos)


def _ceiling_below_altitude(area: Message) -> bool:
    has = area.HasField
    return has("ceiling") and has("altitude") and area.ceiling < area.altitude  # type: ignore[attr-defined]


# Message-level advice, by message type: orderings that CAP does not require (a cancellation
# may expire the moment it is sent or takes effect), so they advise, never refuse. The only
# place they are declared (the CEL of buf.validate is hard rules only).
MESSAGE_ADVICE: Mapping[str, tuple[MessageAdvice, ...]] = {
    "dutylink.v1.Event": (
        MessageAdvice(
            "event.expires_after_time",
            "expires should be later than time",
            lambda m: m.HasField("time") and _at_or_before(m, "expires", "time"),
        ),
    ),
    "dutylink.v1.WarningInfo": (
        MessageAdvice(
            "warning_info.expires_after_effective",
            "expires should be later than effective",
            lambda m: m.HasField("effective") and _at_or_before(m, "expires", "effective"),
        ),
    ),
    "dutylink.v1.WarningArea": (
        MessageAdvice(
            "warning_area.ceiling_above_altitude",
            "ceiling should not be below altitude",
            _ceiling_below_altitude,
        ),
    ),
}


@dataclass(frozen=True)
class ValidationLimits:
    """How much one message may cost to validate (defaults: those of [gateway])."""

    max_elements: int = GatewaySettings.max_event_elements
    max_violations: int = GatewaySettings.max_violations_per_event

    @classmethod
    def of(cls, settings: GatewaySettings) -> ValidationLimits:
        return cls(settings.max_event_elements, settings.max_violations_per_event)


def cut(problems: Sequence[FieldProblem], keep: int) -> tuple[FieldProblem, ...]:
    """The first `keep` problems and, if any were left out, one more that says how many (a
    problem list already cut is cut again with the counts added up)."""
    listed = [p for p in problems if p.rule_id != CUT_RULE]
    already = sum(_cut_count(p) for p in problems if p.rule_id == CUT_RULE)
    dropped = max(0, len(listed) - keep) + already
    kept = tuple(listed[:keep])
    if not dropped:
        return kept
    return (*kept, FieldProblem("", f"and {dropped} more were cut", CUT_RULE))


def _cut_count(problem: FieldProblem) -> int:
    words = problem.description.split()
    return int(words[1]) if len(words) > 1 and words[1].isdigit() else 0


def _path(violation: protovalidate.Violation) -> str:
    """ "open.filter.families[0]"; "" for a rule on the root message itself."""
    path = violation.proto.field
    parts: list[str] = []
    for element in path.elements if path is not None else ():
        subscript = element.subscript
        if subscript is None:
            parts.append(element.field_name)
        elif subscript.field == "index":
            parts.append(f"{element.field_name}[{subscript.value}]")
        else:
            parts.append(f"{element.field_name}[{subscript.value!r}]")
    return ".".join(parts)


# A limit not declared: nothing is that long.
_NONE = sys.maxsize


@dataclass(frozen=True, slots=True)
class _Declared:
    """One field's shape, structural rules and advice, as written in proto/ (a limit not
    declared is _NONE): everything the walk needs from a field in one cached look-up."""

    name: str
    repeated: bool
    message: bool
    sized: bool  # a string or bytes with a length rule or advice (or a string with a pattern)
    max_items: int
    max_len: int
    advised_items: int
    advised_len: int
    advised_unique: bool
    advised_pattern: re.Pattern[str] | None


@cache
def _declared(field: FieldDescriptor) -> _Declared:
    options = field.GetOptions()
    rules = options.Extensions[validate_pb2.field]
    advice = options.Extensions[options_pb2.advice]
    max_items = rules.repeated.max_items if rules.repeated.HasField("max_items") else _NONE
    max_len = _NONE
    if rules.HasField("string") and rules.string.HasField("max_len"):
        max_len = rules.string.max_len
    elif rules.HasField("bytes") and rules.bytes.HasField("max_len"):
        max_len = rules.bytes.max_len
    advised_len = advice.max_len or _NONE
    string = field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated
    pattern = re.compile(advice.pattern) if advice.pattern and string else None
    return _Declared(
        field.name,
        field.is_repeated,
        field.message_type is not None,
        not field.is_repeated and (max_len != _NONE or advised_len != _NONE or bool(pattern)),
        max_items,
        max_len,
        advice.max_items or _NONE,
        advised_len,
        advice.unique,
        pattern,
    )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_RANGED = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def _range_problems(message: Message, path: str, kind: str) -> Iterator[FieldProblem]:
    """A Timestamp or Duration (`kind`) outside protobuf's range (which no code can convert)."""
    seconds, nanos = getattr(message, "seconds", 0), getattr(message, "nanos", 0)
    if kind == "google.protobuf.Timestamp":
        if not TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS:
            yield FieldProblem(path, "must be within years 0001 to 9999", "timestamp.range")
        if not 0 <= nanos <= MAX_NANOS:
            yield FieldProblem(path, "nanos must be 0 to 999999999", "timestamp.nanos")
    elif kind == "google.protobuf.Duration":
        if not -DURATION_MAX_SECONDS <= seconds <= DURATION_MAX_SECONDS:
            yield FieldProblem(path, "must be within ±10000 years", "duration.range")
        if not -MAX_NANOS <= nanos <= MAX_NANOS or (
            seconds and nanos and (seconds < 0) != (nanos < 0)
        ):
            yield FieldProblem(
                path, "nanos must be -999999999 to 999999999, signed as seconds", "duration.nanos"
            )


def structural_problems(
    message: Message, prefix: str, max_elements: int
) -> tuple[list[FieldProblem], int]:
    """The cheap checks, breadth first, and the number of messages and list items met; stops
    at once past `max_elements` (the lists past their max_items are not entered)."""
    problems, _, elements = _walk(message, prefix, max_elements)
    return problems, elements


def _walk(
    message: Message, prefix: str, max_elements: int
) -> tuple[list[FieldProblem], list[FieldProblem], int]:
    """`structural_problems`, and the advisories met on the way. Runs per element: kept lean
    (one cached look-up per field, paths built only where needed)."""
    problems: list[FieldProblem] = []
    advisories: list[FieldProblem] = []
    elements = 1
    pending: deque[tuple[Message, str]] = deque([(message, prefix)])
    while pending:
        current, path = pending.popleft()
        kind = current.DESCRIPTOR.full_name
        if kind in _RANGED:
            problems.extend(_range_problems(current, path, kind))
        for rule in MESSAGE_ADVICE.get(kind, ()):
            if rule.broken(current):
                advisories.append(FieldProblem(path, rule.description, rule.rule_id))
        for field, value in current.ListFields():
            declared = _declared(field)
            if declared.repeated:
                count = len(value)
                if count > declared.max_items:
                    problems.append(
                        FieldProblem(
                            _join(path, declared.name),
                            f"at most {declared.max_items} items, got {count}",
                            "repeated.max_items",
                        )
                    )
                    continue
                if count > declared.advised_items:
                    advisories.append(
                        FieldProblem(
                            _join(path, declared.name),
                            f"advised at most {declared.advised_items} items, got {count}",
                            "advice.max_items",
                        )
                    )
                if declared.advised_unique and len(set(value)) < count:
                    advisories.append(
                        FieldProblem(
                            _join(path, declared.name),
                            "advised without repeated items",
                            "advice.unique",
                        )
                    )
                elements += count
                if declared.message:
                    where = _join(path, declared.name)
                    pending.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
            elif declared.message:
                elements += 1
                pending.append((value, _join(path, declared.name)))
            elif declared.sized:
                length = len(value)
                if length > declared.max_len:
                    problems.append(
                        FieldProblem(
                            _join(path, declared.name),
                            f"at most {declared.max_len} long, got {length}",
                            "string.max_len" if isinstance(value, str) else "bytes.max_len",
                        )
                    )
                    continue
                if length > declared.advised_len:
                    advisories.append(
                        FieldProblem(
                            _join(path, declared.name),
                            f"advised at most {declared.advised_len} long, got {length}",
                            "advice.max_len",
                        )
                    )
                advised = declared.advised_pattern
                if advised is not None and not advised.search(value):
                    advisories.append(
                        FieldProblem(
                            _join(path, declared.name),
                            f"advised to match {advised.pattern}",
                            "advice.pattern",
                        )
                    )
            if elements > max_elements:
                problem = FieldProblem(
                    prefix,
                    f"more than {max_elements} messages and list items: not validated",
                    "message.max_elements",
                )
                return [problem], [], elements
    return problems, advisories, elements


class Validator:
    """Checks messages against their protovalidate rules; rules are compiled once and reused."""

    def __init__(self, limits: ValidationLimits | None = None) -> None:
        self._validator = protovalidate.Validator()
        self.limits = limits or ValidationLimits()

    def problems(self, message: Message, prefix: str = "") -> list[FieldProblem]:
        """Every problem of `message` (field paths under `prefix`), at most `max_violations`
        listed; the structural ones alone if there are any."""
        return list(self.check(message, prefix).problems)

    def check(self, message: Message, prefix: str = "") -> Checked:
        """`problems`, and the advice `message` does not follow (at most `max_violations`
        listed too): what a publish receipt reports beside an accepted event."""
        keep = self.limits.max_violations
        found, advised, elements = _walk(message, prefix, self.limits.max_elements)
        advisories = cut(advised, keep)
        if found:
            return Checked(cut(found, keep), advisories)
        violations = self._validator.collect_violations(
            message, fail_fast=elements > FULL_REPORT_ELEMENTS
        )
        if elements > FULL_REPORT_ELEMENTS and violations:
            found.append(
                FieldProblem(
                    prefix,
                    f"only the first violation is listed ({elements} messages and list items)",
                    "violations.first_only",
                )
            )
        for violation in violations:
            path = _path(violation)
            field = ".".join(p for p in (prefix, path) if p)
            found.append(FieldProblem(field, violation.proto.message, violation.proto.rule_id))
        return Checked(cut(found, keep), advisories)
