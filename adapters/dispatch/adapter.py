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
from adapters.filedrop.adapter import (
    check_keys,
    choice,
    directory,
    drop_source,
    split_utf8_json_lines,
    strings,
    table,
)
from adapters.framework import AdapterKind, AdapterPlan, Outbound, Subscription
from adapters.options import AdapterConfigError
from adapters.records import InboundMapping, OutboundMapping
from adapters.transports import DirectorySink, Splitter, split_csv
from dutylink.v1 import event_pb2

_PLANES = {
    "ACTUAL": event_pb2.PLANE_ACTUAL,
    "EXERCISE": event_pb2.PLANE_EXERCISE,
    "TEST": event_pb2.PLANE_TEST,
}


def _text(options: Mapping[str, Any], key: str, default: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or not value:
        raise AdapterConfigError(f"[options] {key}: must be a non-empty string")
    return value


def _plan(
    options: Mapping[str, Any],
    state_dir: Path,
    inbound_mapping: InboundMapping,
    patterns: tuple[str, ...],
    split: Splitter,
    outbound_mapping: OutboundMapping,
    families: tuple[str, ...],
    subscription: str,
) -> AdapterPlan:
    inbound, outbound = table(options, "inbound"), table(options, "outbound")
    if not inbound and not outbound:
        raise AdapterConfigError("[options] give [options.inbound], [options.outbound] or both")
    plan = AdapterPlan(inbound=inbound_mapping)
    if inbound:
        plan.sources.append(drop_source(inbound, state_dir, patterns, split))
    if outbound:
        where = "[options.outbound]"
        check_keys(
            outbound, ("subscription", "directory", "jurisdictions", "incident_sources"), where
        )
        plan.outbound.append(
            Outbound(
                Subscription(
                    _text(outbound, "subscription", subscription),
                    families=families,
                    jurisdiction_prefixes=strings(outbound, "jurisdictions", where),
                ),
                outbound_mapping,
                DirectorySink(directory(outbound, where)),
            )
        )
    return plan


def build_cad110(options: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    check_keys(options, ("system", "agency", "plane", "inbound", "outbound"), "[options]")
    settings = Cad110Settings(
        system=_text(options, "system", "cad110"),
        agency=_text(options, "agency", "police"),
        plane=_PLANES[choice(options, "plane", "[options]", tuple(_PLANES))],
    )
    outbound = table(options, "outbound")
    sources = strings(outbound, "incident_sources", "[options.outbound]") or ("fire", "health")
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


def build_dispatch119(options: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    known = ("system", "agency", "fire_agency", "ems_agency", "plane", "deployment_reports")
    check_keys(options, (*known, "inbound", "outbound"), "[options]")
    reports = options.get("deployment_reports", False)
    if not isinstance(reports, bool):
        raise AdapterConfigError("[options] deployment_reports: must be true or false")
    settings = Dispatch119Settings(
        system=_text(options, "system", "dispatch119"),
        agency=_text(options, "agency", "fire"),
        fire_agency=_text(options, "fire_agency", "fire"),
        ems_agency=_text(options, "ems_agency", "health"),
        plane=_PLANES[choice(options, "plane", "[options]", tuple(_PLANES))],
        deployment_reports=reports,
    )
    outbound = table(options, "outbound")
    sources = strings(outbound, "incident_sources", "[options.outbound]") or ("police",)
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
