"""Loading policy files: the samples, every kind of error with its file:line, lint warnings and
the policy version."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from dutylink.policies.loader import load_policy, parse_policy, policy_files, policy_version
from dutylink.policies.model import PolicyError
from gateway.config import SAMPLE_AGENCIES

AGENCIES = textwrap.dedent("""\
    roles:
      command: Command duty officer
    agencies:
      - id: fire
        name: Fire
      - id: police
        name: Police
      - id: command
        name: Command
        roles: [command]
""")


def errors(rules: str, agencies: str = AGENCIES) -> list[str]:
    """The error lines of loading `rules` (as policies/rules.yaml) beside the agencies file."""
    with pytest.raises(PolicyError) as caught:
        parse_policy({"policies/agencies.yaml": agencies, "policies/rules.yaml": rules})
    return [str(finding) for finding in caught.value.findings]


def test_the_samples_load_without_errors_or_warnings() -> None:
    policy = load_policy(policy_files())
    assert policy.rules and policy.redactions
    assert policy.warnings == ()
    assert len(policy.version) == 64


def test_the_sample_agencies_are_the_gateways_sample_agencies() -> None:
    policy = load_policy(policy_files())
    gateway_agencies = tomllib.loads(SAMPLE_AGENCIES.read_text())["agencies"]
    assert policy.agency_ids == tuple(a["id"] for a in gateway_agencies)
    command = policy.agency("command")
    assert command is not None and command.roles == {"command"}
    assert policy.break_glass.roles == {"command"}
    assert policy.break_glass.max_duration.total_seconds() == 24 * 3600


def test_an_unknown_agency_is_reported_on_its_line_with_a_suggestion() -> None:
    rules = textwrap.dedent("""\
        rules:
          - id: fire-publishes
            effect: allow
            action: publish
            agencies: [fire, fier]
            types: incident.*
    """)
    assert errors(rules) == ["policies/rules.yaml:5: unknown agency 'fier' (did you mean 'fire'?)"]


def test_an_unknown_field_path_is_reported_on_its_line() -> None:
    rules = textwrap.dedent("""\
        redactions:
          - id: hide-phone
            fields:
              - incident.reporter.phone
              - incident.reporter.fone
            for_agencies: [fire]
    """)
    assert errors(rules) == [
        "policies/rules.yaml:5: unknown field path 'incident.reporter.fone': "
        "Reporter has no field 'fone' (did you mean 'phone'?)"
    ]


def test_a_misspelt_classification_names_the_valid_ones() -> None:
    rules = textwrap.dedent("""\
        rules:
          - id: fire-receives
            effect: allow
            action: receive
            agencies: [fire]
            types: incident.*
            max_classification: SECERT
            purpose: Respond to incidents.
    """)
    assert errors(rules) == [
        "policies/rules.yaml:7: unknown classification 'SECERT' "
        "(expected one of PUBLIC, INTERNAL, RESTRICTED, CONFIDENTIAL)"
    ]


def test_a_duplicate_rule_id_points_at_the_first_one() -> None:
    rule = "  - id: twice\n    effect: allow\n    action: publish\n    agencies: [fire]\n    types: '*'\n"
    assert errors("rules:\n" + rule + rule) == [
        "policies/rules.yaml:7: duplicate rule id 'twice' (first declared at policies/rules.yaml:2)"
    ]


def test_a_duplicate_id_across_files_is_reported() -> None:
    assert errors("agencies:\n  - id: fire\n    name: Fire again\n") == [
        "policies/rules.yaml:2: duplicate agency id 'fire' "
        "(first declared at policies/agencies.yaml:4)"
    ]


def test_an_unknown_key_is_reported_with_a_suggestion() -> None:
    rules = textwrap.dedent("""\
        rules:
          - id: fire-publishes
            efect: allow
            action: publish
            agencies: [fire]
            types: incident.*
    """)
    assert errors(rules) == [
        "policies/rules.yaml:2: rule 'fire-publishes' is missing required key 'effect'",
        "policies/rules.yaml:3: unknown key 'efect' in rule 'fire-publishes' (did you mean 'effect'?)",
    ]


def test_a_bad_type_pattern_is_reported() -> None:
    rules = textwrap.dedent("""\
        rules:
          - id: fire-publishes
            effect: allow
            action: publish
            agencies: [fire]
            types: [incident.*, incidents.reported]
    """)
    [found] = errors(rules)
    assert found.startswith("policies/rules.yaml:6: bad type pattern 'incidents.reported'")


def test_every_error_of_a_load_is_reported_in_line_order() -> None:
    rules = textwrap.dedent("""\
        rules:
          - id: fire-receives
            effect: allow
            action: receive
            agencies: [fier]
            types: [incident.*, incident]
            jurisdictions: ["311"]
            planes: [ACTUAL, DRILL]
            max_classification: SECERT
            min_priority: HIGH
            purpose: Respond.
          - id: no-purpose
            effect: allow
            action: receive
            agencies: "*"
            roles: [boss]
            types: warning.*
            categories: [FIRE]
            max_classification: PUBLIC
        redactions:
          - id: hide
            fields: [incident.reporter.nmae, type]
    """)
    lines = [line.split(": ", 1)[0] for line in errors(rules)]
    assert lines == [
        "policies/rules.yaml:5",  # unknown agency
        "policies/rules.yaml:6",  # bad type pattern
        "policies/rules.yaml:7",  # bad jurisdiction prefix
        "policies/rules.yaml:8",  # unknown plane
        "policies/rules.yaml:9",  # unknown classification
        "policies/rules.yaml:10",  # unknown priority
        "policies/rules.yaml:12",  # receive allow rule without a purpose
        "policies/rules.yaml:16",  # unknown role
        "policies/rules.yaml:18",  # categories on warnings
        "policies/rules.yaml:21",  # redaction says nobody loses the fields
        "policies/rules.yaml:22",  # unknown field path
        "policies/rules.yaml:22",  # 'type' cannot be redacted
    ]


def test_a_receive_allow_rule_needs_a_ceiling_and_a_purpose() -> None:
    rules = "rules:\n  - id: r\n    effect: allow\n    action: receive\n    agencies: [fire]\n    types: '*'\n"
    assert errors(rules) == [
        "policies/rules.yaml:2: rule 'r': a receive allow rule needs max_classification "
        "(the receiver's ceiling)",
        "policies/rules.yaml:2: rule 'r': a receive allow rule needs a purpose "
        "(PIPL purpose binding: what the receivers use the events for)",
    ]


def test_only_parties_is_a_flag_of_receive_rules() -> None:
    rule = "rules:\n  - id: r\n    effect: allow\n    action: {action}\n    agencies: [fire]\n    types: '*'\n    only_parties: {value}\n"
    assert errors(rule.format(action="publish", value="true")) == [
        "policies/rules.yaml:7: only_parties applies to receive rules only"
    ]
    deny = rule.format(action="receive", value="yes").replace("allow", "deny")
    assert errors(deny) == ["policies/rules.yaml:7: only_parties must be true or false, not 'yes'"]


def test_a_yaml_syntax_error_has_its_line_and_a_hint_for_a_bare_star() -> None:
    [found] = errors("rules:\n  - id: r\n    agencies: *\n")
    assert found.startswith("policies/rules.yaml:3: not valid YAML:")
    assert 'write "*" in quotes' in found


def test_a_duplicate_key_in_one_mapping_is_an_error() -> None:
    rules = "rules:\n  - id: r\n    effect: allow\n    effect: deny\n    action: publish\n    agencies: [fire]\n    types: '*'\n"
    assert errors(rules) == ["policies/rules.yaml:4: duplicate key 'effect' in rule 'r'"]


def test_break_glass_may_be_declared_only_once() -> None:
    glass = "break_glass:\n  roles: [command]\n  max_duration_hours: 6\n"
    assert errors(glass, AGENCIES + glass) == [
        "policies/rules.yaml:1: break_glass is declared twice (first in policies/agencies.yaml)"
    ]


def test_break_glass_needs_a_positive_duration() -> None:
    assert errors("break_glass:\n  roles: [command]\n  max_duration_hours: -1\n") == [
        "policies/rules.yaml:3: max_duration_hours must be a positive number, not '-1'"
    ]


def test_an_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read"):
        load_policy([tmp_path / "missing.yaml"])


# --- lint warnings ----------------------------------------------------------------------------

PUBLISH = "  - id: {id}\n    effect: {effect}\n    action: publish\n    agencies: {agencies}\n    types: {types}\n"


def warnings(rules: str) -> list[str]:
    policy = parse_policy({"policies/agencies.yaml": AGENCIES, "policies/rules.yaml": rules})
    return [str(w) for w in policy.warnings if "sensitivity" not in w.message]


def test_a_rule_inside_an_earlier_one_is_shadowed() -> None:
    rules = "rules:\n" + PUBLISH.format(
        id="wide", effect="allow", agencies='"*"', types="incident.*"
    )
    rules += PUBLISH.format(
        id="narrow", effect="allow", agencies="[fire]", types="incident.reported"
    )
    assert warnings(rules) == [
        "policies/rules.yaml:7: rule 'narrow' is shadowed by 'wide' (policies/rules.yaml:2), "
        "which matches everything it matches"
    ]


def test_an_earlier_rule_inside_a_later_one_is_shadowed_too() -> None:
    rules = "rules:\n" + PUBLISH.format(
        id="narrow", effect="allow", agencies="[fire]", types="incident.reported"
    )
    rules += PUBLISH.format(id="wide", effect="allow", agencies='"*"', types="'*'")
    assert warnings(rules) == [
        "policies/rules.yaml:2: rule 'narrow' is shadowed by 'wide' (policies/rules.yaml:7), "
        "which matches everything it matches"
    ]


def test_overlapping_rules_that_do_not_contain_each_other_are_fine() -> None:
    rules = "rules:\n" + PUBLISH.format(id="a", effect="allow", agencies="[fire]", types="'*'")
    rules += PUBLISH.format(id="b", effect="allow", agencies="[fire, police]", types="incident.*")
    assert warnings(rules) == []


def test_an_allow_rule_inside_a_deny_rule_can_never_allow() -> None:
    rules = "rules:\n" + PUBLISH.format(
        id="fire-publishes", effect="allow", agencies="[fire]", types="incident.*"
    )
    rules += PUBLISH.format(id="nobody-publishes", effect="deny", agencies='"*"', types="'*'")
    assert warnings(rules) == [
        "policies/rules.yaml:2: rule 'fire-publishes' can never allow: deny rule "
        "'nobody-publishes' (policies/rules.yaml:7) matches everything it matches"
    ]


def test_sensitive_fields_without_a_redaction_are_listed_once() -> None:
    policy = parse_policy({"policies/agencies.yaml": AGENCIES})
    [reminder] = policy.warnings
    assert reminder.line == 0
    for path in ("incident.reporter.name", "incident.reporter.position", "resource.contacts.email"):
        assert path in reminder.message
    covered = "redactions:\n  - id: r\n    fields: [incident.reporter]\n    for_agencies: '*'\n"
    [reminder] = parse_policy({"a.yaml": AGENCIES, "b.yaml": covered}).warnings
    assert "incident.reporter" not in reminder.message
    assert "resource.contacts.phone (PERSONAL)" in reminder.message


# --- version ----------------------------------------------------------------------------------


def test_the_version_depends_on_content_and_file_names_only() -> None:
    texts = {"policies/a.yaml": AGENCIES, "policies/b.yaml": "rules: []\n"}
    version = policy_version(texts)
    assert policy_version(dict(reversed(texts.items()))) == version
    assert (
        policy_version({"/etc/dutylink/" + k.split("/")[1]: v for k, v in texts.items()}) == version
    )
    assert policy_version({k: v.replace("\n", "\r\n") for k, v in texts.items()}) == version
    assert policy_version({**texts, "policies/b.yaml": "rules: [] # reviewed\n"}) != version
    assert (
        policy_version({"policies/a.yaml": AGENCIES, "policies/c.yaml": "rules: []\n"}) != version
    )
    assert policy_version({**texts, "policies/c.yaml": ""}) != version


def test_the_loaded_version_changes_when_any_file_changes(tmp_path: Path) -> None:
    for path in policy_files():
        (tmp_path / path.name).write_text(path.read_text())
    first = load_policy(policy_files(tmp_path)).version
    assert load_policy(policy_files(tmp_path)).version == first
    assert load_policy(policy_files()).version == first
    for path in policy_files(tmp_path):
        original = path.read_text()
        path.write_text(original + "# one more comment\n")
        assert load_policy(policy_files(tmp_path)).version != first
        path.write_text(original)
    assert load_policy(policy_files(tmp_path)).version == first
