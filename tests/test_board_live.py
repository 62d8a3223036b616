"""`dutylink board --watch`: the terminal board follows the gateway's changes. Pure: a change
replaces its incident in the board's order and a finished one leaves (unless finished ones are
shown). Real: against a real NATS and gateway, the board is drawn, then drawn again when fire
reports an incident and again when it is verified; the table shows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from rich.console import Console

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import board_pb2, event_pb2
from gateway.cli.board_live import board_table, follow, merged
from gateway.cli.demo_scenario import scenario
from gateway.server import Gateway
from gateway.testkit.inprocess import gateway_for_tests
from tests.conftest import TOKENS


def incident(
    incident_id: str, *, updated: int, overdue: int = 0, open_: bool = True
) -> board_pb2.BoardIncident:
    shown = board_pb2.BoardIncident(incident_id=incident_id, overdue=overdue, open=open_)
    shown.updated_time.FromSeconds(updated)
    return shown


def ids(incidents: Sequence[board_pb2.BoardIncident]) -> list[str]:
    return [i.incident_id for i in incidents]


def test_a_change_replaces_its_incident_in_the_boards_order() -> None:
    board = [incident("A", updated=30, overdue=1), incident("B", updated=20)]
    board = merged(board, incident("C", updated=40), include_finished=False)
    assert ids(board) == ["A", "C", "B"], "overdue first, then the latest changed"
    board = merged(board, incident("B", updated=50, overdue=2), include_finished=False)
    assert ids(board) == ["B", "A", "C"]
    assert board[0].overdue == 2, "replaced, not added"
    closed = incident("A", updated=60, open_=False)
    assert ids(merged(board, closed, include_finished=False)) == ["B", "C"]
    assert ids(merged(board, closed, include_finished=True)) == ["B", "A", "C"]


def test_the_table_shows_each_incident_and_says_when_there_are_none() -> None:
    console = Console(width=200, record=True)
    console.print(board_table([incident("INC-1", updated=0, overdue=3)], "duty board"))
    text = console.export_text()
    assert "INC-1" in text and "3" in text
    console.print(board_table([], "duty board"))
    assert "no incidents" in console.export_text()


@pytest.fixture
async def gateway(nats_url: str) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url) as started:
        yield started


async def test_the_terminal_board_is_drawn_again_at_every_change(gateway: Gateway) -> None:
    report, verification = scenario(datetime.now(UTC))[:2]
    incident_id = report.event.incident.incident_id
    drawn: asyncio.Queue[list[str]] = asyncio.Queue()

    def render(incidents: Sequence[board_pb2.BoardIncident]) -> None:
        drawn.put_nowait([f"{i.incident_id}:{i.stage.state}" for i in incidents])

    async with DutyLinkClient(gateway.address, token=TOKENS["transport"]) as transport:
        following = asyncio.create_task(
            follow(
                transport,
                "",
                plane=event_pb2.PLANE_EXERCISE,
                include_finished=False,
                limit=50,
                render=render,
            )
        )
        try:
            assert await asyncio.wait_for(drawn.get(), 10) == []  # the board, read first
            await asyncio.sleep(0.5)  # the watch is open at the gateway
            for step in (report, verification):
                async with DutyLinkClient(gateway.address, token=TOKENS[step.agency]) as sender:
                    await sender.publish(step.event)
            seen = [await asyncio.wait_for(drawn.get(), 10) for _ in range(2)]
        finally:
            following.cancel()
    assert seen == [[f"{incident_id}:reported"], [f"{incident_id}:verified"]]
