"""The dispatch-feed adapters: the police 110 CAD (`cad-110`) and the fire & ambulance 119/120
dispatch system (`dispatch-119-120`). Feeds arrive as files in a drop directory
(adapters.transports.DirectorySource); what each centre needs comes back as JSON files in an
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

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from adapters.dispatch.cad110 import Cad110Settings, cad110_events, cad110_outbound
from adapters.dispatch.dispatch119 import (
    Dispatch119Settings,
    dispatch119_events,
    dispatch119_outbound,
)
from adapters.filedrop.adapter import drop_source, split_utf8_json_lines
from adapters.framework import AdapterKind, AdapterPlan, Outbound, Subscription
from adapters.options import AdapterConfigError, Options
from adapters.records import InboundMapping, OutboundMapping
from adapters.transports import DirectorySink, Splitter, split_csv
from dutylink.v1 import event_pb2

_PLANES = {
    "ACTUAL": event_pb2.PLANE_ACTUAL,
    "EXERCISE": event_pb2.PLANE_EXERCISE,
    "TEST": event_pb2.PLANE_TEST,
}


def _plan(
    options: Options,
    state_dir: Path,
    inbound_mapping: InboundMapping,
    patterns: tuple[str, ...],
    split: Splitter,
    outbound_mapping: OutboundMapping,
    families: tuple[str, ...],
    subscription: str,
) -> AdapterPlan:
    inbound, outbound = options.table("inbound"), options.table("outbound")
    if not inbound and not outbound:
        raise AdapterConfigError("[options] give [options.inbound], [options.outbound] or both")
    plan = AdapterPlan(inbound=inbound_mapping)
    if inbound:
        plan.sources.append(drop_source(inbound, state_dir, patterns, split))
    if outbound:
        outbound.check_keys(("subscription", "directory", "jurisdictions", "incident_sources"))
        plan.outbound.append(
            Outbound(
                Subscription(
                    outbound.text("subscription", subscription),
                    families=families,
                    jurisdiction_prefixes=outbound.strings("jurisdictions"),
                ),
                outbound_mapping,
                DirectorySink(outbound.path("directory")),
            )
        )
    return plan


def build_cad110(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = Options(values)
    options.check_keys(("system", "agency", "plane", "inbound", "outbound"))
    settings = Cad110Settings(
        system=options.text("system", "cad110"),
        agency=options.text("agency", "police"),
        plane=_PLANES[options.choice("plane", tuple(_PLANES))],
    )
    outbound = options.table("outbound")
    sources = outbound.strings("incident_sources") or ("fire", "health")
    return _plan(
        options,
        state_dir,
        partial(cad110_events, settings=settings),
        ("*.jsonl",),
        split_utf8_json_lines,
        partial(cad110_outbound, incident_sources=sources),
        ("incident", "warning"),
        "cad110-desk",
    )


def build_dispatch119(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = Options(values)
    known = ("system", "agency", "fire_agency", "ems_agency", "plane", "deployment_reports")
    options.check_keys((*known, "inbound", "outbound"))
    settings = Dispatch119Settings(
        system=options.text("system", "dispatch119"),
        agency=options.text("agency", "fire"),
        fire_agency=options.text("fire_agency", "fire"),
        ems_agency=options.text("ems_agency", "health"),
        plane=_PLANES[options.choice("plane", tuple(_PLANES))],
        deployment_reports=options.flag("deployment_reports"),
    )
    outbound = options.table("outbound")
    sources = outbound.strings("incident_sources") or ("police",)
    centre = (settings.fire_agency, settings.ems_agency)
    return _plan(
        options,
        state_dir,
        partial(dispatch119_events, settings=settings),
        ("*.csv",),
        split_csv,
        partial(dispatch119_outbound, centre_agencies=centre, incident_sources=sources),
        ("incident", "resource"),
        "dispatch119-desk",
    )


CAD110 = AdapterKind(
    name="cad-110",
    description="Police 110 CAD: JSON Lines incident records in; fire/ambulance incidents and warnings out as JSON files",
    build=build_cad110,
)
DISPATCH119 = AdapterKind(
    name="dispatch-119-120",
    description="Fire & ambulance 119/120 dispatch: CSV unit log in; hazardous police incidents and resource requests out as JSON files",
    build=build_dispatch119,
)
