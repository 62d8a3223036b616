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
from typing import Any

from adapters.edxl.mapping import de_outbound_mapping, inbound_mapping, outbound_mapping
from adapters.framework import AdapterKind, AdapterPlan, Outbound, Subscription
from adapters.options import AdapterConfigError, Options
from adapters.transports import DirectorySink, DirectorySource, split_whole

# --- the adapter ---------------------------------------------------------------------------------

_OUTBOUND_KEYS = {"subscription", "directory", "envelope", "types", "families", "forward_original"}  # fmt: skip
_FAMILIES = {"none": ("resource",), "de": ("resource", "warning")}


def _outbound_side(values: Any, where: str) -> Outbound:
    if not isinstance(values, Mapping):
        raise AdapterConfigError(f"{where}: must be a table")
    table = Options(values, where)
    table.check_keys(_OUTBOUND_KEYS)
    directory = table.path("directory")
    envelope = table.get("envelope", "none")
    if envelope not in _FAMILIES:
        raise AdapterConfigError(f"{where}: envelope: 'none' (bare EDXL-RM) or 'de' (EDXL-DE), not {envelope!r}")  # fmt: skip
    families = tuple(table.get("families", _FAMILIES[envelope]))
    if not families or not set(families) <= set(_FAMILIES[envelope]):
        raise AdapterConfigError(f"{where}: families: some of {list(_FAMILIES[envelope])} with envelope = {envelope!r} (bare CAP is the cap adapter's)")  # fmt: skip
    forward = table.flag("forward_original")
    mapping = de_outbound_mapping(forward) if envelope == "de" else outbound_mapping()
    return Outbound(
        Subscription(
            str(table.get("subscription", "de-out" if envelope == "de" else "rm-out")),
            families=families,
            types=tuple(table.get("types", ())),
        ),
        mapping,
        DirectorySink(directory),
    )


def build(options: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    system = str(options.get("system", "edxl"))
    inbound = dict(options.get("inbound", {}))
    outbound = options.get("outbound", [])
    sides = [outbound] if isinstance(outbound, Mapping) else list(outbound)
    plan = AdapterPlan(
        inbound=inbound_mapping(
            system,
            str(options.get("division_code", "")),
            str(options.get("classification", "INTERNAL")),
            str(options.get("default_utc_offset", "Z")),
        )
    )
    if directory := inbound.get("directory"):
        plan.sources.append(
            DirectorySource(
                Path(str(directory)), state_dir / "drop", ["*.xml"],
                split_whole("application/xml"), poll_seconds=float(inbound.get("poll_seconds", 1.0)),
            )
        )  # fmt: skip
    where = "[options.outbound]" if isinstance(outbound, Mapping) else "[[options.outbound]]"
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
)
