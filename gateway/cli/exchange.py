"""`dutylink publish`, `dutylink subscribe` and `dutylink emergency`: a department's verbs, over
the SDK, for people and scripts without grpcurl (which no package registry offers).

Events are read and printed in protobuf's JSON form, as in proto/examples; each command takes
the SDK's identities (`--token` on plaintext, or `--ca`/`--cert`/`--key` for mutual TLS).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from dutylink.adapters.sdk.client import ClientCertificate, DutyLinkClient
from dutylink.adapters.sdk.refusals import allowed_transitions, state_refusals, status_of
from dutylink.v1 import event_pb2, gateway_pb2

TargetOption = Annotated[
    str, typer.Option("--target", help="The gateway, HOST:PORT.", show_default=True)
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="Development token of the agency (plaintext).", show_default=False
    ),
]
CaOption = Annotated[
    Path | None, typer.Option("--ca", help="Exchange CA certificate (mutual TLS).", dir_okay=False)
]
CertOption = Annotated[
    Path | None,
    typer.Option("--cert", help="The agency's client certificate (mutual TLS).", dir_okay=False),
]
KeyOption = Annotated[
    Path | None,
    typer.Option("--key", help="The client certificate's private key.", dir_okay=False),
]
DEFAULT_TARGET = "127.0.0.1:50051"
# At most this much JSON is read from a file or standard input (a batch of 1000 large events).
MAX_INPUT_BYTES = 64 * 1024 * 1024

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def client_for(
    target: str, token: str | None, ca: Path | None, cert: Path | None, key: Path | None
) -> Callable[[], DutyLinkClient]:
    """What makes the SDK client for these options (inside the command's event loop, which its
    channel belongs to); exactly one identity, or a one-line error now."""
    files = {"--ca": ca, "--cert": cert, "--key": key}
    given = [flag for flag, path in files.items() if path is not None]
    if token is not None and given:
        raise fail("give --token, or --ca, --cert and --key, not both", 2)
    if token is None and len(given) < 3:
        missing = ", ".join(flag for flag in files if flag not in given)
        raise fail(f"no identity: give --token, or --ca, --cert and --key (missing {missing})", 2)
    if token is not None:
        return lambda: DutyLinkClient(target, token=token)
    try:
        certificate = ClientCertificate.from_files(ca, cert, key)  # type: ignore[arg-type]
    except OSError as error:
        raise fail(f"{error.filename}: {error.strerror}", 2) from None
    return lambda: DutyLinkClient(target, certificate=certificate)


def describe_rpc_error(error: grpc.aio.AioRpcError) -> str:
    """One line: the status code, its message and, for invalid input, every field violation."""
    text = f"{error.code().name}: {error.details()}"
    status = status_of(error)
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields = "; ".join(f"{v.field}: {v.description}" for v in bad_request.field_violations)
            text += f" ({fields})"
    return text


def state_refusal_lines(refusals: Sequence[gateway_pb2.StateRefusal]) -> list[str]:
    """A person's reading of the aggregates that refused an event: per aggregate its state and
    version, then why and what it allows instead (indented under it)."""
    lines = []
    for refusal in refusals:
        lines.append(f"{refusal.aggregate}: '{refusal.state}' (version {refusal.version})")
        lines.append(f"  why: {refusal.reason}")
        if allowed := allowed_transitions(refusal):
            lines.append(f"  allowed from there: {', '.join(allowed)}")
    return lines


def as_json(message: Message) -> str:
    return json.dumps(
        json_format.MessageToDict(message, preserving_proto_field_name=False),
        ensure_ascii=False,
        separators=(",", ":"),
    )


def read_events(source: str) -> list[event_pb2.Event]:
    """The events of a JSON file ("-": standard input): a PublishRequest (`{"event": …}`), a
    PublishBatchRequest (`{"events": […]}`), one Event, or an array of Events. Errors name the
    file and, for bad JSON, the line."""
    name = "<stdin>" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with Path(source).open("rb") as stream:
                data = stream.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise fail(f"{name}: {error.strerror}", 2) from None
    if len(data) > MAX_INPUT_BYTES:
        raise fail(f"{name}: larger than {MAX_INPUT_BYTES} bytes", 2)
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        raise fail(f"{name}: not UTF-8 text", 2) from None
    except json.JSONDecodeError as error:
        raise fail(f"{name}:{error.lineno}: {error.msg}", 2) from None
    if isinstance(document, dict) and "events" in document:
        items, where = document["events"], "events"
    elif isinstance(document, dict) and "event" in document:
        items, where = [document["event"]], "event"
    elif isinstance(document, list):
        items, where = document, ""
    else:
        items, where = [document], ""
    if not isinstance(items, list):
        raise fail(f"{name}: 'events' must be an array", 2)
    events = []
    for index, item in enumerate(items):
        event = event_pb2.Event()
        try:
            json_format.ParseDict(item, event)
        except json_format.ParseError as error:
            place = f"{where}[{index}]" if where == "events" or len(items) > 1 else "event"
            raise fail(f"{name}: {place}: {error}", 2) from None
        events.append(event)
    return events


def run_rpc(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as error:
        raise fail(describe_rpc_error(error)) from None


def publish(
    source: Annotated[str, typer.Argument(help="JSON file of one event or many; - for stdin.")],
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Publish events; print one receipt (or refusal) per event as a JSON line. Exit 1 if any
    was refused."""
    events = read_events(source)
    connect = client_for(target, token, ca, cert, key)

    async def main() -> list[gateway_pb2.PublishResult]:
        async with connect() as client:
            if len(events) == 1:
                try:
                    receipt = await client.publish(events[0])
                except grpc.aio.AioRpcError as error:
                    failed = gateway_pb2.PublishError(
                        code=error.code().value[0],
                        message=describe_rpc_error(error),
                        state_refusals=state_refusals(error),
                    )
                    return [gateway_pb2.PublishResult(event_id=events[0].id, error=failed)]
                return [gateway_pb2.PublishResult(event_id=events[0].id, receipt=receipt)]
            return await client.publish_batch(events)

    results = run_rpc(main)
    for result in results:
        typer.echo(as_json(result))
    # Standard output stays JSON lines; a person reads the state refusals on standard error.
    for index, result in enumerate(results):
        refused = state_refusals(result)
        if refused:
            typer.echo(f"event {index} ({result.event_id}) refused by the state of:", err=True)
            for line in state_refusal_lines(refused):
                typer.echo(f"  {line}", err=True)
    if any(result.HasField("error") for result in results):
        raise typer.Exit(1)


