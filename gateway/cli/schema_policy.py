"""Which rules and redactions of a loaded policy mention which schema message and field, for the
schema reference's policy tables.

Pure: values in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2

from dutylink.policies.model import (
    CLASSIFICATIONS,
    HIGHEST_CLASSIFICATION,
    INCIDENT_CATEGORIES,
    INCIDENT_SEVERITIES,
    LOWEST_CLASSIFICATION,
    PLANES,
    PRIORITIES,
    Policy,
    Redaction,
    Rule,
    name_of,
    type_scope,
)
from gateway.cli.descriptors import EVENT_MESSAGE, SchemaIndex


@dataclass
class PolicyLinks:
    """Which policy rules mention which message and field."""

    family_of: dict[str, list[str]] = field(default_factory=dict)  # message -> families
    family_root: dict[str, str] = field(default_factory=dict)  # family -> payload message
    rules_by_family: dict[str, list[Rule]] = field(default_factory=dict)
    redactions: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    all_rules: list[Rule] = field(default_factory=list)
    all_redactions: list[Redaction] = field(default_factory=list)


def _message_fields(
    index: SchemaIndex, name: str
) -> dict[str, descriptor_pb2.FieldDescriptorProto]:
    found = index.messages.get(name)
    return {f.name: f for f in found[1].field} if found else {}


def policy_links(index: SchemaIndex, policy: Policy) -> PolicyLinks:
    links = PolicyLinks(all_rules=list(policy.rules), all_redactions=list(policy.redactions))
    event = index.messages.get(EVENT_MESSAGE)
    families = set(type_scope(("*",)))
    for payload in event[1].field if event else ():
        if payload.name not in families or not payload.HasField("oneof_index"):
            continue
        root = payload.type_name.lstrip(".")
        links.family_root[payload.name] = root
        seen, queue = {root}, [root]
        while queue:
            current = queue.pop()
            links.family_of.setdefault(current, []).append(payload.name)
            for sub in _message_fields(index, current).values():
                child = sub.type_name.lstrip(".")
                if child.startswith("dutylink.") and child in index.messages and child not in seen:
                    seen.add(child)
                    queue.append(child)
    for rule in policy.rules:
        for family in type_scope(rule.types):
            links.rules_by_family.setdefault(family, []).append(rule)
    for redaction in policy.redactions:
        for path in redaction.fields:
            # Only the field the path ends at: its ancestors are not withheld as a whole.
            current, parts = EVENT_MESSAGE, path.split(".")
            for i, part in enumerate(parts):
                step = _message_fields(index, current).get(part)
                if step is None:
                    break
                ids = links.redactions.setdefault((current, part), [])
                if i == len(parts) - 1 and redaction.id not in ids:
                    ids.append(redaction.id)
                current = step.type_name.lstrip(".")
    return links


def conditions(rule: Rule) -> list[str]:
    """A rule's conditions beyond types and agencies, in the policy files' own words."""
    out = []
    if rule.roles:
        out.append("roles " + ", ".join(sorted(rule.roles)))
    if rule.jurisdictions:
        out.append("jurisdictions " + ", ".join(rule.jurisdictions))
    if rule.planes:
        out.append("planes " + ", ".join(name_of(PLANES, p) for p in sorted(rule.planes)))
    if rule.min_classification != LOWEST_CLASSIFICATION:
        out.append("min_classification " + name_of(CLASSIFICATIONS, rule.min_classification))
    if rule.max_classification != HIGHEST_CLASSIFICATION:
        out.append("max_classification " + name_of(CLASSIFICATIONS, rule.max_classification))
    if rule.min_priority:
        out.append("min_priority " + name_of(PRIORITIES, rule.min_priority))
    if rule.categories:
        names = sorted(name_of(INCIDENT_CATEGORIES, c) for c in rule.categories)
        out.append("categories " + ", ".join(names))
    if rule.min_severity:
        out.append("min_severity " + name_of(INCIDENT_SEVERITIES, rule.min_severity))
    if rule.only_parties:
        out.append("only_parties")
    return out
