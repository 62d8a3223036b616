"""The CAP warning: one aggregate per alert message, keyed "sender,identifier" as CAP
`references` name it. An Update supersedes the messages it references and opens its own; a
Cancel ends them; `expires` ends a message by itself (the machine reads it against `now`).
Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from dutylink.catalogue import EventType
from dutylink.v1 import event_pb2
from gateway.core.workflows.base import AggregateRef, Context, Facts, Rules, plane_token


def warning_key(sender: str, identifier: str) -> str:
    return f"{sender},{identifier}"


def _refs(event: event_pb2.Event, event_type: EventType) -> list[AggregateRef]:
    transition = event_type.transition
    if not event.HasField("warning") or event_type.lifecycle is None or transition is None:
        return []
    warning, plane = event.warning, plane_token(event.plane)
    own = AggregateRef(event_type.lifecycle, plane, warning_key(warning.sender, warning.identifier))
    if "none" in transition.from_states:
        return [own]
    refs = {
        key: AggregateRef(event_type.lifecycle, plane, key)
        for key in (warning_key(r.sender, r.identifier) for r in warning.references)
    }
    opened = [AggregateRef(own.lifecycle, plane, own.key, opens=True)] if transition.opens else []
    return [*refs.values(), *opened]


def _expires(event: event_pb2.Event) -> datetime | None:
    times = [info.expires for info in event.warning.infos if info.HasField("expires")]
    if event.HasField("expires"):
        times.append(event.expires)
    return max((t.ToDatetime(tzinfo=UTC) for t in times), default=None)


def _facts(event: event_pb2.Event, ref: AggregateRef) -> Facts:
    own = warning_key(event.warning.sender, event.warning.identifier)
    return Facts(expires=_expires(event)) if ref.key == own else Facts()


def _check(context: Context) -> str | None:
    sender = context.event.warning.sender
    foreign = not context.ref.key.startswith(f"{sender},")
    if foreign and not context.ref.opens and context.state is not None:
        return f"references a warning of another sender (this message's sender is '{sender}')"
    return None


WARNING = Rules(refs=_refs, facts=_facts, check=_check)
