"""The duty verbs of an agency's people: `dutylink ack` takes a message (or declines it with a
reason) so that the sender and the command centre know a person has it; `dutylink status` and
`dutylink pending` show them who has taken their messages and who has not."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer
from google.protobuf import timestamp_pb2

from dutylink.adapters.sdk.acknowledgements import acknowledgement_of
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.cli.exchange import (
    DEFAULT_TARGET,
    CaOption,
    CertOption,
    KeyOption,
    TargetOption,
    TokenOption,
    as_json,
    client_for,
    fail,
    planes_of,
    run_rpc,
)


def acknowledge(
    message: Annotated[
        str, typer.Argument(help="The message taken, as SOURCE/EVENT_ID, e.g. weather/W-42.")
    ],
    jurisdiction: Annotated[
        str, typer.Option("--jurisdiction", help="The message's division code, e.g. 310115.")
    ],
    plane: Annotated[
        str, typer.Option("--plane", help="The message's plane: ACTUAL, EXERCISE or TEST.")
    ] = "ACTUAL",
    by: Annotated[str, typer.Option("--by", help="Who took it: a person or a post.")] = "",
    note: Annotated[str, typer.Option("--note", help="A note for the sender.")] = "",
    decline: Annotated[
        str | None, typer.Option("--decline", help="Decline it instead, for this reason.")
    ] = None,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Acknowledge a message your agency received (or decline it with --decline REASON): the
    sender and the command centre see who took it; print the receipt as a JSON line."""
    source, slash, event_id = message.partition("/")
    if not (source and slash and event_id):
        raise fail(f"{message!r}: give the message as SOURCE/EVENT_ID, e.g. weather/W-42", 2)
    if decline == "":
        raise fail("--decline needs a reason", 2)
    (plane_value,) = planes_of([plane], "--plane")
    taken = event_pb2.Event(
        id=event_id, source=source, plane=plane_value, priority=event_pb2.PRIORITY_ROUTINE
    )
    taken.jurisdiction.division_code = jurisdiction
    answer = acknowledgement_of(taken, by=by, note=note, decline_reason=decline)
    connect = client_for(target, token, ca, cert, key)

    async def main() -> gateway_pb2.Receipt:
        async with connect() as client:
            return await client.publish(answer)

    typer.echo(as_json(run_rpc(main)))


PlaneOption = Annotated[
    str, typer.Option("--plane", help="The message's plane: ACTUAL, EXERCISE or TEST.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as one JSON object.")]


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    return f"{stamp.ToDatetime(tzinfo=UTC):%Y-%m-%d %H:%M:%S}Z"


def recipient_line(recipient: gateway_pb2.TrackedRecipient) -> str:
    """One recipient as a person reads it, e.g. "police: declined 2026-08-15 10:02:11Z by desk 2:
    not our area"."""
    status = gateway_pb2.RecipientStatus.Name(recipient.status).removeprefix("RECIPIENT_STATUS_")
    line = f"{recipient.agency}: {status.lower()}"
    if recipient.HasField("answered_at"):
        line += f" {_when(recipient.answered_at)}"
    elif recipient.HasField("delivered_at"):
        line += f" {_when(recipient.delivered_at)}"
    if recipient.answered_by:
        line += f" by {recipient.answered_by}"
    if recipient.reason:
        line += f": {recipient.reason}"
    return line


def deadline_line(deadline: gateway_pb2.TrackedDeadline) -> str:
    """One deadline, e.g. "deadline extreme-warning-acknowledged: due 2026-08-15 10:02:00Z,
    escalated 1 of 2 levels, met 2026-08-15 10:05:00Z"."""
    line = f"deadline {deadline.id}: due {_when(deadline.due)}"
    if deadline.fired_levels:
        line += f", escalated {deadline.fired_levels} of {deadline.levels} levels"
    if deadline.HasField("met_at"):
        line += f", met {_when(deadline.met_at)}"
    return line


def status_lines(message: gateway_pb2.TrackedMessage) -> list[str]:
    """The summary line, then one line per recipient (indented), then the deadlines."""
    lines = [message.summary.text]
    lines += [f"  {recipient_line(recipient)}" for recipient in message.recipients]
    lines += [deadline_line(deadline) for deadline in message.deadlines]
    return lines


def status(
    event_id: Annotated[str, typer.Argument(help="The message's event id.")],
    sender: Annotated[
        str | None,
        typer.Option("--sender", help="The message's publishing agency (default: yours)."),
    ] = None,
    plane: PlaneOption = "ACTUAL",
    json: JsonOption = False,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Show who a message reached, who took or declined it and where its deadlines stand (its
    sender and the command centre only)."""
    (plane_value,) = planes_of([plane], "--plane")
    connect = client_for(target, token, ca, cert, key)

    async def main() -> gateway_pb2.TrackedMessage:
        async with connect() as client:
            return await client.status(event_id, sender=sender, plane=plane_value)

    message = run_rpc(main)
    typer.echo(as_json(message) if json else "\n".join(status_lines(message)))


def pending(
    sender: Annotated[
        str | None,
        typer.Option("--sender", help="Only this agency's messages (the command centre)."),
    ] = None,
    plane: PlaneOption = "ACTUAL",
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: 50).")] = 0,
    json: JsonOption = False,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """List the tracked messages you may see that still wait for an answer, newest first: one
    line each, SENDER/EVENT_ID (TYPE): SUMMARY."""
    (plane_value,) = planes_of([plane], "--plane")
    connect = client_for(target, token, ca, cert, key)

    async def main() -> gateway_pb2.ListPendingResponse:
        async with connect() as client:
            return await client.pending(sender=sender, plane=plane_value, limit=limit)

    page = run_rpc(main)
    if json:
        typer.echo(as_json(page))
        return
    for message in page.messages:
        typer.echo(f"{message.sender}/{message.event_id} ({message.event_type}): "
                   f"{message.summary.text}")  # fmt: skip
    if not page.messages:
        typer.echo("nothing pending")
    if page.truncated:
        typer.echo("… more are pending (raise --limit)")


def register(app: typer.Typer) -> None:
    app.command("ack")(acknowledge)
    app.command("status")(status)
    app.command("pending")(pending)
