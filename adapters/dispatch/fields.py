"""Reading one feed record's fields, with refusals that name the record's line and the field.

Pure: a `Record` in, values out, `Rejected` when a value is missing or does not fit, e.g.
"cad-20261123.jsonl:7: 'location.division': '31011' is not a 6-digit division code".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from google.protobuf import timestamp_pb2

from dutylink.adapters.records import Record, Rejected

T = TypeVar("T")

_DIVISION = re.compile(r"^[1-8][0-9]{5}$")


class Fields:
    """The JSON object of one record (a JSON line, or a CSV row as split_csv makes it)."""

    def __init__(self, record: Record) -> None:
        self.origin = record.origin
        try:
            document = json.loads(record.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise Rejected(f"{self.origin}: not JSON: {error}") from None
        if not isinstance(document, dict):
            raise Rejected(f"{self.origin}: not a JSON object")
        self._document: dict[str, Any] = document

    def fail(self, path: str, problem: str) -> NoReturn:
        raise Rejected(f"{self.origin}: '{path}': {problem}")

    def get(self, path: str) -> Any:
        """The value at a dotted path; None when absent, null or "" (CSV's empty cell)."""
        value: Any = self._document
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return None if value == "" else value

    def text(self, path: str, *, required: bool = False) -> str:
        value = self.get(path)
        if value is None:
            if required:
                self.fail(path, "required")
            return ""
        if isinstance(value, dict | list):
            self.fail(path, "must be text")
        return str(value).strip()

    def choice(self, path: str, table: Mapping[str, T]) -> T:
        key = self.text(path, required=True)
        if key not in table:
            self.fail(path, f"{key!r} is not one of {', '.join(table)}")
        return table[key]

    def time(self, path: str) -> timestamp_pb2.Timestamp:
        """A required ISO 8601 instant with its UTC offset (a CAD's local time without one is
        ambiguous, so it is refused rather than guessed)."""
        text = self.text(path, required=True)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(path, f"{text!r} is not an ISO 8601 time")
        if moment.tzinfo is None:
            self.fail(path, f"{text!r} has no UTC offset (e.g. +08:00)")
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(moment.astimezone(UTC))
        return stamp

    def number(self, path: str, low: float, high: float) -> float | None:
        value = self.get(path)
        if value is None:
            return None
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not low <= number <= high:  # also false for NaN
            self.fail(path, f"{value!r} is not a number from {low:g} to {high:g}")
        return number

    def count(self, path: str, *, required: bool = False) -> int:
        value = self.get(path)
        if value is None:
            if required:
                self.fail(path, "required")
            return 0
        text = str(value).strip()
        if isinstance(value, bool | float) or not text.isdigit():
            self.fail(path, f"{value!r} is not a whole number")
        return int(text)

    def division(self, path: str) -> str:
        code = self.text(path, required=True)
        if not _DIVISION.match(code):
            self.fail(path, f"{code!r} is not a 6-digit division code (GB/T 2260, e.g. 310115)")
        return code

    def texts(self, path: str) -> list[str]:
        value = self.get(path)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(path, "must be a list of texts")
        return [v.strip() for v in value if v.strip()]
