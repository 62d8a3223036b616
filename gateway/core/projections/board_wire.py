"""The duty board on the wire (BoardService): an incident view as `BoardIncident`, its timeline's
recipient lines as `BoardRecipient`. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from google.protobuf import duration_pb2

from dutylink.v1 import board_pb2, event_pb2, incident_pb2
from gateway.core.envelope import timestamp_or_none
from gateway.core.projections.board import IncidentView, Line, agencies
from gateway.core.projections.recipients import Outcome, RecipientLine
from gateway.core.workflows.tracking_view import tracked_recipient

_OUTCOMES = {
    Outcome.RECEIVES: board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES,
    Outcome.RECEIVES_REDACTED: board_pb2.BOARD_RECIPIENT_OUTCOME_RECEIVES_REDACTED,
    Outcome.WITHHELD: board_pb2.BOARD_RECIPIENT_OUTCOME_WITHHELD,
}


def board_line(line: Line, now: datetime) -> board_pb2.BoardLine:
    return board_pb2.BoardLine(
        lifecycle=line.lifecycle,
        key=line.key,
        state=line.state,
        opened_by=line.opened_by,
        lead=line.lead,
        assigned=line.assigned,
        deadline=timestamp_or_none(line.deadline),
        last_type=line.last_type,
        updated_time=timestamp_or_none(line.updated),
        finished=line.finished,
        overdue=line.overdue(now),
    )


def board_recipient(line: RecipientLine) -> board_pb2.BoardRecipient:
    return board_pb2.BoardRecipient(
        agency=line.agency,
        outcome=_OUTCOMES[line.outcome],
        rule_ids=line.rule_ids,
        reason=line.reason,
        redacted_fields=line.redacted_fields,
        policy_version=line.policy_version,
        policy_not_archived=line.policy_not_archived,
        tracked=tracked_recipient(line.tracked) if line.tracked is not None else None,
    )


def board_incident(
    view: IncidentView,
    now: datetime,
    *,
    with_timeline: bool,
    recipients: Mapping[int, Sequence[RecipientLine]] | None = None,
) -> board_pb2.BoardIncident:
    """`view` as BoardIncident; its timeline only `with_timeline` (GetIncident), each entry with
    its `recipients` (by stream sequence) where given."""
    incident = board_pb2.BoardIncident(
        incident_id=view.key.incident_id,
        plane=event_pb2.Plane.ValueType(view.key.plane),
        title=view.title,
        category=incident_pb2.IncidentCategory.ValueType(view.category),
        severity=incident_pb2.IncidentSeverity.ValueType(view.severity),
        division_code=view.division_code,
        stage=board_line(view.stage, now) if view.stage else None,
        phase=board_line(view.phase, now) if view.phase else None,
        lines=[board_line(line, now) for line in view.lines],
        agencies=agencies(view),
        updated_time=timestamp_or_none(view.updated),
        open=view.open,
        overdue=len(view.overdue(now)),
        dropped_events=view.dropped,
        loop=[
            board_pb2.BoardLoopStep(
                step=step.step,
                agency=step.agency,
                since_report=duration_pb2.Duration(
                    seconds=int(step.seconds), nanos=round(step.seconds % 1 * 1e9)
                ),
            )
            for step in view.loop
        ],
        location=view.location,
        warning_areas=[
            board_pb2.BoardWarningArea(
                warning=area.warning,
                headline=area.headline,
                area_desc=area.area_desc,
                polygons=area.polygons,
                circles=area.circles,
            )
            for area in view.warning_areas
        ],
    )
    if with_timeline:
        shown = recipients or {}
        incident.timeline.extend(
            board_pb2.BoardEntry(
                stream_sequence=entry.sequence,
                received_time=timestamp_or_none(entry.received),
                event=entry.event,
                recipients=[board_recipient(line) for line in shown.get(entry.sequence, ())],
            )
            for entry in view.timeline
        )
    return incident
