"""XML helpers of the EDXL codecs: the shared safe parser (dutylink.adapters.xmlsafe: bounded size, no
DOCTYPE, no entities, no network), schemas compiled from the vendored folder only (no import
from anywhere else), validation errors naming element and line, and dateTimes. Pure.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

from dutylink.adapters.xmlsafe import MAX_XML_BYTES, XmlError, parse_xml

if TYPE_CHECKING:
    from lxml.etree._docloader import _InputDocument

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"

# A namespace in Clark notation, not the "{'a', 'b'}" sets in enumeration messages.
_CLARK = re.compile(r"\{(?:urn:|https?:)[^}]*\}")
_ELEMENT_ERROR = re.compile(
    r"^Element '(?:\{[^}]*\})?([^']+)'(?:, attribute '([^']+)')?: (.*)$", re.S
)
# xs:dateTime as libxml2 has already validated it; groups: date, time, fraction, zone.
_DATETIME = re.compile(
    r"^(-?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$"
)


def text(element: etree._Element) -> str:
    """The element's character content ('' when empty). Comments are gone at parse time; a
    processing instruction inside a value does not cut it short."""
    if len(element) == 0:
        return element.text or ""
    return "".join(element.itertext())


def local_name(element: etree._Element) -> str:
    return etree.QName(element).localname


class _LocalOnly(etree.Resolver):
    """Resolves schema imports to files inside the vendored schema folder and nothing else."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self._root = root

    def resolve(
        self, system_url: str | None, public_id: str | None, context: object, /
    ) -> _InputDocument | None:
        path = Path((system_url or "").removeprefix("file://")).resolve()
        if not path.is_relative_to(self._root) or not path.is_file():
            # libxml2 reports the import as failed to load; the schema does not compile.
            raise XmlError(f"schema import outside {self._root} refused: {system_url}")
        return self.resolve_filename(str(path), context)


@functools.cache
def load_schema(relative_path: str) -> etree.XMLSchema:
    """The compiled XSD at `relative_path` under SCHEMA_DIR, imports resolved on disk only.
    Cached: compiling the RM set (CIQ, GML) takes milliseconds; validating takes microseconds.
    """
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(_LocalOnly(SCHEMA_DIR))
    document = etree.parse(str(SCHEMA_DIR / relative_path), parser)
    return etree.XMLSchema(document)


def validate(
    schema: etree.XMLSchema, root: etree._Element, *, error: type[XmlError] = XmlError
) -> None:
    """Raise `error` for the first schema violation, naming the element and its line (or its
    path in the tree when it was built in memory), and how many more there are."""
    if schema.validate(root):
        return
    entries = list(schema.error_log)
    first = entries[0]
    more = f" (and {len(entries) - 1} more problems)" if len(entries) > 1 else ""
    message = first.message
    if match := _ELEMENT_ERROR.match(message):
        name, attribute, detail = match.groups()
        where = f"<{name}>" + (f" attribute {_CLARK.sub('', attribute)}" if attribute else "")
        message = f"{where}: {_CLARK.sub('', detail).strip()}"
    else:
        message = _CLARK.sub("", message)
    if not first.line and first.path:  # built in memory: no lines, so say where in the tree
        found = root.getroottree().xpath(first.path)
        if isinstance(found, list) and found and isinstance(found[0], etree._Element):
            message = f"{_readable_path(found[0])}: {message}"
    raise error(f"schema-invalid: {message}{more}", line=first.line or None)


def _readable_path(element: etree._Element) -> str:
    """/RequestResource/ResourceInformation[1]/ScheduleInformation[2]/ScheduleType"""
    steps = []
    node: etree._Element | None = element
    while node is not None:
        parent = node.getparent()
        name = etree.QName(node)
        step = name.localname
        if parent is not None and len(same := parent.findall(name.text)) > 1:
            step += f"[{same.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))


def parse_datetime(value: str, *, default_tz: tzinfo | None = None) -> tuple[datetime, int]:
    """An xs:dateTime (already schema-valid) as an aware datetime at whole seconds, keeping its
    offset, plus nanoseconds. Digits beyond nanoseconds are dropped. A dateTime without an
    offset (schema-valid) is read in `default_tz`; without one it is refused, since guessing
    the zone of an inter-agency message would move it by hours. Raises ValueError."""
    match = _DATETIME.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an xs:dateTime")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone is None and default_tz is None:
        raise ValueError(f"{value!r} has no time-zone offset (add Z or e.g. +08:00)")
    if not 1 <= int(year) <= 9999:
        raise ValueError(f"{value!r}: year outside 0001-9999")
    tz: tzinfo = UTC
    if zone is None:
        assert default_tz is not None
        tz = default_tz
    elif zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    # XSD 1.0 allows 24:00:00, the first instant of the next day.
    end_of_day = int(hour) == 24
    moment = datetime(
        int(year), int(month), int(day), 0 if end_of_day else int(hour), int(minute),
        int(second), tzinfo=tz,
    )  # fmt: skip
    if end_of_day:
        moment += timedelta(days=1)
    nanos = int((fraction or "0")[:9].ljust(9, "0"))
    return moment, nanos


def has_offset(value: str) -> bool:
    """Whether an xs:dateTime text names its time zone (Z or an offset)."""
    match = _DATETIME.match(value.strip())
    return match is not None and match.group(8) is not None


def format_datetime(moment: datetime, nanos: int = 0) -> str:
    """xs:dateTime text of an aware datetime (its microseconds replaced by `nanos` when
    given): 'Z' for UTC, else the offset; fraction digits only as needed."""
    if moment.tzinfo is None:
        raise ValueError("a dateTime needs a time zone")
    nanos = nanos or moment.microsecond * 1000
    head = moment.replace(microsecond=0).isoformat()
    date_time, zone = head[:19], head[19:]
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{date_time}{fraction}{'Z' if zone in ('+00:00', '') else zone}"


__all__ = [
    "MAX_XML_BYTES",
    "XmlError",
    "load_schema",
    "local_name",
    "parse_xml",
    "text",
    "validate",
]
