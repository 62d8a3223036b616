"""The demo scenario runs end to end through a real gateway and every agency gets its share."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import grpc
import pytest
from rich.console import Console

from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.cli.demo import SUBSCRIPTIONS, DemoReport, publish_step, run_demo
from gateway.cli.demo_scenario import script
from gateway.core.admission import RefusalKind, Refused, StateProblem
from gateway.core.validation import Validator
from gateway.rpc.publish_outcomes import failure_status
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests


def test_every_scripted_event_is_valid() -> None:
    validator = Validator()
    for step in script(datetime(2026, 8, 15, 6, tzinfo=UTC)):
        assert validator.problems(step.event) == [], step.narration


async def test_the_demo_delivers_each_event_to_every_other_subscribed_agency_under_the_sample_policy(
    nats_url: str,
) -> None:
    output = io.StringIO()
    config = config_for_tests(policy={"dir": str(SAMPLE_DIR)})
    async with gateway_for_tests(nats_url, config) as gateway:
        report = await run_demo(gateway.address, Console(file=output, width=200), pause=0)
    # The double booking is stored only by a gateway that does not enforce the lifecycles.
    assert len(report.refused) + len(report.unenforced) == 1
    steps = [s for s in script(datetime.now(UTC)) if not (s.refused_by_design and report.refused)]
    for agency, families in SUBSCRIPTIONS.items():
        expected = sum(
            1 for s in steps if s.agency != agency and s.event.WhichOneof("payload") in families
        )
        assert report.received[agency] == expected, agency
    assert sum(report.sent.values()) == len(steps)
    assert report.duplicates == 1
    assert "jurisdiction.division_code" in report.rejected_fields
    assert "Exchange summary" in output.getvalue()
    if report.refused:  # the ledger line that refused it, readably
        assert "refused, as it must be: FAILED_PRECONDITION, by" in output.getvalue()
        assert "ledger/exercise/emergency/" in output.getvalue()
    covering_phone = [
        f for f in report.withheld["transport"] if "incident.reporter.phone".startswith(f)
    ]
    assert covering_phone, "transport sees the place, not the person"
    assert not any(f.startswith("incident.reporter") for f in report.withheld["police"])
    # Everyone the assignment named took it but transport, which the status names as pending.
    assert report.assignment_status == (
        "delivered 6 of 6, acknowledged 5, declined 0, pending 1: transport"
    )


class Refusing:
    """A gateway's answer to every publish: a refusal with this code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code, self.message = code, message

    async def publish(self, event: event_pb2.Event) -> gateway_pb2.Receipt:
        raise grpc.aio.AioRpcError(
            self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=self.message
        )


DOUBLE_BOOKING = [s for s in script(datetime(2026, 8, 15, 6, tzinfo=UTC)) if s.refused_by_design]


async def test_the_double_booking_refused_as_an_illegal_transition_is_shown_as_the_expected_outcome() -> (
    None
):
    (step,) = DOUBLE_BOOKING
    message = "emergency/amb-np-reserve-x [line RM-119-X-0009/1]: commitment beyond what is available: requested 2, available 0"  # fmt: skip
    output, report = io.StringIO(), DemoReport()
    gateway = Refusing(grpc.StatusCode.FAILED_PRECONDITION, message)
    stored = await publish_step(step, gateway, report, Console(file=output, width=300))
    assert not stored and report.refused == [message] and not report.sent
    assert f"refused, as it must be: FAILED_PRECONDITION: {message}" in output.getvalue()


class RefusingByState:
    """A gateway's answer to every publish: the refusal the ledger gives, with its details."""

    def __init__(self, problem: StateProblem) -> None:
        self.status = failure_status(
            Refused(RefusalKind.ILLEGAL_TRANSITION, "no room", state_problems=(problem,))
        )

    async def publish(self, event: event_pb2.Event) -> gateway_pb2.Receipt:
        trailing = grpc.aio.Metadata(*self.status.trailing_metadata)
        raise grpc.aio.AioRpcError(
            self.status.code, grpc.aio.Metadata(), trailing, details=self.status.details
        )


async def test_the_double_booking_shows_the_ledger_line_that_refused_it() -> None:
    (step,) = DOUBLE_BOOKING
    line = StateProblem(
        "ledger/exercise/emergency/AMB", "available 0", 3, (), "requested 2, available 0"
    )
    output, report = io.StringIO(), DemoReport()
    stored = await publish_step(step, RefusingByState(line), report, Console(file=output, width=300))  # fmt: skip
    assert not stored and report.refused == ["no room"]
    printed = [row.strip() for row in output.getvalue().splitlines()]
    start = printed.index("refused, as it must be: FAILED_PRECONDITION, by")
    assert printed[start + 1 : start + 3] == [
        "ledger/exercise/emergency/AMB: 'available 0' (version 3)",
        "why: requested 2, available 0",
    ]


@pytest.mark.parametrize(
    ("by_design", "code"),
    [(True, grpc.StatusCode.PERMISSION_DENIED), (False, grpc.StatusCode.FAILED_PRECONDITION)],
)
async def test_any_other_refusal_ends_the_demo_with_its_error(
    by_design: bool, code: grpc.StatusCode
) -> None:
    steps = script(datetime(2026, 8, 15, 6, tzinfo=UTC))
    step = next(s for s in steps if s.refused_by_design == by_design)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await publish_step(step, Refusing(code, "no"), DemoReport(), Console(file=io.StringIO()))
    assert raised.value.code() == code
