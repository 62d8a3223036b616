"""Event validation: the protovalidate rules written in proto/, as field-level problems. Pure."""

from __future__ import annotations

from dataclasses import dataclass

import protovalidate
from google.protobuf.message import Message


@dataclass(frozen=True)
class FieldProblem:
    """One violated rule: where, what, and the rule's id (e.g. "string.pattern")."""

    field: str
    description: str
    rule_id: str


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


class Validator:
    """Checks messages against their protovalidate rules; rules are compiled once and reused."""

    def __init__(self) -> None:
        self._validator = protovalidate.Validator()

    def problems(self, message: Message, prefix: str = "") -> list[FieldProblem]:
        found = []
        for violation in self._validator.collect_violations(message):
            path = _path(violation)
            field = ".".join(p for p in (prefix, path) if p)
            found.append(FieldProblem(field, violation.proto.message, violation.proto.rule_id))
        return found
