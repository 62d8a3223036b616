"""The dispatch-feed adapters: the police 110 CAD (`cad-110`) and the fire & ambulance 119/120
dispatch system (`dispatch-119-120`). Feeds arrive as files in a drop directory
(dutylink.adapters.transports.DirectorySource); what each centre needs comes back as JSON files in an
outbox. Feed shapes and mappings: adapters/dispatch/README.md.

    [options]                          # cad-110
    system = "cad110"                  # prefix of event ids
    agency = "police"                  # the centre's agency id (listed in involved_agencies)
    plane = "ACTUAL"                   # or EXERCISE, TEST (drills)
    [options.inbound]
    directory = "drop/cad110"          # *.jsonl; poll_seconds, batch_size, patterns
    [options.outbound]
    subscription = "cad110-desk"
    directory = "outbox/cad110"
    incident_sources = ["fire", "health"]   # whose incidents; warnings always

    [options]                          # dispatch-119-120
    system = "dispatch119"
    agency = "fire"                    # the agency it publishes as (resource contacts)
    fire_agency = "fire"               # owner of engines, ladders, hazmat, rescue, command
    ems_agency = "health"              # owner of ambulances
    plane = "ACTUAL"
    deployment_reports = false         # unit rows also as resource.status_report
    [options.inbound]
    directory = "drop/dispatch119"     # *.csv
    [options.outbound]
    subscription = "dispatch119-desk"
    directory = "outbox/dispatch119"
    incident_sources = ["police"]      # whose incidents (with a hazard); resource messages
                                       # addressed to fire_agency or ems_agency always
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass as plain_dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from dutylink.adapters.dispatch.cad110 import Cad110Settings, cad110_events, cad110_outbound
from dutylink.adapters.dispatch.dispatch119 import (
    Dispatch119Settings,
    dispatch119_events,
    dispatch119_outbound,
)
from dutylink.adapters.filedrop.adapter import DropInbound, drop_source, split_utf8_json_lines
from dutylink.adapters.framework import AdapterKind, AdapterPlan, Outbound, Subscription
from dutylink.adapters.options import (
    OPTIONS,
    AdapterConfigError,
    FilePath,
    Flag,
    Names,
    Table,
    Text,
    read,
)
from dutylink.adapters.records import InboundMapping, OutboundMapping
from dutylink.adapters.transports import DirectorySink, Splitter, split_csv
from dutylink.v1 import event_pb2

_PLANES = {
    "ACTUAL": event_pb2.PLANE_ACTUAL,
    "EXERCISE": event_pb2.PLANE_EXERCISE,
    "TEST": event_pb2.PLANE_TEST,
}


Plane = Literal["ACTUAL", "EXERCISE", "TEST"]


@dataclass(frozen=True, config=OPTIONS)
class Cad110Options:
    """The police 110 CAD feed (cad-110)."""

    system: Text = "cad110"
    """Prefix of event ids."""
    agency: Text = "police"
    """The centre's agency id (listed in involved_agencies)."""
    plane: Plane = "ACTUAL"
    """EXERCISE or TEST for drills."""
    inbound: Table = Field(default_factory=dict)
    """[options.inbound]: the feed's drop directory (*.jsonl)."""
    outbound: Table = Field(default_factory=dict)
    """[options.outbound]: what the centre needs, as JSON files."""


@dataclass(frozen=True, config=OPTIONS)
class Dispatch119Options:
    """The fire & ambulance 119/120 dispatch feed (dispatch-119-120)."""

    system: Text = "dispatch119"
    """Prefix of event ids."""
    agency: Text = "fire"
    """The agency it publishes as (resource contacts)."""
    fire_agency: Text = "fire"
    """Owner of engines, ladders, hazmat, rescue and command units."""
    ems_agency: Text = "health"
    """Owner of ambulances."""
    plane: Plane = "ACTUAL"
    """EXERCISE or TEST for drills."""
    deployment_reports: Flag = False
    """Unit rows also as resource.status_report (see adapters/dispatch/README.md)."""
    inbound: Table = Field(default_factory=dict)
    """[options.inbound]: the feed's drop directory (*.csv)."""
    outbound: Table = Field(default_factory=dict)
    """[options.outbound]: what the centre needs, as JSON files."""


