"""`dutylink policy check | explain | matrix` on the sample policies and on broken copies."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from google.protobuf import json_format
from typer.testing import CliRunner

from dutylink.policies.loader import load_policy, policy_files
from dutylink.policies.model import FAMILIES
from dutylink.v1 import event_pb2
from gateway.cli.policy import policy_app
from tests.factories import incident_event, resource_request_event

SAMPLES = load_policy(policy_files())
EXAMPLE = Path(__file__).parents[1] / "proto" / "examples" / "weather.warning-alert.json"
runner = CliRunner()


def samples_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    for path in policy_files():
        shutil.copy(path, directory / path.name)
    return directory


def event_file(tmp_path: Path, event: event_pb2.Event, name: str = "event.json") -> Path:
    path = tmp_path / name
    path.write_text(json_format.MessageToJson(event), encoding="utf-8")
    return path


# --- check ----------------------------------------------------------------------------------


def test_check_passes_on_the_samples_with_version_and_counts() -> None:
    result = runner.invoke(policy_app, ["check"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"policy {SAMPLES.version[:12]}: 11 agencies, 29 rules, 3 redactions, 4 deadlines"
    )
    assert result.stderr == ""


def test_check_takes_files_or_a_directory(tmp_path: Path) -> None:
    directory = samples_copy(tmp_path)
    by_dir = runner.invoke(policy_app, ["check", "--dir", str(directory)])
    files = [str(p) for p in sorted(directory.glob("*.yaml"))]
    by_files = runner.invoke(policy_app, ["check", *files])
    assert by_dir.exit_code == by_files.exit_code == 0
    # The version hashes file names and texts, not the directory: a copy has the same one.
    assert by_dir.stdout == by_files.stdout == runner.invoke(policy_app, ["check"]).stdout


def test_check_reports_a_broken_rule_as_file_line_reason(tmp_path: Path) -> None:
    directory = samples_copy(tmp_path)
    rules = directory / "rules.yaml"
    lines = rules.read_text(encoding="utf-8").splitlines(keepends=True)
    line = lines.index("    agencies: [weather]\n") + 1
    lines[line - 1] = "    agencies: [wether]\n"
    rules.write_text("".join(lines), encoding="utf-8")

    result = runner.invoke(policy_app, ["check", "--dir", str(directory)])
    assert result.exit_code == 1
    assert f"{rules}:{line}: unknown agency 'wether' (did you mean 'weather'?)" in result.stderr
    assert "error: 1 error in the policy files" in result.stderr
    assert result.stdout == ""


def test_warnings_are_printed_and_fail_only_with_strict(tmp_path: Path) -> None:
    directory = samples_copy(tmp_path)
    (directory / "zz-extra.yaml").write_text(
        textwrap.dedent("""\
            rules:
              - id: fire-publishes-fires
                effect: allow
                action: publish
                agencies: [fire]
                types: incident.reported
                jurisdictions: ["31"]
        """),
        encoding="utf-8",
    )
    args = ["check", "--dir", str(directory)]

    lenient = runner.invoke(policy_app, args)
    assert lenient.exit_code == 0, lenient.output
    assert (
        f"{directory / 'zz-extra.yaml'}:2: warning: rule 'fire-publishes-fires' is shadowed by "
        "'everyone-publishes-incidents'" in lenient.stderr
    )
    assert "30 rules, 3 redactions, 4 deadlines (1 warning)" in lenient.stdout

    strict = runner.invoke(policy_app, [*args, "--strict"])
    assert strict.exit_code == 1
    assert "warning: rule 'fire-publishes-fires' is shadowed" in strict.stderr
    assert "error: 1 warning (--strict)" in strict.stderr
    assert strict.stdout == ""


def test_check_usage_errors_exit_2(tmp_path: Path) -> None:
    empty = runner.invoke(policy_app, ["check", "--dir", str(tmp_path)])
    assert empty.exit_code == 2
    assert f"{tmp_path}: no policy files (*.yaml)" in empty.stderr
    both = runner.invoke(policy_app, ["check", str(policy_files()[0]), "--dir", str(tmp_path)])
    assert both.exit_code == 2
    assert runner.invoke(policy_app, ["check", str(tmp_path / "missing.yaml")]).exit_code == 2


# --- explain --------------------------------------------------------------------------------


def test_explain_allow_shows_rules_checks_and_redacted_fields(tmp_path: Path) -> None:
    event = incident_event()
    result = runner.invoke(
        policy_app,
        ["explain", "--agency", "transport", "--action", "receive",
         "--event", str(event_file(tmp_path, event))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("ALLOW: allowed by responders-receive-incidents")
    assert f"policy version: {SAMPLES.version[:12]}" in out
    assert "redacted fields: incident.reporter\n" in out
    assert "transport-sees-location-not-person" in out
    # Every receive rule for incidents is in the table, each with its outcome.
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 4}
    incident_rules = [
        r.id for r in SAMPLES.rules if r.action == "receive" and r.types == ("incident.*",)
    ]
    assert set(rows) >= set(incident_rules)
    assert "matches" in rows["responders-receive-incidents"]
    assert "not for agency transport" in rows["ecology-receives-pollution-incidents"]
    assert "plane ACTUAL is not one of TEST" in rows["everyone-receives-link-tests"]


def test_explain_deny_exits_1(tmp_path: Path) -> None:
    event = resource_request_event()
    event.type = "resource.commit"
    result = runner.invoke(
        policy_app,
        ["explain", "--agency", "transport", "--action", "publish",
         "--event", str(event_file(tmp_path, event))],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout.startswith("DENY: no rule allows")
    assert (
        "type resource.commit is not one of resource.request, resource.request_information"
        in result.stdout
    )


def test_explain_reads_the_publish_example_and_roles(tmp_path: Path) -> None:
    result = runner.invoke(
        policy_app,
        ["explain", "--agency", "weather", "--action", "publish", "--event", str(EXAMPLE),
         "--roles", "command"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ALLOW: allowed by weather-publishes-warnings" in result.stdout
    assert "does not grant weather the role(s) command" in result.stdout
    assert "redacted fields: — (publishing withholds nothing)" in result.stdout


def test_explain_an_unknown_agency_is_a_deny(tmp_path: Path) -> None:
    path = event_file(tmp_path, incident_event())
    result = runner.invoke(
        policy_app, ["explain", "--agency", "nobody", "--action", "receive", "--event", str(path)]
    )
    assert result.exit_code == 1
    assert "DENY: unknown agency 'nobody'" in result.stdout


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"type": "incident.reported",', "not valid JSON: Expecting"),
        ('{"type": "incident.reported", "colour": "red"}', "not a dutylink.v1.Event"),
        ('["incident.reported"]', "expected a JSON object"),
    ],
)
def test_explain_an_unparsable_event_exits_2_naming_the_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "broken-event.json"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(
        policy_app, ["explain", "--agency", "fire", "--action", "receive", "--event", str(path)]
    )
    assert result.exit_code == 2
    assert f"error: {path}: {reason}" in result.stderr
    assert result.stdout == ""


# --- matrix ---------------------------------------------------------------------------------


def test_matrix_names_every_agency_and_family() -> None:
    result = runner.invoke(policy_app, ["matrix"])
    assert result.exit_code == 0, result.output
    for name in (*SAMPLES.agency_ids, *FAMILIES):
        assert name in result.stdout
    assert SAMPLES.version[:12] in result.stdout


def test_matrix_markdown_is_a_table_of_the_allow_and_deny_rules() -> None:
    result = runner.invoke(policy_app, ["matrix", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[0] == (
        "| agency | clearance | incident | resource | warning | task | inventory "
        "| acknowledgement | escalation |"
    )
    assert table[1] == "|---|---|---|---|---|---|---|---|---|"
    rows = [row.removeprefix("| ").removesuffix(" |").split(" | ") for row in table[2:]]
    cells = {row[0]: row[2:] for row in rows}
    assert list(cells) == list(SAMPLES.agency_ids)
    # A cell covered by a wider one leaves out the narrower rule (link tests on the TEST plane).
    assert cells["police"][0] == "pub: all · rcv: ≤CONFIDENTIAL"
    assert cells["transport"][1].startswith("pub: request, request_information; all if plane TEST")
    assert "(deny: confidential-only-from-police-and-command)" in cells["transport"][1]
    assert cells["command"] == [
        "pub: all · rcv: ≤CONFIDENTIAL (deny: confidential-public-order-police-only)",
        "pub: all · rcv: ≤RESTRICTED",
        "pub: all · rcv: ≤RESTRICTED",
        "pub: all · rcv: ≤RESTRICTED",
        "pub: adjusted, declared; all if plane TEST · rcv: replenishment_needed, "
        "reservation_expired ≤INTERNAL if a party to it; ≤INTERNAL if plane TEST",
        "pub: all · rcv: ≤RESTRICTED",
        "pub: all if plane TEST · rcv: ≤RESTRICTED",
    ]
    assert "rcv: ≤INTERNAL if category FLOOD/GEOLOGICAL/SEVERE_WEATHER" in cells["weather"][0]


def test_matrix_shows_a_dash_where_nothing_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        textwrap.dedent("""\
            agencies:
              - id: fire
                name: Fire
              - id: guest
                name: Guest
                clearance: PUBLIC
            rules:
              - id: fire-receives-requests
                effect: allow
                action: receive
                agencies: "*"
                types: [resource.request, resource.commit]
                max_classification: RESTRICTED
                purpose: Plan.
        """),
        encoding="utf-8",
    )
    result = runner.invoke(policy_app, ["matrix", "--dir", str(tmp_path), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "| fire | — | — | rcv: commit, request ≤RESTRICTED | — |" in result.stdout
    assert "| guest | PUBLIC | — | rcv: commit, request ≤PUBLIC | — |" in result.stdout


def test_matrix_on_a_broken_policy_prints_the_findings(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("agencies:\n  - id: fire\n", encoding="utf-8")
    result = runner.invoke(policy_app, ["matrix", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'policy.yaml'}:2: agency 'fire' is missing required key 'name'" in (
        result.stderr
    )


def test_explain_on_a_broken_policy_exits_2_not_the_deny_code(tmp_path: Path) -> None:
    directory = samples_copy(tmp_path)
    rules = directory / "rules.yaml"
    rules.write_text(
        rules.read_text(encoding="utf-8").replace("agencies: [weather]", "agencies: [wether]")
    )
    result = runner.invoke(
        policy_app,
        ["explain", "--agency", "transport", "--action", "receive", "--dir", str(directory),
         "--event", str(event_file(tmp_path, incident_event()))],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "unknown agency 'wether'" in result.stderr
