"""`dutylink demo`: the linked-duty scenario (gateway.cli.demo_scenario) played by simulated
agencies through a real gateway.

Every agency receives what its subscription selects and acks it. The double booking of the
script is refused by a gateway that enforces the lifecycles and the resource ledger
(FAILED_PRECONDITION, whose message the demo prints as the expected outcome); a gateway that
does not yet stores it, and the demo says enforcement is off. A retried publish and an invalid
event show the gateway's idempotency and field-level errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import grpc
from google.rpc import error_details_pb2
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dutylink.adapters.sdk.client import NO_RETRY, DutyLinkClient, Subscription
from dutylink.adapters.sdk.refusals import state_refusals, status_of
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.cli.demo_scenario import Step as Step
from gateway.cli.demo_scenario import scenario as scenario
from gateway.cli.demo_scenario import script
from gateway.cli.exchange import state_refusal_lines
from gateway.config import sample_tokens

# The agencies playing the scenario, with their sample development tokens.
PLAYERS = ("fire", "police", "health", "emergency", "transport", "ecology", "weather", "command")
# What each simulated agency's duty system subscribes to.
# How long the command centre waits for the tracker to count the assignment's answers.
STATUS_TIMEOUT = 10.0
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "police": ("incident", "warning"),
    "fire": ("resource", "warning"),
    "health": ("incident", "resource"),
    "emergency": ("incident", "resource", "warning"),
    "transport": ("incident", "warning"),
    "ecology": ("incident",),
}
STYLE = {"fire": "red", "police": "blue", "health": "green", "emergency": "magenta",
         "transport": "yellow", "ecology": "cyan", "weather": "bright_white",
         "command": "bold bright_red"}  # fmt: skip
DELIVERY_TIMEOUT = 30.0  # seconds for every subscriber to receive its share


class Publisher(Protocol):
    """What the demo needs of a client to publish a step."""

    async def publish(self, event: event_pb2.Event) -> gateway_pb2.Receipt: ...


@dataclass
class DemoReport:
    sent: Counter[str] = field(default_factory=Counter)  # events stored, by publisher
    received: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected_fields: list[str] = field(default_factory=list)
    withheld: dict[str, set[str]] = field(default_factory=dict)
    # The steps refused by design (the double booking): the gateway's message when it refused
    # one, the narration when it stored it (a gateway without lifecycle enforcement).
    refused: list[str] = field(default_factory=list)
    unenforced: list[str] = field(default_factory=list)
    # Who took the assignment, as the command centre sees it ("" without lifecycles).
    assignment_status: str = ""


def expected_deliveries(stored: Sequence[Step]) -> dict[str, int]:
    """What each subscriber receives of the stored steps: other agencies' events of its families."""
    return {
        agency: sum(
            1 for s in stored if s.agency != agency and s.event.WhichOneof("payload") in families
        )
        for agency, families in SUBSCRIPTIONS.items()
    }


def _tag(agency: str) -> str:
    return f"[bold {STYLE.get(agency, 'white')}]{agency:>9}[/]"


async def _receive(
    agency: str,
    subscription: Subscription,
    report: DemoReport,
    console: Console,
    arrived: asyncio.Condition,
) -> None:
    """Ack every delivery; count and show those from other agencies."""
    while (delivery := await subscription.next()) is not None:
        await subscription.ack(delivery)
        event = delivery.event
        if event.source == agency:
            continue
        report.withheld.setdefault(agency, set()).update(delivery.withheld_fields)
        withheld = (
            f" [yellow]withheld by policy: {', '.join(delivery.withheld_fields)}[/]"
            if delivery.withheld_fields
            else ""
        )
        console.print(
            f"          {_tag(agency)} [dim]◀ {event.type:<24} from {event.source} (seq {delivery.stream_sequence})[/]{withheld}"
        )
        async with arrived:
            report.received[agency] += 1
            arrived.notify_all()
    raise RuntimeError(f"{agency}'s subscription ended before it received its share")


async def _all_arrived(
    expected: dict[str, int], report: DemoReport, arrived: asyncio.Condition
) -> None:
    async with arrived:
        await arrived.wait_for(
            lambda: all(report.received[agency] >= n for agency, n in expected.items())
        )


async def publish_step(step: Step, client: Publisher, report: DemoReport, console: Console) -> bool:
    """Publish one step and show the outcome; whether the gateway stored it. Only the step
    refused by design may be refused, and only as an illegal transition (FAILED_PRECONDITION);
    any other refusal ends the demo with its error."""
    tag, kind = _tag(step.agency), step.event.type
    try:
        receipt = await client.publish(step.event)
    except grpc.aio.AioRpcError as error:
        refused = error.code() == grpc.StatusCode.FAILED_PRECONDITION
        if not (step.refused_by_design and refused):
            raise
        report.refused.append(error.details() or "")
        console.print(f"{tag} ✗ [bold]{kind:<24}[/] {step.narration}")
        refusals = state_refusals(error)
        if not refusals:  # a gateway that says only why, not which state
            console.print(
                f"            [green]refused, as it must be[/]: {error.code().name}: {escape(error.details() or '')}"
            )
            return False
        console.print(f"            [green]refused, as it must be[/]: {error.code().name}, by")
        for line in state_refusal_lines(refusals):
            console.print(f"              {escape(line)}")
        return False
    report.sent[step.agency] += 1
    console.print(
        f"{tag} ▶ [bold]{kind:<24}[/] {step.narration}  [dim](seq {receipt.stream_sequence})[/]"
    )
    if step.refused_by_design:
        report.unenforced.append(step.narration)
        console.print(
            "            [yellow]stored: this gateway does not enforce the lifecycles and the"
            " resource ledger (enforcement is off), so the double booking went through[/]"
        )
    return True


