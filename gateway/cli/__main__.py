"""`python -m gateway.cli`: the `dutylink` command."""

from gateway.cli.main import app

app()
