"""What the console's API accepts and how it answers a refusal: query parameters checked before
anything reaches the gateway (so a bad one is a clear 400 here, not a gRPC error there), and each
gRPC status turned into the HTTP status a browser's script understands."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from dutylink.v1 import event_pb2

# As GetBoardRequest's pattern, but "" too: empty means every jurisdiction.
JURISDICTION = re.compile(r"^([0-9]{2}){0,3}$")
PLANES = ("ACTUAL", "EXERCISE", "TEST")
INCIDENT_ID = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable ASCII, as incident ids are
MAX_PARAMETER_CHARS = 64

# The statuses an officer can meet; anything else is the gateway's fault: 502.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class BadQuery(ValueError):
    """A query parameter the console refuses (HTTP 400); its text says which and why."""


@dataclass(frozen=True)
class BoardQuery:
    jurisdiction: str
    plane: event_pb2.Plane.ValueType
    include_finished: bool


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 502)


def _parameter(query: Mapping[str, str], name: str, default: str) -> str:
    value = query.get(name, default)
    if len(value) > MAX_PARAMETER_CHARS:
        raise BadQuery(f"{name}: longer than {MAX_PARAMETER_CHARS} characters")
    return value


def plane_of(query: Mapping[str, str]) -> event_pb2.Plane.ValueType:
    name = _parameter(query, "plane", "ACTUAL").upper()
    if name not in PLANES:
        raise BadQuery(f"plane: expected one of {', '.join(PLANES)}")
    return event_pb2.Plane.Value(f"PLANE_{name}")


def jurisdiction_of(query: Mapping[str, str]) -> str:
    value = _parameter(query, "jurisdiction", "")
    if not JURISDICTION.fullmatch(value):
        raise BadQuery("jurisdiction: a division prefix of 2, 4 or 6 digits, or empty")
    return value


def board_query(query: Mapping[str, str]) -> BoardQuery:
    """GET /api/board's parameters: jurisdiction, plane, all (1/true: closed incidents too)."""
    finished = _parameter(query, "all", "0").lower()
    if finished not in ("", "0", "1", "false", "true"):
        raise BadQuery("all: expected 1 or 0")
    return BoardQuery(jurisdiction_of(query), plane_of(query), finished in ("1", "true"))


def incident_id_of(value: str) -> str:
    if not INCIDENT_ID.fullmatch(value):
        raise BadQuery("incident id: 1 to 64 printable characters, no spaces")
    return value


# As GetLedgerRequest's pattern: an agency id, or "" for the officer's own agency.
AGENCY = re.compile(r"^([a-z][a-z0-9-]{1,31})?$")


def agency_of(query: Mapping[str, str]) -> str:
    """GET /api/ledger's `agency` (empty: the logged-in agency's own ledger)."""
    value = _parameter(query, "agency", "")
    if not AGENCY.fullmatch(value):
        raise BadQuery("agency: an agency id (lowercase letters, digits and '-'), or empty")
    return value