@dataclass(frozen=True, config=OPTIONS)
class DispatchOutbound:
    """What the centre needs back, as JSON files."""

    directory: FilePath
    """The outbox: one JSON file per event."""
    subscription: Text | None = None
    """The durable subscription's name (default: cad110-desk, dispatch119-desk)."""
    incident_sources: Names = ()
    """Whose incidents (default: fire and health for 110, police for 119/120)."""
    jurisdictions: Names = ()
    """Division-code prefixes; empty: all."""


@plain_dataclass(frozen=True)
class _Centre:
    """What differs between the two dispatch adapters' plans."""

    inbound_mapping: InboundMapping
    patterns: tuple[str, ...]
    split: Splitter
    outbound_mapping: Callable[[tuple[str, ...]], OutboundMapping]
    incident_sources: tuple[str, ...]
    families: tuple[str, ...]
    subscription: str


def _plan(inbound: dict[str, Any], outbound: dict[str, Any], state_dir: Path, centre: _Centre) -> AdapterPlan:  # fmt: skip
    if not inbound and not outbound:
        raise AdapterConfigError("[options] give [options.inbound], [options.outbound] or both")
    plan = AdapterPlan(inbound=centre.inbound_mapping)
    if inbound:
        drop = read(DropInbound, inbound, "[options.inbound]")
        plan.sources.append(drop_source(drop, state_dir, centre.patterns, centre.split))
    if outbound:
        side = read(DispatchOutbound, outbound, "[options.outbound]")
        plan.outbound.append(
            Outbound(
                Subscription(
                    side.subscription or centre.subscription,
                    families=centre.families,
                    jurisdiction_prefixes=side.jurisdictions,
                ),
                centre.outbound_mapping(side.incident_sources or centre.incident_sources),
                DirectorySink(side.directory),
            )
        )
    return plan


def build_cad110(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = read(Cad110Options, values)
    settings = Cad110Settings(options.system, options.agency, _PLANES[options.plane])
    centre = _Centre(
        partial(cad110_events, settings=settings),
        ("*.jsonl",),
        split_utf8_json_lines,
        lambda sources: partial(cad110_outbound, incident_sources=sources),
        ("fire", "health"),
        ("incident", "warning"),
        "cad110-desk",
    )
    return _plan(options.inbound, options.outbound, state_dir, centre)


def build_dispatch119(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = read(Dispatch119Options, values)
    settings = Dispatch119Settings(
        system=options.system,
        agency=options.agency,
        fire_agency=options.fire_agency,
        ems_agency=options.ems_agency,
        plane=_PLANES[options.plane],
        deployment_reports=options.deployment_reports,
    )
    own = (settings.fire_agency, settings.ems_agency)
    centre = _Centre(
        partial(dispatch119_events, settings=settings),
        ("*.csv",),
        split_csv,
        lambda sources: partial(
            dispatch119_outbound, centre_agencies=own, incident_sources=sources
        ),
        ("police",),
        ("incident", "resource"),
        "dispatch119-desk",
    )
    return _plan(options.inbound, options.outbound, state_dir, centre)


CAD110 = AdapterKind(
    name="cad-110",
    description="Police 110 CAD: JSON Lines incident records in; fire/ambulance incidents and warnings out as JSON files",
    build=build_cad110,
    tables=(
        ("options", Cad110Options),
        ("options.inbound", DropInbound),
        ("options.outbound", DispatchOutbound),
    ),
)
DISPATCH119 = AdapterKind(
    name="dispatch-119-120",
    description="Fire & ambulance 119/120 dispatch: CSV unit log in; hazardous police incidents and resource requests out as JSON files",
    build=build_dispatch119,
    tables=(
        ("options", Dispatch119Options),
        ("options.inbound", DropInbound),
        ("options.outbound", DispatchOutbound),
    ),
)
