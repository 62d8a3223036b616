"""The EDXL adapter: EDXL-RM resource messages (bare, or wrapped in EDXL-DE envelopes with CAP
alerts) in from a drop directory; resource messages out as EDXL-RM XML files, and resource
messages and CAP alerts out in EDXL-DE envelopes.

Long because it carries two standards' containers both ways: bare EDXL-RM messages and EDXL-DE
envelopes holding CAP and RM content, with the envelope's metadata kept on the way in and rebuilt
(or derived) on the way out, and the options of each outbound side checked.

    [options]
    system = "em-sh"                  # prefix of event ids: "<system>:<MessageID>"
    division_code = "310115"          # jurisdiction when a message names none
    default_utc_offset = "+08:00"     # zone of EDXL-RM dateTimes written without an offset
    classification = "INTERNAL"       # of resource events (CAP alerts: from their scope)

    [options.inbound]
    directory = "drop/edxl"           # *.xml: one EDXL-RM message or EDXL-DE envelope each
    poll_seconds = 1

    [[options.outbound]]              # one table, or several: each is one outbound side
    subscription = "rm-out"           # a durable subscription name, one per side
    directory = "outbox/edxl"         # one file per event
    envelope = "none"                 # "none": bare EDXL-RM; "de": EDXL-DE 1.0 envelopes
    types = []                        # e.g. ["resource.request"]; default every type
    families = ["resource"]           # "de" default: ["resource", "warning"]
    forward_original = false          # "de": embed the CAP bytes as received (signatures)

Event types by EDXL-RM message type are in `RM_EVENT_TYPES` (e.g. RequestResource →
"resource.request"). An EDXL-DE envelope is unwrapped and each CAP or RM content object becomes
its event, carrying the envelope's metadata in `Event.distribution`; a content object that
cannot be used (invalid CAP or RM, non-XML, another standard) is kept in rejected/ on its own
while the others are published (see adapters/edxl/README.md, "EDXL-DE in the adapter").

Outbound with `envelope = "de"`, each event becomes one envelope: rebuilt from its kept
`distribution` (same distributionID, sender, status, type, roles, keywords, addresses, target
areas and content metadata) when it came in one, else derived from the event (`envelope_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from dutylink.adapters.edxl.mapping import (
    de_outbound_mapping,
    inbound_mapping,
    outbound_mapping,
    utc_offset_minutes,
)
from dutylink.adapters.framework import AdapterKind, AdapterPlan, Outbound, Subscription
from dutylink.adapters.options import (
    OPTIONS,
    AdapterConfigError,
    Expect,
    FilePath,
    Flag,
    Names,
    Positive,
    Table,
    Text,
    read,
)
from dutylink.adapters.transports import DirectorySink, DirectorySource, split_whole

# --- the adapter ---------------------------------------------------------------------------------

_FAMILIES = {"none": ("resource",), "de": ("resource", "warning")}


def _offset(value: str) -> str:
    utc_offset_minutes(value)  # refuses what is not an offset
    return value


@dataclass(frozen=True, config=OPTIONS)
class EdxlOptions:
    """How EDXL-RM messages and EDXL-DE envelopes become events."""

    system: Text = "edxl"
    """Prefix of event ids: "<system>:<MessageID>"."""
    division_code: str = ""
    """Jurisdiction (GB/T 2260) when a message names none."""
    classification: Literal["PUBLIC", "INTERNAL", "RESTRICTED", "CONFIDENTIAL"] = "INTERNAL"
    """Of resource events (CAP alerts: from their scope)."""
    default_utc_offset: Annotated[str, AfterValidator(_offset)] = "Z"
    """Zone of EDXL-RM dateTimes written without an offset, e.g. "+08:00"."""
    inbound: Table = Field(default_factory=dict)
    """[options.inbound]: the drop directory."""
    outbound: Annotated[
        dict[str, Any] | list[dict[str, Any]], Expect("a table or an array of tables")
    ] = Field(default_factory=list)
    """[[options.outbound]]: one table, or several: each is one outbound side."""


@dataclass(frozen=True, config=OPTIONS)
class EdxlInbound:
    """Messages and envelopes in from a drop directory."""

    directory: FilePath | None = None
    """*.xml: one EDXL-RM message or EDXL-DE envelope each."""
    poll_seconds: Positive = 1.0
    """How often the directory is looked at."""


@dataclass(frozen=True, config=OPTIONS)
class EdxlOutbound:
    """One outbound side: EDXL-RM files, or EDXL-DE envelopes."""

    directory: FilePath
    """One file per event."""
    envelope: Literal["none", "de"] = "none"
    """"none": bare EDXL-RM; "de": EDXL-DE 1.0 envelopes around CAP and RM."""
    subscription: Text | None = None
    """A durable subscription name, one per side (default "rm-out", or "de-out")."""
    types: Names = ()
    """e.g. ["resource.request"]; empty: every type."""
    families: Names | None = None
    """Default ["resource"]; with envelope "de": ["resource", "warning"]."""
    forward_original: Flag = False
    """With envelope "de": embed the CAP bytes as received (they keep a signature valid)."""


def _outbound_side(values: Any, where: str) -> Outbound:
    side = read(EdxlOutbound, values, where)
    allowed = _FAMILIES[side.envelope]
    families = side.families if side.families is not None else allowed
    if not families or not set(families) <= set(allowed):
        raise AdapterConfigError(f"{where}: families: some of {list(allowed)} with envelope = {side.envelope!r} (bare CAP is the cap adapter's)")  # fmt: skip
    de = side.envelope == "de"
    return Outbound(
        Subscription(
            side.subscription or ("de-out" if de else "rm-out"),
            families=families,
            types=side.types,
        ),
        de_outbound_mapping(side.forward_original) if de else outbound_mapping(),
        DirectorySink(side.directory),
    )


def build(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = read(EdxlOptions, values)
    inbound = read(EdxlInbound, options.inbound, "[options.inbound]")
    outbound = options.outbound
    sides = [outbound] if isinstance(outbound, dict) else outbound
    plan = AdapterPlan(
        inbound=inbound_mapping(
            options.system,
            options.division_code,
            options.classification,
            options.default_utc_offset,
        )
    )
    if inbound.directory is not None:
        plan.sources.append(
            DirectorySource(
                inbound.directory, state_dir / "drop", ["*.xml"],
                split_whole("application/xml"), poll_seconds=inbound.poll_seconds,
            )
        )  # fmt: skip
    where = "[options.outbound]" if isinstance(outbound, dict) else "[[options.outbound]]"
    plan.outbound += [
        _outbound_side(side, where if len(sides) == 1 else f"{where} #{i + 1}")
        for i, side in enumerate(sides)
    ]
    names = [side.subscription.name for side in plan.outbound]
    if len(set(names)) != len(names):
        raise AdapterConfigError(f"{where}: each side needs its own subscription name, got {names}")  # fmt: skip
    return plan


KIND = AdapterKind(
    name="edxl",
    description="EDXL-RM 1.0 resource messages and EDXL-DE 1.0 envelopes (with CAP) in; "
    "EDXL-RM out, and EDXL-DE envelopes around CAP and RM out",
    build=build,
    tables=(
        ("options", EdxlOptions),
        ("options.inbound", EdxlInbound),
        ("[options.outbound]", EdxlOutbound),
    ),
)
