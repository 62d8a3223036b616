"""`dutylink catalogue list [--json]` prints every catalogued type."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dutylink.catalogue import load_catalogue
from gateway.cli.main import app

runner = CliRunner()


def test_list_json_prints_one_object_per_type_with_its_transition() -> None:
    result = runner.invoke(app, ["catalogue", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["type"] for row in rows] == [t.type for t in load_catalogue().types]
    verified = next(row for row in rows if row["type"] == "incident.verified")
    assert verified == {
        "type": "incident.verified",
        "family": "incident",
        "lifecycle": "incident",
        "from_states": ["reported"],
        "to_state": "verified",
        "roles": ["reporter", "command_centre"],
        "required_fields": ["incident.incident_id"],
    }


def test_list_prints_a_table_naming_every_type() -> None:
    result = runner.invoke(app, ["catalogue", "list"])
    assert result.exit_code == 0, result.output
    for entry in load_catalogue().types:
        assert entry.type in result.stdout
