"""The demo scenario runs end to end through a real gateway and every agency gets its share."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from gateway.cli.demo import SUBSCRIPTIONS, run_demo, scenario
from gateway.core.validation import Validator
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from policies.loader import SAMPLE_DIR


def test_every_scripted_event_is_valid() -> None:
    validator = Validator()
    for step in scenario(datetime(2026, 8, 15, 6, tzinfo=UTC)):
        assert validator.problems(step.event) == [], step.narration


async def test_the_demo_delivers_each_event_to_every_other_subscribed_agency_under_the_sample_policy(
    nats_url: str,
) -> None:
    output = io.StringIO()
    config = config_for_tests(policy={"dir": str(SAMPLE_DIR)})
    async with gateway_for_tests(nats_url, config) as gateway:
        report = await run_demo(gateway.address, Console(file=output, width=200), pause=0)
    steps = scenario(datetime.now(UTC))
    for agency, families in SUBSCRIPTIONS.items():
        expected = sum(
            1 for s in steps if s.agency != agency and s.event.WhichOneof("payload") in families
        )
        assert report.received[agency] == expected, agency
    assert sum(report.sent.values()) == len(steps)
    assert report.duplicates == 1
    assert "jurisdiction.division_code" in report.rejected_fields
    assert "Exchange summary" in output.getvalue()
    covering_phone = [
        f for f in report.withheld["transport"] if "incident.reporter.phone".startswith(f)
    ]
    assert covering_phone, "transport sees the place, not the person"
    assert not any(f.startswith("incident.reporter") for f in report.withheld["police"])
