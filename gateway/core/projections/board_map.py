"""What the duty board puts on a map beside the scene's point (board.py takes it from the
incident's reports): the areas of the incident's warnings in force, taken from the events as a
viewer may see them (redacted), so areas the policy withholds are never drawn. Pure: no I/O;
time comes in as `now`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from dutylink.catalogue import Catalogue
from dutylink.v1 import common_pb2, event_pb2
from gateway.core.workflows.base import AggregateState
from gateway.core.workflows.machine import effective_state
from gateway.core.workflows.warnings import warning_key

WARNING = "warning"
IN_FORCE = "active"  # not superseded by an update, cancelled or expired


@dataclass(frozen=True)
class WarningArea:
    """One CAP `<area>` of a warning naming the incident: its polygons and circles."""

    warning: str  # the warning's line key ("sender,identifier")
    headline: str
    area_desc: str
    polygons: tuple[common_pb2.Polygon, ...]
    circles: tuple[common_pb2.Circle, ...]


def own_areas(event: event_pb2.Event) -> tuple[str, tuple[WarningArea, ...]]:
    """The warning message's own key and the areas it draws (polygons and circles; an area given
    by geocodes only has nothing to draw)."""
    warning = event.warning
    key = warning_key(warning.sender, warning.identifier)
    areas = tuple(
        WarningArea(key, info.headline, area.area_desc, tuple(area.polygons), tuple(area.circles))
        for info in warning.infos
        for area in info.areas
        if area.polygons or area.circles
    )
    return key, areas


def live_areas(
    catalogue: Catalogue,
    drawn: Mapping[str, tuple[WarningArea, ...]],
    states: Mapping[tuple[str, str], AggregateState],
    now: datetime,
) -> tuple[WarningArea, ...]:
    """The areas of the warnings still in force at `now`: not cancelled, superseded by an update
    (which brings its own areas) or past their expiry."""
    shown: Iterable[WarningArea] = (
        area
        for key, areas in drawn.items()
        if (state := states.get((WARNING, key))) is not None
        and effective_state(catalogue, state, now) == IN_FORCE
        for area in areas
    )
    return tuple(shown)