async def run_demo(
    address: str,
    console: Console,
    *,
    pause: float = 0.4,
    clock: Callable[[], datetime] | None = None,
) -> DemoReport:
    """Play the scenario against the gateway at `address`; returns what was sent and received."""
    now = (clock or (lambda: datetime.now(UTC)))()
    steps = script(now)
    report = DemoReport()
    tokens = sample_tokens()
    clients = {agency: DutyLinkClient(address, token=tokens[agency]) for agency in PLAYERS}
    # The double booking comes from another connection of the same agency (a second duty
    # desk), without retries: a refusal is the answer, not a reason to try again.
    second_desk = DutyLinkClient(address, token=tokens["emergency"], retry=NO_RETRY)
    subscriptions: dict[str, Subscription] = {}
    receivers: list[asyncio.Task[None]] = []
    arrived = asyncio.Condition()
    try:
        for agency, families in SUBSCRIPTIONS.items():
            subscription = clients[agency].subscribe(f"demo-{uuid.uuid4().hex[:8]}", families=families,
                                                     planes=[event_pb2.PLANE_EXERCISE])  # fmt: skip
            await subscription.open()
            subscriptions[agency] = subscription
        console.rule("[bold]DutyLink demo: fire at a chemical park (EXERCISE plane)")
        console.print(
            "Subscriptions: " + "; ".join(f"{a} ← {', '.join(f)}" for a, f in SUBSCRIPTIONS.items())
        )
        receivers = [
            asyncio.create_task(_receive(agency, subscription, report, console, arrived))
            for agency, subscription in subscriptions.items()
        ]
        stored: list[Step] = []
        for step in steps:
            client = second_desk if step.refused_by_design else clients[step.agency]
            if await publish_step(step, client, report, console):
                stored.append(step)
            await asyncio.sleep(pause)
        retry = await clients["fire"].publish(steps[0].event)
        report.duplicates += int(retry.duplicate)
        console.print(
            f"{_tag('fire')} ↻ retries its first report after a timeout: stored once, receipt says duplicate={retry.duplicate}"
        )
        await _publish_malformed(clients["transport"], steps[0].event, report, console)
        waiting = asyncio.create_task(_all_arrived(expected_deliveries(stored), report, arrived))
        done, _ = await asyncio.wait(
            {waiting, *receivers}, timeout=DELIVERY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        waiting.cancel()
        for task in done - {waiting}:
            task.result()  # a subscription failed: its error
        if waiting not in done:
            raise TimeoutError(f"not every agency received its share within {DELIVERY_TIMEOUT} s")
        report.assignment_status = await _assignment_status(clients["command"], steps, console)
    finally:
        for task in receivers:
            task.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)
        for subscription in subscriptions.values():
            await subscription.close()
        for client in (*clients.values(), second_desk):
            await client.close()
    _summary(steps, report, console)
    return report


async def _assignment_status(
    command: DutyLinkClient, steps: Sequence[Step], console: Console
) -> str:
    """The command centre asks who took its assignment, once the tracker has counted the
    acknowledgements the script sent (or STATUS_TIMEOUT passed); "" if the gateway tracks none."""
    assigned = next(s.event for s in steps if s.event.type == "incident.assigned")
    answers = sum(1 for s in steps if s.event.type.startswith("acknowledgement."))
    try:
        async with asyncio.timeout(STATUS_TIMEOUT):
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):  # not tracked yet
                    tracked = await command.status(assigned.id, plane=assigned.plane)
                    summary = tracked.summary
                    if summary.acknowledged + summary.declined >= answers:
                        break
                await asyncio.sleep(0.2)
    except TimeoutError:
        console.print(f"{_tag('command')} ? the assignment's status did not come: is tracking on?")
        return ""
    console.print(f"{_tag('command')} ? asks who took the assignment: {escape(summary.text)}")
    return summary.text


async def _publish_malformed(
    client: DutyLinkClient, like: event_pb2.Event, report: DemoReport, console: Console
) -> None:
    """A warning with no content and a 5-digit division code: refused field by field."""
    broken = event_pb2.Event(
        id=str(uuid.uuid4()), type="warning.alert", subject=like.subject, plane=like.plane,
        classification=event_pb2.CLASSIFICATION_PUBLIC, priority=event_pb2.PRIORITY_URGENT,
    )  # fmt: skip
    broken.time.CopyFrom(like.time)
    broken.warning.identifier = "no-area"
    broken.jurisdiction.division_code = "31011"
    try:
        await client.publish(broken)
    except grpc.aio.AioRpcError as error:
        status = status_of(error)
        for detail in status.details if status else ():
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            report.rejected_fields.extend(v.field for v in bad.field_violations)
        console.print(
            f"{_tag('transport')} ✗ sends a malformed warning: {error.code().name}, fields: {', '.join(sorted(set(report.rejected_fields)))}"
        )


def _summary(steps: Sequence[Step], report: DemoReport, console: Console) -> None:
    table = Table(title="Exchange summary")
    table.add_column("agency")
    table.add_column("sent", justify="right")
    table.add_column("received (acked)", justify="right")
    for agency in PLAYERS:
        table.add_row(agency, str(report.sent[agency]), str(report.received[agency]))
    console.print(table)
    loop = " → ".join(
        s.event.type.removeprefix("incident.") for s in steps if s.event.HasField("incident")
    )
    console.print(f"Incident {steps[0].event.incident.incident_id}: {loop}")
    if report.refused:
        console.print(f"Double booking refused: {escape(report.refused[0])}")
    elif report.unenforced:
        console.print(
            "[yellow]Double booking stored: lifecycle enforcement is off on this gateway[/]"
        )
