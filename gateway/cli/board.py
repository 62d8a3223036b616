"""The duty board from the command line: `dutylink board [JURISDICTION]` lists the incidents
(those with something overdue first), `dutylink incident ID` shows one with its lines and
timeline (with each event's recipients, for its sender and the command centre), each as the
caller's agency may see it, and `dutylink ledger [AGENCY]` an agency's resource ledger
(BoardService)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated

import typer
from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dutylink.v1 import board_pb2, event_pb2, gateway_pb2
from gateway.cli import board_live
from gateway.cli.duty import JsonOption, PlaneOption
from gateway.cli.exchange import (
    DEFAULT_TARGET,
    CaOption,
    CertOption,
    KeyOption,
    TargetOption,
    TokenOption,
    as_json,
    client_for,
    planes_of,
    run_rpc,
)

AsOfOption = Annotated[
    str,
    typer.Option(
        "--as-of",
        help="As your agency was entitled to see it at this past moment (ISO 8601 with a zone, "
        "e.g. 2026-08-15T10:00:00+08:00): the events received by then, under the policy then.",
    ),
]


def moment_of(text: str) -> datetime | None:
    """`--as-of` as a time (None when not given); a bad one is the user's error, said so."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint="--as-of") from None
    if moment.tzinfo is None:
        raise typer.BadParameter("give the time zone, e.g. +08:00 or Z", param_hint="--as-of")
    return moment


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    return f"{stamp.ToDatetime(tzinfo=UTC):%Y-%m-%d %H:%M:%S}Z"


def line_text(line: board_pb2.BoardLine) -> str:
    """E.g. "task T-7: assigned (housing), due 2026-08-22 08:00:00Z OVERDUE"."""
    text = f"{line.lifecycle} {line.key}: {line.state}"
    if line.assigned:
        text += f" ({', '.join(line.assigned)})"
    if line.HasField("deadline"):
        text += f", due {_when(line.deadline)}"
    return text + (" OVERDUE" if line.overdue else "")


_OUTCOMES = {
    board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES: "receives",
    board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES_REDACTED: "receives redacted",
    board_pb2.BOARD_RECIPIENT_OUTCOME_WITHHELD: "withheld",
}


def recipient_text(recipient: board_pb2.BoardRecipient) -> str:
    """E.g. "transport: receives redacted [incident.reporter] by responders-receive-incidents",
    "housing: withheld (no rule allows)", "police: receives by r1; acknowledged 10:02:03Z"."""
    text = f"{recipient.agency}: {_OUTCOMES.get(recipient.outcome, '?')}"
    if recipient.redacted_fields:
        text += f" [{', '.join(recipient.redacted_fields)}]"
    text += (
        f" by {', '.join(recipient.rule_ids)}" if recipient.rule_ids else f" ({recipient.reason})"
    )
    if recipient.policy_not_archived:
        text += " (no policy on record for then: judged under the one asked about)"
    if recipient.HasField("tracked"):
        tracked = recipient.tracked
        state = gateway_pb2.RecipientStatus.Name(tracked.status).removeprefix("RECIPIENT_STATUS_")
        text += f"; {state.lower()}"
        stamp = tracked.answered_at if tracked.HasField("answered_at") else tracked.delivered_at
        if tracked.HasField("answered_at") or tracked.HasField("delivered_at"):
            text += f" {_when(stamp)}"
        if tracked.answered_by:
            text += f" by {tracked.answered_by}"
        if tracked.reason:
            text += f" ({tracked.reason})"
    return text


def incident_heading(incident: board_pb2.BoardIncident) -> str:
    """E.g. "INC-119-0815-01 [310115] Fire at a solvent store: handling, lead fire, 1 overdue"."""
    stage = incident.stage.state if incident.HasField("stage") else "?"
    text = f"{incident.incident_id} [{incident.division_code}] {incident.title or '(untitled)'}"
    text += f": {stage}"
    if incident.HasField("phase"):
        text += f" / {incident.phase.state}"
    if incident.stage.lead:
        text += f", lead {incident.stage.lead}"
    if incident.overdue:
        text += f", {incident.overdue} overdue"
    return text


