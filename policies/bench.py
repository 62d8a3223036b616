"""Decision cost: `python -m dutylink.policies.bench` prints decisions per second for a synthetic policy
(20 agencies x 200 rules by default), the median of 5 runs. Not a test: numbers depend on the
machine; the gateway benchmark compares its paths with policies on and off."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import yaml

from dutylink.policies.engine import Evaluator
from dutylink.policies.loader import parse_policy
from dutylink.policies.model import CLASSIFICATIONS, INCIDENT_CATEGORIES, PLANES
from dutylink.policies.redaction import redact
from dutylink.v1 import common_pb2, event_pb2

TYPES = ("incident.reported", "incident.status_changed", "resource.request", "resource.commit",
         "warning.alert", "warning.update")  # fmt: skip
DIVISIONS = ("310115", "310101", "310104", "320100", "330100")
PREFIXES = ("31", "3101", "310115", "32")


def synthetic_policy(agencies: int, rules: int, seed: int = 7) -> dict[str, Any]:
    """A policy shaped like a real one: mostly allow rules over families and types, some with
    jurisdictions, planes or categories, one in ten a deny rule, plus three redactions."""
    pick = random.Random(seed)
    ids = [f"agency-{n:02d}" for n in range(agencies)]
    written = []
    for n in range(rules):
        action = pick.choice(("publish", "receive"))
        family = pick.choice(("incident", "resource", "warning"))
        rule: dict[str, Any] = {
            "id": f"rule-{n:03d}",
            "effect": "deny" if pick.random() < 0.1 else "allow",
            "action": action,
            "agencies": "*" if pick.random() < 0.1 else pick.sample(ids, pick.randint(1, 4)),
            "types": f"{family}.*"
            if pick.random() < 0.6
            else pick.choice([t for t in TYPES if t.startswith(family)]),
        }
        if pick.random() < 0.5:
            rule["jurisdictions"] = [pick.choice(PREFIXES)]
        if pick.random() < 0.2:
            rule["planes"] = pick.sample(list(PLANES), 2)
        if family == "incident" and pick.random() < 0.3:
            rule["categories"] = pick.sample(list(INCIDENT_CATEGORIES), 3)
        if action == "receive" and rule["effect"] == "allow":
            rule["max_classification"] = pick.choice(list(CLASSIFICATIONS))
            rule["purpose"] = "benchmark"
        written.append(rule)
    return {
        "agencies": [{"id": a, "name": a} for a in ids],
        "rules": written,
        "redactions": [
            {"id": "reporter", "fields": ["incident.reporter"], "unless_agencies": ids[:2]},
            {"id": "contacts", "fields": ["resource.contacts.phone"], "for_agencies": ids[::2]},
            {"id": "notes", "fields": ["warning.note"], "for_agencies": "*"},
        ],
    }


def synthetic_events(count: int, seed: int = 11) -> list[event_pb2.Event]:
    pick = random.Random(seed)
    events = []
    for n in range(count):
        event_type = pick.choice(TYPES)
        event = event_pb2.Event(
            id=f"e{n}",
            type=event_type,
            source="agency-00",
            jurisdiction=common_pb2.Jurisdiction(division_code=pick.choice(DIVISIONS)),
            classification=pick.randint(1, 4),  # type: ignore[arg-type]
            plane=pick.randint(1, 3),  # type: ignore[arg-type]
            priority=pick.randint(1, 4),  # type: ignore[arg-type]
        )
        if event_type.startswith("incident"):
            event.incident.category = pick.randint(1, 16)  # type: ignore[assignment]
            event.incident.reporter.name = "Zhang San"
            event.incident.reporter.phone = "13800000000"
        elif event_type.startswith("resource"):
            event.resource.contacts.add(description="desk", phone="02112345678")
        else:
            event.warning.note = "internal note"
        events.append(event)
    return events


def _rate(work: Sequence[tuple[str, str, event_pb2.Event]], evaluator: Evaluator, runs: int,
          with_redaction: bool) -> float:  # fmt: skip
    rates = []
    roles: frozenset[str] = frozenset()
    for _ in range(runs):
        start = time.perf_counter()
        for agency, action, event in work:
            decision = evaluator.decide(agency, roles, action, event)
            if with_redaction and decision.allowed and action == "receive":
                redact(event, decision.redacted_fields)
        rates.append(len(work) / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dutylink.policies.bench", description=__doc__)
    parser.add_argument("--agencies", type=int, default=20)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=50_000, help="per run")
    args = parser.parse_args(argv)
    policy = parse_policy(
        {"bench.yaml": yaml.safe_dump(synthetic_policy(args.agencies, args.rules))}
    )
    evaluator = Evaluator(policy)
    events = synthetic_events(256)
    pick = random.Random(3)
    work = [
        (pick.choice(policy.agency_ids), pick.choice(("publish", "receive")), pick.choice(events))
        for _ in range(args.decisions)
    ]
    allowed = sum(evaluator.decide(a, frozenset(), act, e).allowed for a, act, e in work)
    decisions = _rate(work, evaluator, args.runs, with_redaction=False)
    deliveries = _rate(work, evaluator, args.runs, with_redaction=True)
    print(f"policy: {args.agencies} agencies x {len(policy.rules)} rules, version {policy.version[:12]}; "
          f"{allowed / len(work):.0%} of the decisions allow")  # fmt: skip
    print(f"  decide:          {decisions:>10,.0f} decisions/s ({1e6 / decisions:.1f} µs each)")
    print(f"  decide + redact: {deliveries:>10,.0f} decisions/s (allowed receives redact a copy)")
    print(f"  median of {args.runs} runs of {len(work):,} decisions")


if __name__ == "__main__":
    main()
