"""A tracked message (gateway.core.workflows.tracking) as its key-value entry: JSON with a
format number, every field written out by name or position, so that an entry written by an
older gateway still reads. Pure: no I/O."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from gateway.core.workflows.tracking import (
    ArmedDeadline,
    ArmedLevel,
    Expect,
    Recipient,
    Status,
    Tracked,
)

FORMAT = 1


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def encode(tracked: Tracked) -> bytes:
    """The tracked message as its key-value entry (JSON, sorted keys)."""
    data = {
        "format": FORMAT,
        "event_id": tracked.event_id,
        "event_type": tracked.event_type,
        "sender": tracked.sender,
        "started": tracked.started.isoformat(),
        "rules_version": tracked.rules_version,
        "states": list(tracked.states),
        "plane": tracked.plane,
        "division_code": tracked.division_code,
        "incidents": list(tracked.incidents),
        "restarted_at": _time(tracked.restarted_at),
        "recipients": [
            [
                r.agency,
                r.status.value,
                _time(r.delivered_at),
                _time(r.answered_at),
                r.answered_by,
                r.reason,
                list(r.deputy_for),
            ]
            for r in tracked.recipients
        ],
        "deadlines": [
            {
                "id": d.deadline_id,
                "expect": d.expect.value,
                "states": list(d.states),
                "due": d.due.isoformat(),
                "fired": d.fired,
                "met_at": _time(d.met_at),
                "resolved_at": _time(d.resolved_at),
                "levels": [
                    [level.after.total_seconds(), list(level.notify), list(level.deputies)]
                    for level in d.levels
                ],
            }
            for d in tracked.deadlines
        ],
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _recipient(
    agency: str,
    status: str,
    delivered_at: str | None,
    answered_at: str | None,
    by: str,
    reason: str,
    deputy_for: list[str] | None = None,  # rows written before deputies have six fields
) -> Recipient:
    return Recipient(
        agency,
        Status(status),
        _parse(delivered_at),
        _parse(answered_at),
        by,
        reason,
        tuple(deputy_for or ()),
    )


def decode(raw: bytes) -> Tracked:
    """The inverse of `encode`; ValueError for an entry it did not write."""
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown tracking format {data.get('format')!r}")
        return Tracked(
            event_id=data["event_id"],
            event_type=data["event_type"],
            sender=data["sender"],
            started=datetime.fromisoformat(data["started"]),
            rules_version=data["rules_version"],
            states=tuple(data["states"]),
            plane=data.get("plane", 0),  # entries written before these two
            division_code=data.get("division_code", ""),
            incidents=tuple(data.get("incidents", ())),
            restarted_at=_parse(data.get("restarted_at")),
            recipients=tuple(_recipient(*row) for row in data["recipients"]),
            deadlines=tuple(
                ArmedDeadline(
                    deadline_id=d["id"],
                    expect=Expect(d["expect"]),
                    states=tuple(d["states"]),
                    due=datetime.fromisoformat(d["due"]),
                    fired=d["fired"],
                    met_at=_parse(d["met_at"]),
                    resolved_at=_parse(d["resolved_at"]),
                    levels=tuple(
                        ArmedLevel(timedelta(seconds=after), tuple(notify), tuple(deputies))
                        for after, notify, deputies in d["levels"]
                    ),
                )
                for d in data["deadlines"]
            ),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a tracking entry: {error}") from error
