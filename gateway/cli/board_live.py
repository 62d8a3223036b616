"""`dutylink board --watch`: the duty board live in a terminal, for officers without a browser.

The board is read once (GetBoard), then every change the gateway announces (WatchBoard) replaces
its incident, and the table is drawn again in place (rich's Live). When the gateway ends the
stream (a restart, a rolling upgrade) the board is read again and followed anew, after a pause
that grows while the gateway stays away; Ctrl-C ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC

import grpc
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import board_pb2, event_pb2

# Pauses before following again after the stream ended (growing while it keeps failing).
RECONNECT_SECONDS = (1.0, 2.0, 5.0, 10.0)
Render = Callable[[Sequence[board_pb2.BoardIncident]], None]


def merged(
    incidents: Sequence[board_pb2.BoardIncident],
    change: board_pb2.BoardIncident,
    *,
    include_finished: bool,
) -> list[board_pb2.BoardIncident]:
    """The board after one change: the incident replaced (or added; dropped once finished,
    unless finished ones are shown), in the board's order: something overdue first, then the
    latest changed first."""
    kept = [i for i in incidents if i.incident_id != change.incident_id]
    if change.open or include_finished:
        kept.append(change)
    kept.sort(key=lambda i: i.updated_time.ToNanoseconds(), reverse=True)
    kept.sort(key=lambda i: i.overdue == 0)
    return kept


async def follow(
    client: DutyLinkClient,
    jurisdiction: str,
    *,
    plane: event_pb2.Plane.ValueType,
    include_finished: bool,
    limit: int,
    render: Render,
) -> None:
    """Read the board, render it, then render it again at every change, until the gateway
    ends the stream. The watch is opened before the board is read, so no change falls
    between the two."""
    changes = client.watch_board(jurisdiction, plane=plane)
    first_change = asyncio.ensure_future(anext(changes))
    try:
        page = await client.board(
            jurisdiction, plane=plane, include_finished=include_finished, limit=limit
        )
        incidents = list(page.incidents)
        render(incidents)
        pending: asyncio.Future[board_pb2.BoardIncident] | None = first_change
        while pending is not None:
            try:
                change = await pending
            except StopAsyncIteration:
                return
            incidents = merged(incidents, change, include_finished=include_finished)
            render(incidents)
            pending = asyncio.ensure_future(anext(changes))
    finally:
        first_change.cancel()
        if isinstance(changes, AsyncGenerator):  # ends the WatchBoard call now
            await changes.aclose()


def board_table(incidents: Sequence[board_pb2.BoardIncident], title: str) -> Table:
    table = Table(title=title, expand=True)
    for column in ("incident", "title", "division", "stage", "lead", "agencies", "overdue"):
        table.add_column(column, overflow="fold")
    table.add_column("updated (UTC)", no_wrap=True)
    for incident in incidents:
        stage = incident.stage.state if incident.HasField("stage") else "?"
        if incident.HasField("phase"):
            stage += f" / {incident.phase.state}"
        updated = incident.updated_time.ToDatetime(tzinfo=UTC)
        table.add_row(
            incident.incident_id,
            incident.title,
            incident.division_code,
            stage,
            incident.stage.lead,
            ", ".join(incident.agencies),
            f"[bold red]{incident.overdue}[/]" if incident.overdue else "",
            f"{updated:%Y-%m-%d %H:%M:%S}",
        )
    if not incidents:
        table.caption = "no incidents"
    return table


async def watch(
    connect: Callable[[], AbstractAsyncContextManager[DutyLinkClient]],
    jurisdiction: str,
    *,
    plane: event_pb2.Plane.ValueType,
    include_finished: bool,
    limit: int,
    console: Console,
) -> None:
    """Follow the board in place until interrupted, following it anew whenever the gateway
    ends the stream; a refusal (not allowed, a bad request) ends it with the error."""
    where = jurisdiction or "every jurisdiction"
    title = f"duty board: {where}, {event_pb2.Plane.Name(plane).removeprefix('PLANE_').lower()}"
    failures = 0
    with Live(board_table([], title + " (reading…)"), console=console) as live:

        def render(incidents: Sequence[board_pb2.BoardIncident]) -> None:
            live.update(board_table(incidents, title))

        while True:
            try:
                async with connect() as client:
                    await follow(
                        client,
                        jurisdiction,
                        plane=plane,
                        include_finished=include_finished,
                        limit=limit,
                        render=render,
                    )
                failures = 0
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                failures += 1
            pause = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
            live.update(board_table([], f"{title} (gateway away: again in {pause:.0f} s)"))
            await asyncio.sleep(pause)
