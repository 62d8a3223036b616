"""The duty verbs of a receiving agency's people: `dutylink ack` takes a message (or declines
it with a reason) so that the sender and the command centre know a person has it."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.sdk.acknowledgements import acknowledgement_of
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


def register(app: typer.Typer) -> None:
    app.command("ack")(acknowledge)