def board(
    jurisdiction: Annotated[
        str, typer.Argument(help="A 2/4/6-digit division prefix (default: every one).")
    ] = "",
    plane: PlaneOption = "ACTUAL",
    finished: Annotated[
        bool, typer.Option("--all", help="Closed, rejected and merged incidents too.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: 50).")] = 0,
    as_of: AsOfOption = "",
    json: JsonOption = False,
    live: Annotated[
        bool,
        typer.Option(
            "--watch", help="Keep the board on screen, redrawn at every change, until Ctrl-C."
        ),
    ] = False,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """List the incidents of a jurisdiction as your agency may see them: those with something
    overdue first, then the latest changed; one line each with their overdue lines below
    (--watch: a table kept live)."""
    (plane_value,) = planes_of([plane], "--plane")
    moment = moment_of(as_of)
    connect = client_for(target, token, ca, cert, key)
    if live:
        if moment is not None or json:
            raise typer.BadParameter(
                "--watch shows the board now, in a table", param_hint="--watch"
            )

        async def watching() -> None:
            await board_live.watch(
                connect,
                jurisdiction,
                plane=plane_value,
                include_finished=finished,
                limit=limit,
                console=Console(),
            )

        with contextlib.suppress(KeyboardInterrupt):
            run_rpc(watching)
        return

    async def main() -> board_pb2.GetBoardResponse:
        async with connect() as client:
            return await client.board(
                jurisdiction,
                plane=plane_value,
                include_finished=finished,
                limit=limit,
                as_of=moment,
            )

    page = run_rpc(main)
    if json:
        typer.echo(as_json(page))
        return
    for incident in page.incidents:
        typer.echo(incident_heading(incident))
        for line in incident.lines:
            if line.overdue:
                typer.echo(f"  {line_text(line)}")
    if not page.incidents:
        typer.echo("no incidents")
    if page.truncated:
        typer.echo("… more incidents (raise --limit)")


def incident(
    incident_id: Annotated[str, typer.Argument(help="The incident's id.")],
    plane: PlaneOption = "ACTUAL",
    as_of: AsOfOption = "",
    json: JsonOption = False,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Show one incident as your agency may see it: its stage, lead and agencies, its warnings,
    tasks and resource lines, and its timeline (every event you may see, who sent it; under your
    own events, and under every event for the command centre, who received it and what the
    policy withheld from whom, by which rule)."""
    (plane_value,) = planes_of([plane], "--plane")
    moment = moment_of(as_of)
    connect = client_for(target, token, ca, cert, key)

    async def main() -> board_pb2.BoardIncident:
        async with connect() as client:
            return await client.incident(incident_id, plane=plane_value, as_of=moment)

    shown = run_rpc(main)
    if json:
        typer.echo(as_json(shown))
        return
    typer.echo(incident_heading(shown))
    typer.echo(f"agencies: {', '.join(shown.agencies)}")
    for line in shown.lines:
        typer.echo(f"  {line_text(line)}")
    for message in shown.acknowledgements:
        typer.echo(f"  taken: {message.sender}/{message.event_id} ({message.event_type}): "
                   f"{message.summary.text}")  # fmt: skip
    for entry in shown.timeline:
        event = entry.event
        plane_name = event_pb2.Plane.Name(event.plane).removeprefix("PLANE_")
        typer.echo(f"{_when(entry.received_time)} {event.source}: {event.type} ({plane_name})")
        for recipient in entry.recipients:
            typer.echo(f"    {recipient_text(recipient)}")


def amount(value: float) -> str:
    """A quantity as people write it: "40", "2.5" (not "40.0")."""
    return str(int(value)) if value.is_integer() else repr(value)


def ledger_table(page: board_pb2.GetLedgerResponse) -> Table:
    """One row per item; the mark column says LOW below the threshold, OUT out of service."""
    plane_name = event_pb2.Plane.Name(page.plane).removeprefix("PLANE_")
    table = Table(
        "item", "unit", "total", "available", "reserved", "committed", "deployed",
        "returning", "threshold", "",
        title=escape(f"ledger of {page.agency} ({plane_name})"),
    )  # fmt: skip
    for item in page.items:
        marks = ["LOW"] if item.below_threshold else []
        marks += ["OUT"] if item.out_of_service else []
        figures = (item.total, item.available, item.reserved, item.committed, item.deployed,
                   item.returning, item.threshold)  # fmt: skip
        table.add_row(
            escape(item.item_id),
            escape(item.unit),
            *(amount(figure) for figure in figures),
            " ".join(marks),
        )
    return table


def ledger(
    agency: Annotated[
        str,
        typer.Argument(help="The agency (default: your own; another's needs the command role)."),
    ] = "",
    plane: PlaneOption = "ACTUAL",
    item_prefix: Annotated[
        str, typer.Option("--item-prefix", help="Only the items whose id starts with this.")
    ] = "",
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: 200).")] = 0,
    json: JsonOption = False,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Show an agency's resource ledger: per item its declared total and what is available,
    reserved, committed, deployed and returning (LOW: below its replenishment threshold)."""
    (plane_value,) = planes_of([plane], "--plane")
    connect = client_for(target, token, ca, cert, key)

    async def main() -> board_pb2.GetLedgerResponse:
        async with connect() as client:
            return await client.ledger(
                agency, plane=plane_value, item_prefix=item_prefix, limit=limit
            )

    page = run_rpc(main)
    if json:
        typer.echo(as_json(page))
        return
    if not page.items:
        typer.echo(f"no items in the ledger of {page.agency}")
        return
    Console(width=160).print(ledger_table(page))
    if page.truncated:
        typer.echo("… more items (raise --limit)")


def register(app: typer.Typer) -> None:
    app.command("board")(board)
    app.command("incident")(incident)
    app.command("ledger")(ledger)