def planes_of(names: list[str], flag: str = "--planes") -> list[event_pb2.Plane.ValueType]:
    planes = []
    for name in names:
        try:
            planes.append(event_pb2.Plane.Value(f"PLANE_{name.upper()}"))
        except ValueError:
            raise fail(f"{flag}: unknown plane {name!r} (expected ACTUAL, EXERCISE or TEST)", 2) from None  # fmt: skip
    return planes


def subscribe(
    name: Annotated[str, typer.Argument(help="The subscription's name, e.g. dispatch.")],
    families: Annotated[
        list[str] | None, typer.Option("--families", help="incident, resource, warning.")
    ] = None,
    types: Annotated[
        list[str] | None, typer.Option("--types", help="Exact types, e.g. warning.alert.")
    ] = None,
    planes: Annotated[
        list[str] | None, typer.Option("--planes", help="ACTUAL (default), EXERCISE, TEST.")
    ] = None,
    jurisdictions: Annotated[
        list[str] | None, typer.Option("--jurisdictions", help="Division code prefixes, e.g. 31.")
    ] = None,
    ack: Annotated[bool, typer.Option("--ack", help="Acknowledge each one printed.")] = False,
    count: Annotated[int, typer.Option("--count", help="Stop after this many (0: never).")] = 0,
    idle: Annotated[
        float, typer.Option("--idle", help="Stop after this many seconds without one (0: never).")
    ] = 0.0,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Open (or resume) a durable subscription and print each delivery as a JSON line.
    Without --ack nothing is acknowledged: the deliveries come again next time."""
    chosen_planes = planes_of(planes or [])
    connect = client_for(target, token, ca, cert, key)

    async def main() -> None:
        printed = 0
        async with (
            connect() as client,
            client.subscribe(
                name,
                families=families or (),
                types=types or (),
                planes=chosen_planes,
                jurisdiction_prefixes=jurisdictions or (),
                confirm_acks=ack,
            ) as subscription,
        ):
            ready = subscription.ready or gateway_pb2.SubscriptionReady()
            # On stderr, so standard output stays JSON lines; a script may wait for this line.
            typer.echo(f"subscribed: {ready.name} ({ready.pending} pending)", err=True)
            while not count or printed < count:
                try:
                    delivery = await subscription.next(timeout=idle or None)
                except TimeoutError:
                    return  # --idle seconds without a delivery
                if delivery is None:
                    return
                typer.echo(as_json(delivery))
                printed += 1
                if ack:
                    await subscription.ack(delivery)

    run_rpc(main)


emergency_app = typer.Typer(
    help="Break-glass elevations: declare one (command centre), list them for review.",
    no_args_is_help=True,
)


@emergency_app.command("declare")
def declare(
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded; no personal data).")],
    hours: Annotated[float, typer.Option("--hours", help="How long it lasts.")],
    incident: Annotated[str, typer.Option("--incident", help="The incident it covers.")] = "",
    jurisdiction: Annotated[
        str, typer.Option("--jurisdiction", help="Or an area: division code prefix.")
    ] = "",
    agencies: Annotated[
        list[str] | None, typer.Option("--agency", help="An agency that gains access (repeat).")
    ] = None,
    fields: Annotated[
        list[str] | None, typer.Option("--field", help="A field no longer withheld (repeat).")
    ] = None,
    receive_types: Annotated[
        list[str] | None, typer.Option("--receive-type", help="A type newly received (repeat).")
    ] = None,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Declare a time-boxed emergency elevation; print the recorded grant as JSON."""
    request = gateway_pb2.DeclareEmergencyRequest(
        incident_id=incident,
        jurisdiction_prefix=jurisdiction,
        agencies=agencies or [],
        fields=fields or [],
        receive_types=receive_types or [],
        reason=reason,
    )
    request.duration.FromTimedelta(timedelta(hours=hours))
    connect = client_for(target, token, ca, cert, key)

    async def main() -> gateway_pb2.EmergencyGrant:
        async with connect() as client:
            return await client.declare_emergency(request)

    typer.echo(as_json(run_rpc(main)))


@emergency_app.command("list")
def list_grants(
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Every declaration, active and expired, newest first: one JSON line each."""
    connect = client_for(target, token, ca, cert, key)

    async def main() -> list[gateway_pb2.EmergencyGrant]:
        async with connect() as client:
            return await client.list_emergencies()

    for grant in run_rpc(main):
        typer.echo(as_json(grant))


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("subscribe")(subscribe)
    app.add_typer(emergency_app, name="emergency")


__all__ = [
    "DEFAULT_TARGET",
    "as_json",
    "client_for",
    "describe_rpc_error",
    "fail",
    "planes_of",
    "read_events",
    "register",
    "run_rpc",
    "state_refusal_lines",
]
