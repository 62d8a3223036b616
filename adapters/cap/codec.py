"""CAP 1.2 XML <-> `dutylink.v1.Warning`: a pure codec.

Long because it follows CAP 1.2 element by element in both directions: a reader and a writer for
alert, info, resource and area, every value type's conversion (dateTime, decimal, point, polygon,
circle, references, space-separated lists), and schema errors translated into messages that name
the element and line.

`parse_cap` takes the bytes of a CAP 1.2 `<alert>` and returns a `Warning`; `to_cap_xml` writes a
`Warning` as CAP 1.2 XML. Both check their XML against the OASIS CAP 1.2 schema (vendored in
`schema/`, read once) and raise `CapError` naming the element and, when parsing, the line:

    line 15: <urgency>: 'Soon' is not one of Immediate, Expected, Future, Past, Unknown

Apart from reading the packaged XSD once, nothing here touches files, the network or clocks.
Input is parsed by libxml2 with entities left unresolved, no DTD loaded and no network, and any
DOCTYPE is refused, so entity bombs and external entities never expand. The mapping, its
conversions and its limits are in README.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from typing import Final, Literal, TypeVar, cast

import xmlschema
from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree
from xmlschema.aliases import XMLSourceType
from xmlschema.validators import (
    XsdAnyElement,
    XsdAtomicBuiltin,
    XsdElement,
    XsdEnumerationFacets,
)

from dutylink.adapters.xmlsafe import XmlError, parse_xml
from dutylink.v1 import common_pb2, warning_pb2

CAP_NAMESPACE: Final = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NAMESPACE: Final = "http://www.w3.org/2000/09/xmldsig#"

# A refusal lists this many problems at most, then says how many more there were.
MAX_REPORTED_PROBLEMS: Final = 50

# The default input limit equals the largest `Warning.cap_xml` the proto accepts.
MAX_CAP_BYTES: Final = 512 * 1024

_OLDER_CAP_NAMESPACES: Final = {
    "urn:oasis:names:tc:emergency:cap:1.1": "CAP 1.1",
    "http://www.incident.com/cap/1.0": "CAP 1.0",
}
_DATETIME_ELEMENTS: Final = frozenset({"sent", "effective", "onset", "expires"})

# XML's own whitespace. Unicode spaces such as U+3000 (the ideographic space that indents Chinese
# paragraphs) are content, not layout, so they are neither stripped nor treated as separators.
_XML_SPACE: Final = " \t\r\n"
_XML_SPACE_RUN: Final = re.compile(r"[ \t\r\n]+")
# The XSD pattern admits "," as the offset sign and \d matches any Unicode digit: be stricter.
_CAP_DATETIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[-+][0-9]{2}:[0-9]{2}"
)
_LANGUAGE: Final = re.compile(r"[a-zA-Z]{1,8}(?:-[a-zA-Z0-9]{1,8})*")  # xs:language
_DECIMAL: Final = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# A quoted entry (which may hold spaces) or a bare one, then separating whitespace or the end.
_LIST_ENTRY: Final = re.compile(r'(?:"([^"]*)"|([^ \t\r\n"]+))(?:[ \t\r\n]+|$)')
# CAP: identifiers and senders "MUST NOT include spaces, commas or restricted characters".
_TOKEN_FORBIDDEN: Final = frozenset(" \t\r\n,<&")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS: Final = -62_135_596_800
_MAX_SECONDS: Final = 253_402_300_799
_MAX_OFFSET_MINUTES: Final = 14 * 60  # xs:dateTime offsets span -14:00 to +14:00
_MAX_UINT64: Final = 2**64 - 1


@dataclass(frozen=True)
class CapProblem:
    """One problem in a CAP document: where (`path`, e.g. "/alert/info[2]/area[3]/polygon[1]",
    or the Warning field when writing; `line` in the document when known) and what."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class CapError(XmlError):
    """A CAP document that `parse_cap` refuses, or a `Warning` that `to_cap_xml` cannot write.

    `problems` lists every problem found (schema errors and CAP rules alike, in document order, at
    most MAX_REPORTED_PROBLEMS; `more` counts the rest). `message` and `line` are the first
    problem's. `str()` gives one problem per line, "line 12: <urgency>: 'Soon' is not one of ...",
    then "and 7 more problems" when some were left out.
    """

    def __init__(
        self,
        message: str = "",
        *,
        line: int | None = None,
        path: str = "",
        problems: Sequence[CapProblem] = (),
        more: int = 0,
    ) -> None:
        if problems:
            message, line, path = problems[0].message, problems[0].line, problems[0].path
        super().__init__(message, line=line)
        self.path = path
        self.problems: list[CapProblem] = list(problems) or [CapProblem(path, line, message)]
        self.more = more
        if len(self.problems) > 1 or more:
            lines = [str(problem) for problem in self.problems]
            if more:
                lines.append(f"and {more} more problem{'s' if more > 1 else ''}")
            self.args = ("\n".join(lines),)


# CAP's code lists, in schema order, and the enum value each maps to.
_E = TypeVar("_E", bound=int)

_STATUS: Final[Mapping[str, warning_pb2.CapStatus.ValueType]] = {
    "Actual": warning_pb2.CAP_STATUS_ACTUAL,
    "Exercise": warning_pb2.CAP_STATUS_EXERCISE,
    "System": warning_pb2.CAP_STATUS_SYSTEM,
    "Test": warning_pb2.CAP_STATUS_TEST,
    "Draft": warning_pb2.CAP_STATUS_DRAFT,
}
_MSG_TYPE: Final[Mapping[str, warning_pb2.CapMsgType.ValueType]] = {
    "Alert": warning_pb2.CAP_MSG_TYPE_ALERT,
    "Update": warning_pb2.CAP_MSG_TYPE_UPDATE,
    "Cancel": warning_pb2.CAP_MSG_TYPE_CANCEL,
    "Ack": warning_pb2.CAP_MSG_TYPE_ACK,
    "Error": warning_pb2.CAP_MSG_TYPE_ERROR,
}
_SCOPE: Final[Mapping[str, warning_pb2.CapScope.ValueType]] = {
    "Public": warning_pb2.CAP_SCOPE_PUBLIC,
    "Restricted": warning_pb2.CAP_SCOPE_RESTRICTED,
    "Private": warning_pb2.CAP_SCOPE_PRIVATE,
}
_CATEGORY: Final[Mapping[str, warning_pb2.CapCategory.ValueType]] = {
    "Geo": warning_pb2.CAP_CATEGORY_GEO,
    "Met": warning_pb2.CAP_CATEGORY_MET,
    "Safety": warning_pb2.CAP_CATEGORY_SAFETY,
    "Security": warning_pb2.CAP_CATEGORY_SECURITY,
    "Rescue": warning_pb2.CAP_CATEGORY_RESCUE,
    "Fire": warning_pb2.CAP_CATEGORY_FIRE,
    "Health": warning_pb2.CAP_CATEGORY_HEALTH,
    "Env": warning_pb2.CAP_CATEGORY_ENV,
    "Transport": warning_pb2.CAP_CATEGORY_TRANSPORT,
    "Infra": warning_pb2.CAP_CATEGORY_INFRA,
    "CBRNE": warning_pb2.CAP_CATEGORY_CBRNE,
    "Other": warning_pb2.CAP_CATEGORY_OTHER,
}
_RESPONSE_TYPE: Final[Mapping[str, warning_pb2.CapResponseType.ValueType]] = {
    "Shelter": warning_pb2.CAP_RESPONSE_TYPE_SHELTER,
    "Evacuate": warning_pb2.CAP_RESPONSE_TYPE_EVACUATE,
    "Prepare": warning_pb2.CAP_RESPONSE_TYPE_PREPARE,
    "Execute": warning_pb2.CAP_RESPONSE_TYPE_EXECUTE,
    "Avoid": warning_pb2.CAP_RESPONSE_TYPE_AVOID,
    "Monitor": warning_pb2.CAP_RESPONSE_TYPE_MONITOR,
    "Assess": warning_pb2.CAP_RESPONSE_TYPE_ASSESS,
    "AllClear": warning_pb2.CAP_RESPONSE_TYPE_ALL_CLEAR,
    "None": warning_pb2.CAP_RESPONSE_TYPE_NONE,
}
_URGENCY: Final[Mapping[str, warning_pb2.CapUrgency.ValueType]] = {
    "Immediate": warning_pb2.CAP_URGENCY_IMMEDIATE,
    "Expected": warning_pb2.CAP_URGENCY_EXPECTED,
    "Future": warning_pb2.CAP_URGENCY_FUTURE,
    "Past": warning_pb2.CAP_URGENCY_PAST,
    "Unknown": warning_pb2.CAP_URGENCY_UNKNOWN,
}
_SEVERITY: Final[Mapping[str, warning_pb2.CapSeverity.ValueType]] = {
    "Extreme": warning_pb2.CAP_SEVERITY_EXTREME,
    "Severe": warning_pb2.CAP_SEVERITY_SEVERE,
    "Moderate": warning_pb2.CAP_SEVERITY_MODERATE,
    "Minor": warning_pb2.CAP_SEVERITY_MINOR,
    "Unknown": warning_pb2.CAP_SEVERITY_UNKNOWN,
}
_CERTAINTY: Final[Mapping[str, warning_pb2.CapCertainty.ValueType]] = {
    "Observed": warning_pb2.CAP_CERTAINTY_OBSERVED,
    "Likely": warning_pb2.CAP_CERTAINTY_LIKELY,
    "Possible": warning_pb2.CAP_CERTAINTY_POSSIBLE,
    "Unlikely": warning_pb2.CAP_CERTAINTY_UNLIKELY,
    "Unknown": warning_pb2.CAP_CERTAINTY_UNKNOWN,
}


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_cap(data: bytes, *, max_bytes: int = MAX_CAP_BYTES) -> warning_pb2.Warning:
    """Parse a CAP 1.2 `<alert>` document into a `Warning`; `cap_xml` keeps `data` as given.

    Refuses (CapError) documents over `max_bytes`, any DOCTYPE (so no DTD, entity or external
    reference is ever processed), XML that is not well-formed, anything but a CAP 1.2 `<alert>`,
    documents the CAP 1.2 schema rejects, and values CAP forbids that the schema cannot express
    (a "Z" or "," offset, open or short polygons, coordinates out of range, spaces or commas in
    identifiers, malformed `references`, bad base64, `ceiling` without `altitude`).
    """
    if len(data) > max_bytes:
        raise CapError(f"document is {len(data)} bytes, larger than the limit of {max_bytes} bytes")
    root = _parse_xml(data)
    _check_root(root)
    found = _Problems()
    schema_problems = _schema_problems(root)
    warning = _read_alert(root, found)
    # The CAP rules run even on a document the schema refuses, so one refusal lists everything;
    # a value the schema already refused (an unknown enum, a non-number) is reported once.
    refused_paths = {problem.path for problem in schema_problems}
    problems = schema_problems + [p for p in found.problems if p.path not in refused_paths]
    if problems:
        problems.sort(key=lambda problem: problem.line if problem.line is not None else 0)
        raise CapError(
            problems=problems[:MAX_REPORTED_PROBLEMS],
            more=max(0, len(problems) - MAX_REPORTED_PROBLEMS),
        )
    warning.cap_xml = data
    return warning


class _Problems:
    """Collects the CAP-rule problems of a document while it is read, so reading goes on."""

    def __init__(self) -> None:
        self.problems: list[CapProblem] = []

    @contextlib.contextmanager
    def checking(self, elem: etree._Element) -> Iterator[None]:
        """Records a refusal raised while reading `elem` (and carries on after it)."""
        try:
            yield
        except CapError as error:
            line = error.line if error.line is not None else elem.sourceline
            self.problems.append(CapProblem(element_path(elem), line, error.message))
        except ValueError as error:  # a value the schema refused too (the duplicate is dropped)
            self.problems.append(
                CapProblem(element_path(elem), elem.sourceline, f"<{_local(elem.tag)}>: {error}")
            )


# CAP elements that may occur more than once: their steps in a path always carry a position.
REPEATABLE_ELEMENTS: Final = frozenset(
    {"code", "info", "category", "responseType", "eventCode", "parameter", "resource", "area"}
    | {"polygon", "circle", "geocode"}
)


def element_path(elem: etree._Element) -> str:
    """The element's path, e.g. "/alert/info[2]/area[3]/polygon[1]" or "/alert/info[1]/headline":
    local names for CAP elements, "ds:" for XML Signature ones, "{namespace}name" for others;
    1-based positions among same-named siblings for elements that may repeat (and for any that
    is repeated, which the schema refuses); none for the root."""
    steps: list[str] = []
    node: etree._Element | None = elem
    while node is not None:
        parent = node.getparent()
        name = step_name(node)
        if parent is None:
            steps.append(name)
        else:
            before = sum(1 for s in node.itersiblings(preceding=True) if s.tag == node.tag)
            after = any(s.tag == node.tag for s in node.itersiblings())
            qname = etree.QName(node)
            repeatable = qname.namespace != CAP_NAMESPACE or qname.localname in REPEATABLE_ELEMENTS
            steps.append(f"{name}[{before + 1}]" if repeatable or before or after else name)
        node = parent
    return "/" + "/".join(reversed(steps))


def step_name(elem: etree._Element) -> str:
    """An element's name in a path: its local name in CAP, "ds:name" in XML Signature."""
    qname = etree.QName(elem)
    if qname.namespace == CAP_NAMESPACE:
        return qname.localname
    if qname.namespace == DSIG_NAMESPACE:
        return f"ds:{qname.localname}"
    return qname.text


def _parse_xml(data: bytes) -> etree._Element:
    return parse_xml(data, max_bytes=len(data), error=CapError)


def _check_root(root: etree._Element) -> None:
    qname = etree.QName(root)
    if qname.namespace == CAP_NAMESPACE and qname.localname == "alert":
        return
    if qname.namespace in _OLDER_CAP_NAMESPACES:
        version = _OLDER_CAP_NAMESPACES[qname.namespace]
        raise CapError(
            f"<{qname.localname}>: this is {version} ({qname.namespace}); only CAP 1.2 "
            f"({CAP_NAMESPACE}) is supported",
            line=root.sourceline,
        )
    where = f" in namespace {qname.namespace}" if qname.namespace else " (no namespace)"
    raise CapError(
        f"not a CAP 1.2 alert: the root element is <{qname.localname}>{where}; expected "
        f"<alert> in {CAP_NAMESPACE}",
        line=root.sourceline,
    )


@functools.cache
def _schema() -> xmlschema.XMLSchema10:
    """The OASIS CAP 1.2 schema, compiled once; it has no imports, so nothing else is read."""
    xsd = resources.files(__package__).joinpath("schema", "CAP-v1.2.xsd").read_text("utf-8")
    return xmlschema.XMLSchema10(xsd, allow="none", defuse="always")


@functools.cache
def _fast_schema() -> etree.XMLSchema:
    """The same schema compiled by libxml2: about twenty times faster than xmlschema, so valid
    documents (nearly all) are checked by it alone; xmlschema then explains a refusal."""
    xsd = resources.files(__package__).joinpath("schema", "CAP-v1.2.xsd").read_bytes()
    return etree.XMLSchema(parse_xml(xsd, max_bytes=len(xsd)))


def _schema_problem(root: etree._Element) -> CapError | None:
    """The schema violations in `root` as one CapError, or None when it is valid."""
    problems = _schema_problems(root)
    return CapError(problems=problems) if problems else None


def _schema_problems(root: etree._Element) -> list[CapProblem]:
    """Every schema violation in `root` (up to a bound), naming the element, path and line."""
    if _fast_schema().validate(root):
        return []
    # xmlschema reads lxml trees (and keeps their line numbers), but its element protocol and
    # types-lxml disagree on details, hence the cast.
    source = cast(XMLSourceType, root)
    resource = xmlschema.XMLResource(source, allow="none", defuse="always")
    problems: list[CapProblem] = []
    # Bounded, so that a document of nothing but errors costs little; "and N more" counts these.
    for error in _schema().iter_errors(resource):
        problems.append(_describe_schema_error(error, root))
        if len(problems) > 10 * MAX_REPORTED_PROBLEMS:
            break
    return problems


def _describe_schema_error(
    error: xmlschema.XMLSchemaValidationError, root: etree._Element
) -> CapProblem:
    elem = cast("etree._Element | None", error.elem)
    if elem is None:
        elem = root
    name = _local(elem.tag)
    line = error.sourceline
    path = element_path(elem)
    if isinstance(error, xmlschema.XMLSchemaChildrenValidationError):
        expected = [_particle_name(particle) for particle in error.expected or ()]
        child = cast("etree._Element | None", error.invalid_child)
        if child is None:
            return CapProblem(path, line, f"<{name}>: incomplete: missing {_either(expected)}")
        child_line = getattr(child, "sourceline", line)
        child_path = element_path(child)
        if expected:
            return CapProblem(
                child_path,
                child_line,
                f"<{name}>: expected {_either(expected)}, found <{_local(child.tag)}>",
            )
        return CapProblem(
            child_path, child_line, f"<{name}>: <{_local(child.tag)}> is not allowed here"
        )
    if isinstance(error.obj, str):
        value = error.obj
    else:
        value = (elem.text or "").strip(_XML_SPACE) if elem is not None else ""
    if isinstance(error.validator, XsdEnumerationFacets):
        allowed = ", ".join(str(option) for option in error.validator.enumeration)
        return CapProblem(path, line, f"<{name}>: {_shorten(value)!r} is not one of {allowed}")
    if name in _DATETIME_ELEMENTS:
        return CapProblem(path, line, _bad_datetime(name, value, line).message)
    if isinstance(error, xmlschema.XMLSchemaDecodeError) and isinstance(
        error.validator, XsdAtomicBuiltin
    ):
        return CapProblem(
            path,
            line,
            f"<{name}>: {_shorten(value)!r} is not a valid {error.validator.prefixed_name}",
        )
    reason = re.sub(r"\{[^}]*\}", "", error.reason or "invalid")
    shown = f"{_shorten(value)!r}: " if value else ""
    return CapProblem(path, line, f"<{name}>: {shown}{reason}")


def _particle_name(particle: object) -> str:
    if isinstance(particle, XsdElement):
        return f"<{particle.local_name}>"
    if isinstance(particle, XsdAnyElement):
        return "an XML-Signature element"
    return str(particle)


def _either(names: list[str]) -> str:
    if not names:
        return "an element"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _bad_datetime(name: str, value: str, line: int | None, why: str = "") -> CapError:
    return CapError(
        f"<{name}>: {_shorten(value)!r} is not a CAP dateTime "
        "(YYYY-MM-DDThh:mm:ss+hh:mm with a numeric UTC offset; UTC is written -00:00, not Z)"
        + (f": {why}" if why else ""),
        line=line,
    )


def _local(tag: object) -> str:
    return etree.QName(str(tag)).localname


def _text(elem: etree._Element) -> str:
    # Leading and trailing XML whitespace is indentation, not content (see README).
    return (elem.text or "").strip(_XML_SPACE)


def _children(elem: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """(local name, child) for the CAP-namespace children; `ds:Signature` is left to cap_xml."""
    for child in elem:
        qname = etree.QName(child)
        if qname.namespace == CAP_NAMESPACE:
            yield qname.localname, child


def _read_alert(root: etree._Element, found: _Problems) -> warning_pb2.Warning:
    warning = warning_pb2.Warning()
    plus_zero = False
    for name, child in _children(root):
        with found.checking(child):
            plus_zero |= _read_alert_child(warning, name, child, found)
    warning.utc_plus_zero = plus_zero
    for info in warning.infos:
        # Offsets equal to the alert's are the default: kept only where they differ.
        for _, field in _INFO_TIMES:
            if info.HasField(field) and getattr(info, field) == warning.utc_offset_minutes:
                info.ClearField(field)
    return warning


# An info block's dateTimes and the fields that keep their offsets when not the alert's.
_InfoTime = Literal["effective", "onset", "expires"]
_InfoOffset = Literal[
    "effective_utc_offset_minutes", "onset_utc_offset_minutes", "expires_utc_offset_minutes"
]
_INFO_TIMES: Final[tuple[tuple[_InfoTime, _InfoOffset], ...]] = (
    ("effective", "effective_utc_offset_minutes"),
    ("onset", "onset_utc_offset_minutes"),
    ("expires", "expires_utc_offset_minutes"),
)


def _read_alert_child(
    warning: warning_pb2.Warning, name: str, child: etree._Element, found: _Problems
) -> bool:
    """Reads one child of <alert> into `warning`; True if it holds a "+00:00" dateTime."""
    match name:
        case "identifier":
            warning.identifier = _read_token(child)
        case "sender":
            warning.sender = _read_token(child)
        case "sent":
            seconds, offset, plus_zero = _read_datetime(child)
            warning.sent.seconds = seconds
            warning.utc_offset_minutes = offset
            return plus_zero
        case "status":
            warning.status = _read_enum(child, _STATUS)
        case "msgType":
            warning.msg_type = _read_enum(child, _MSG_TYPE)
        case "source":
            warning.source = _text(child)
        case "scope":
            warning.scope = _read_enum(child, _SCOPE)
        case "restriction":
            warning.restriction = _text(child)
        case "addresses":
            warning.addresses.extend(_read_list(child))
        case "code":
            warning.codes.append(_text(child))
        case "note":
            warning.note = _text(child)
        case "references":
            warning.references.extend(_read_references(child))
        case "incidents":
            warning.incidents.extend(_read_list(child))
        case "info":
            info, plus_zero = _read_info(child, found)
            warning.infos.append(info)
            return plus_zero
    return False


def _read_info(elem: etree._Element, found: _Problems) -> tuple[warning_pb2.WarningInfo, bool]:
    """The info block, and whether one of its dateTimes is written with "+00:00"."""
    info = warning_pb2.WarningInfo()
    plus_zero = False
    for name, child in _children(elem):
        with found.checking(child):
            match name:
                case "language":
                    info.language = _text(child)
                case "category":
                    info.categories.append(_read_enum(child, _CATEGORY))
                case "event":
                    info.event = _text(child)
                case "responseType":
                    info.response_types.append(_read_enum(child, _RESPONSE_TYPE))
                case "urgency":
                    info.urgency = _read_enum(child, _URGENCY)
                case "severity":
                    info.severity = _read_enum(child, _SEVERITY)
                case "certainty":
                    info.certainty = _read_enum(child, _CERTAINTY)
                case "audience":
                    info.audience = _text(child)
                case "eventCode":
                    info.event_codes.append(_read_value_pair(child))
                case "effective" | "onset" | "expires":
                    seconds, offset, zero_plus = _read_datetime(child)
                    getattr(info, name).seconds = seconds
                    setattr(info, f"{name}_utc_offset_minutes", offset)
                    plus_zero |= zero_plus
                case "senderName":
                    info.sender_name = _text(child)
                case "headline":
                    info.headline = _text(child)
                case "description":
                    info.description = _text(child)
                case "instruction":
                    info.instruction = _text(child)
                case "web":
                    info.web = _text(child)
                case "contact":
                    info.contact = _text(child)
                case "parameter":
                    info.parameters.append(_read_value_pair(child))
                case "resource":
                    info.resources.append(_read_resource(child, found))
                case "area":
                    info.areas.append(_read_area(child, found))
    return info, plus_zero


def _read_resource(elem: etree._Element, found: _Problems) -> warning_pb2.WarningResource:
    resource = warning_pb2.WarningResource()
    for name, child in _children(elem):
        with found.checking(child):
            match name:
                case "resourceDesc":
                    resource.resource_desc = _text(child)
                case "mimeType":
                    resource.mime_type = _text(child)
                case "size":
                    size = int(_text(child))  # an xs:integer, checked by the schema
                    if not 0 <= size <= _MAX_UINT64:
                        raise CapError(
                            f"<size>: {size} is not a size in bytes", line=child.sourceline
                        )
                    resource.size = size
                case "uri":
                    resource.uri = _text(child)
                case "derefUri":
                    resource.deref_uri = _read_base64(child)
                case "digest":
                    resource.digest = _text(child)
    return resource


def _read_area(elem: etree._Element, found: _Problems) -> warning_pb2.WarningArea:
    area = warning_pb2.WarningArea()
    for name, child in _children(elem):
        with found.checking(child):
            match name:
                case "areaDesc":
                    area.area_desc = _text(child)
                case "polygon":
                    area.polygons.append(_read_polygon(child))
                case "circle":
                    area.circles.append(_read_circle(child))
                case "geocode":
                    area.geocodes.append(_read_value_pair(child))
                case "altitude":
                    area.altitude = _read_xs_decimal(child)
                case "ceiling":
                    if not area.HasField("altitude"):
                        raise CapError(
                            "<ceiling>: CAP allows <ceiling> only together with <altitude>",
                            line=child.sourceline,
                        )
                    area.ceiling = _read_xs_decimal(child)
    return area


def _read_value_pair(elem: etree._Element) -> warning_pb2.ValuePair:
    pair = warning_pb2.ValuePair()
    for name, child in _children(elem):
        if name == "valueName":
            pair.value_name = _text(child)
        elif name == "value":
            pair.value = _text(child)
    return pair


def _read_enum(elem: etree._Element, table: Mapping[str, _E]) -> _E:
    text = _text(elem)
    try:
        return table[text]
    except KeyError:  # the schema has the same lists; kept so the mapping stands on its own
        raise CapError(
            f"<{_local(elem.tag)}>: {_shorten(text)!r} is not one of {', '.join(table)}",
            line=elem.sourceline,
        ) from None


def _read_token(elem: etree._Element) -> str:
    text = _text(elem)
    problem = _token_problem(text)
    if problem:
        raise CapError(f"<{_local(elem.tag)}>: {_shorten(text)!r} {problem}", line=elem.sourceline)
    return text


def _token_problem(text: str) -> str:
    if not text:
        return "is empty"
    if _TOKEN_FORBIDDEN.intersection(text):
        return "contains a space, comma, '<' or '&', which CAP forbids"
    return ""


def _read_datetime(elem: etree._Element) -> tuple[int, int, bool]:
    """(seconds since the epoch, UTC offset in minutes, written "+00:00") of a CAP dateTime."""
    text = _text(elem)
    seconds, offset = _parse_datetime(text, _local(elem.tag), elem.sourceline)
    return seconds, offset, text.endswith("+00:00")


def _parse_datetime(text: str, name: str, line: int | None) -> tuple[int, int]:
    if not _CAP_DATETIME.fullmatch(text):
        raise _bad_datetime(name, text, line)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _bad_datetime(name, text, line, str(exc)) from None
    offset = moment.utcoffset()
    assert offset is not None  # the pattern requires one
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise _bad_datetime(name, text, line, "outside 0001-01-01 to 9999-12-31 UTC")
    return seconds, offset // timedelta(minutes=1)


def _read_references(elem: etree._Element) -> list[warning_pb2.CapReference]:
    references = []
    for triple in _XML_SPACE_RUN.split(_text(elem)):
        if not triple:
            continue
        parts = triple.split(",")
        if len(parts) != 3:
            raise CapError(
                f"<references>: {_shorten(triple)!r} is not a sender,identifier,sent triple",
                line=elem.sourceline,
            )
        sender, identifier, sent = parts
        for part in (sender, identifier):
            problem = _token_problem(part)
            if problem:
                raise CapError(
                    f"<references>: {_shorten(triple)!r}: {part!r} {problem}",
                    line=elem.sourceline,
                )
        seconds, offset = _parse_datetime(sent, "references", elem.sourceline)
        references.append(
            warning_pb2.CapReference(
                sender=sender,
                identifier=identifier,
                sent=Timestamp(seconds=seconds),
                sent_utc_offset_minutes=offset,
                sent_utc_plus_zero=sent.endswith("+00:00"),
            )
        )
    return references


def _read_list(elem: etree._Element) -> list[str]:
    """CAP `addresses` / `incidents`: space-separated, entries with spaces in double quotes."""
    text = _text(elem)
    entries: list[str] = []
    position = 0
    while position < len(text):
        match = _LIST_ENTRY.match(text, position)
        if match is None:
            raise CapError(
                f"<{_local(elem.tag)}>: unbalanced or misplaced double quote at character "
                f"{position + 1} of {_shorten(text)!r}",
                line=elem.sourceline,
            )
        quoted, bare = match.groups()
        entry = bare if bare is not None else quoted
        if not entry:
            raise CapError(f"<{_local(elem.tag)}>: empty quoted entry", line=elem.sourceline)
        entries.append(entry)
        position = match.end()
    return entries


def _read_base64(elem: etree._Element) -> bytes:
    try:
        return base64.b64decode(_XML_SPACE_RUN.sub("", _text(elem)), validate=True)
    except binascii.Error as exc:
        raise CapError(f"<derefUri>: not valid base64 ({exc})", line=elem.sourceline) from None


def _read_xs_decimal(elem: etree._Element) -> float:
    value = float(_text(elem))  # an xs:decimal, checked by the schema
    if not math.isfinite(value):
        raise CapError(f"<{_local(elem.tag)}>: out of range", line=elem.sourceline)
    return value


def _read_point(text: str, elem: etree._Element) -> common_pb2.GeoPoint:
    name = _local(elem.tag)
    latitude, comma, longitude = text.partition(",")
    if not comma or not _DECIMAL.fullmatch(latitude) or not _DECIMAL.fullmatch(longitude):
        raise CapError(
            f"<{name}>: {_shorten(text)!r} is not a 'latitude,longitude' pair of decimal degrees",
            line=elem.sourceline,
        )
    point = common_pb2.GeoPoint(latitude=float(latitude), longitude=float(longitude))
    problem = _point_problem(point)
    if problem:
        raise CapError(f"<{name}>: {text!r}: {problem}", line=elem.sourceline)
    return point


def _point_problem(point: common_pb2.GeoPoint) -> str:
    if not -90.0 <= point.latitude <= 90.0:
        return f"latitude {point.latitude} is outside -90..90 (CAP is 'latitude,longitude')"
    if not -180.0 <= point.longitude <= 180.0:
        return f"longitude {point.longitude} is outside -180..180"
    return ""


def _read_polygon(elem: etree._Element) -> common_pb2.Polygon:
    pairs = [pair for pair in _XML_SPACE_RUN.split(_text(elem)) if pair]
    polygon = common_pb2.Polygon(points=[_read_point(pair, elem) for pair in pairs])
    problem = _polygon_problem(polygon)
    if problem:
        raise CapError(f"<polygon>: {problem}", line=elem.sourceline)
    return polygon


def _polygon_problem(polygon: common_pb2.Polygon) -> str:
    points = polygon.points
    if len(points) < 4:
        return f"{len(points)} points; CAP requires a closed ring of at least 4"
    first, last = points[0], points[-1]
    if (first.latitude, first.longitude) != (last.latitude, last.longitude):
        return "not closed: CAP requires the last point to repeat the first"
    return ""


def _read_circle(elem: etree._Element) -> common_pb2.Circle:
    parts = [part for part in _XML_SPACE_RUN.split(_text(elem)) if part]
    if len(parts) != 2 or not _DECIMAL.fullmatch(parts[1]):
        raise CapError(
            f"<circle>: {_shorten(_text(elem))!r} is not 'latitude,longitude radius_km'",
            line=elem.sourceline,
        )
    radius = float(parts[1])
    if not 0.0 <= radius < math.inf:
        raise CapError(f"<circle>: radius {parts[1]} must be 0 or more km", line=elem.sourceline)
    return common_pb2.Circle(center=_read_point(parts[0], elem), radius_km=radius)


# ---------------------------------------------------------------------------------------------
# Writing


def to_cap_xml(warning: warning_pb2.Warning) -> bytes:
    """Write `warning` as a CAP 1.2 document (UTF-8), rendered from its fields.

    `cap_xml` is ignored: forwarding the received bytes verbatim is the caller's choice. Raises
    CapError, naming the field, for a Warning CAP cannot express (an unset required enum or
    `sent`, no category, an open polygon, a quote in an address, ...) and, as a safety net, if
    the document written fails the CAP 1.2 schema, which would be a bug here.
    """
    alert = _write_alert(warning)
    xml = etree.tostring(alert, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    problem = _schema_problem(_parse_xml(xml))
    if problem is not None:
        raise CapError(
            f"to_cap_xml wrote XML that the CAP 1.2 schema rejects (a codec bug): {problem}"
        )
    return xml


class _Writer:
    """Appends CAP elements under `parent`; `path` names the Warning field for error messages."""

    def __init__(self, parent: etree._Element, path: str) -> None:
        self.parent = parent
        self.path = path

    def add(self, name: str, text: str, field: str) -> etree._Element:
        elem = etree.SubElement(self.parent, f"{{{CAP_NAMESPACE}}}{name}")
        try:
            elem.text = text
        except ValueError as exc:  # lxml refuses characters XML 1.0 cannot carry
            raise CapError(f"{self.field(field)}: {exc}") from None
        return elem

    def optional(self, name: str, text: str, field: str) -> None:
        if text:
            self.add(name, text, field)

    def child(self, name: str, field: str) -> _Writer:
        return _Writer(etree.SubElement(self.parent, f"{{{CAP_NAMESPACE}}}{name}"), field)

    def field(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


def _write_alert(warning: warning_pb2.Warning) -> etree._Element:
    alert = etree.Element(f"{{{CAP_NAMESPACE}}}alert", nsmap={None: CAP_NAMESPACE})
    out = _Writer(alert, "")
    offset = warning.utc_offset_minutes
    out.add("identifier", _write_token(warning.identifier, "identifier"), "identifier")
    out.add("sender", _write_token(warning.sender, "sender"), "sender")
    if not warning.HasField("sent"):
        raise CapError("sent: not set; CAP requires <sent>")
    plus_zero = warning.utc_plus_zero
    out.add("sent", _format_datetime(warning.sent, offset, "sent", plus_zero), "sent")
    out.add("status", _write_enum(warning.status, _STATUS, "status"), "status")
    out.add("msgType", _write_enum(warning.msg_type, _MSG_TYPE, "msg_type"), "msg_type")
    out.optional("source", warning.source, "source")
    out.add("scope", _write_enum(warning.scope, _SCOPE, "scope"), "scope")
    out.optional("restriction", warning.restriction, "restriction")
    out.optional("addresses", _write_list(warning.addresses, "addresses"), "addresses")
    for index, code in enumerate(warning.codes):
        out.add("code", code, f"codes[{index}]")
    out.optional("note", warning.note, "note")
    out.optional("references", _write_references(warning.references), "references")
    out.optional("incidents", _write_list(warning.incidents, "incidents"), "incidents")
    for index, info in enumerate(warning.infos):
        _write_info(out.child("info", f"infos[{index}]"), info, offset, plus_zero)
    return alert


def _write_info(
    out: _Writer, info: warning_pb2.WarningInfo, alert_offset: int, plus_zero: bool
) -> None:
    if info.language and not _LANGUAGE.fullmatch(info.language):
        raise CapError(
            f"{out.field('language')}: {_shorten(info.language)!r} is not a language tag "
            "(xs:language, e.g. zh-CN)"
        )
    out.optional("language", info.language, "language")
    if not info.categories:
        raise CapError(f"{out.field('categories')}: empty; CAP requires at least one <category>")
    for index, category in enumerate(info.categories):
        field = f"categories[{index}]"
        out.add("category", _write_enum(category, _CATEGORY, out.field(field)), field)
    out.add("event", info.event, "event")
    for index, response in enumerate(info.response_types):
        field = f"response_types[{index}]"
        out.add("responseType", _write_enum(response, _RESPONSE_TYPE, out.field(field)), field)
    out.add("urgency", _write_enum(info.urgency, _URGENCY, out.field("urgency")), "urgency")
    out.add("severity", _write_enum(info.severity, _SEVERITY, out.field("severity")), "severity")
    out.add(
        "certainty", _write_enum(info.certainty, _CERTAINTY, out.field("certainty")), "certainty"
    )
    out.optional("audience", info.audience, "audience")
    for index, code in enumerate(info.event_codes):
        _write_value_pair(out.child("eventCode", out.field(f"event_codes[{index}]")), code)
    for name, offset_field in _INFO_TIMES:
        if info.HasField(name):
            offset = getattr(info, offset_field) if info.HasField(offset_field) else alert_offset
            when = _format_datetime(getattr(info, name), offset, out.field(name), plus_zero)
            out.add(name, when, name)
    out.optional("senderName", info.sender_name, "sender_name")
    out.optional("headline", info.headline, "headline")
    out.optional("description", info.description, "description")
    out.optional("instruction", info.instruction, "instruction")
    out.optional("web", info.web, "web")
    out.optional("contact", info.contact, "contact")
    for index, parameter in enumerate(info.parameters):
        _write_value_pair(out.child("parameter", out.field(f"parameters[{index}]")), parameter)
    for index, resource in enumerate(info.resources):
        _write_resource(out.child("resource", out.field(f"resources[{index}]")), resource)
    for index, area in enumerate(info.areas):
        _write_area(out.child("area", out.field(f"areas[{index}]")), area)


def _write_resource(out: _Writer, resource: warning_pb2.WarningResource) -> None:
    out.add("resourceDesc", resource.resource_desc, "resource_desc")
    out.add("mimeType", resource.mime_type, "mime_type")
    if resource.size:  # 0 means "not given" in the proto
        out.add("size", str(resource.size), "size")
    out.optional("uri", resource.uri, "uri")
    if resource.deref_uri:
        out.add("derefUri", base64.b64encode(resource.deref_uri).decode("ascii"), "deref_uri")
    out.optional("digest", resource.digest, "digest")


def _write_area(out: _Writer, area: warning_pb2.WarningArea) -> None:
    out.add("areaDesc", area.area_desc, "area_desc")
    for index, polygon in enumerate(area.polygons):
        field = f"polygons[{index}]"
        out.add("polygon", _format_polygon(polygon, out.field(field)), field)
    for index, circle in enumerate(area.circles):
        field = f"circles[{index}]"
        out.add("circle", _format_circle(circle, out.field(field)), field)
    for index, geocode in enumerate(area.geocodes):
        _write_value_pair(out.child("geocode", out.field(f"geocodes[{index}]")), geocode)
    if area.HasField("altitude"):
        out.add("altitude", _format_decimal(area.altitude, out.field("altitude")), "altitude")
    if area.HasField("ceiling"):
        if not area.HasField("altitude"):
            raise CapError(f"{out.field('ceiling')}: CAP allows a ceiling only with an altitude")
        out.add("ceiling", _format_decimal(area.ceiling, out.field("ceiling")), "ceiling")


def _write_value_pair(out: _Writer, pair: warning_pb2.ValuePair) -> None:
    out.add("valueName", pair.value_name, "value_name")
    out.add("value", pair.value, "value")


def _write_enum(value: int, table: Mapping[str, int], field: str) -> str:
    for text, number in table.items():
        if number == value:
            return text
    if value == 0:
        raise CapError(f"{field}: not set; CAP requires a value")
    raise CapError(f"{field}: {value} is not a known value")


def _write_token(text: str, field: str) -> str:
    problem = _token_problem(text)
    if problem:
        raise CapError(f"{field}: {_shorten(text)!r} {problem}")
    return text


def _format_datetime(
    when: Timestamp, offset_minutes: int, field: str, plus_zero: bool = False
) -> str:
    if not -_MAX_OFFSET_MINUTES <= offset_minutes <= _MAX_OFFSET_MINUTES:
        raise CapError(f"{field}: UTC offset {offset_minutes} min is outside -14:00..+14:00")
    zone = timezone(timedelta(minutes=offset_minutes))
    try:
        # Whole seconds: CAP dateTimes have no fractions, so sub-second parts are dropped.
        local = (_EPOCH + timedelta(seconds=when.seconds)).astimezone(zone)
    except OverflowError:
        raise CapError(f"{field}: {when.seconds} s is outside the years 1 to 9999") from None
    text = local.isoformat()
    # CAP writes UTC as "-00:00" ("Z" is forbidden); some issuers write "+00:00", kept if so.
    if offset_minutes == 0:
        return text[:-6] + ("+00:00" if plus_zero else "-00:00")
    return text


def _write_references(references: Iterable[warning_pb2.CapReference]) -> str:
    triples = []
    for index, reference in enumerate(references):
        field = f"references[{index}]"
        sender = _write_token(reference.sender, f"{field}.sender")
        identifier = _write_token(reference.identifier, f"{field}.identifier")
        if not reference.HasField("sent"):
            raise CapError(f"{field}.sent: not set; a CAP reference needs the sent time")
        sent = _format_datetime(
            reference.sent,
            reference.sent_utc_offset_minutes,
            f"{field}.sent",
            reference.sent_utc_plus_zero,
        )
        triples.append(f"{sender},{identifier},{sent}")
    return " ".join(triples)


def _write_list(entries: Iterable[str], field: str) -> str:
    written = []
    for index, entry in enumerate(entries):
        if not entry or '"' in entry:
            raise CapError(
                f"{field}[{index}]: {entry!r}: CAP cannot write an empty entry or one "
                "containing a double quote"
            )
        # Quote on any Unicode space, although XML whitespace alone separates entries when
        # reading: other readers may split more eagerly.
        written.append(f'"{entry}"' if any(c.isspace() for c in entry) else entry)
    return " ".join(written)


def _format_decimal(value: float, field: str) -> str:
    """Plain decimal notation (CAP and xs:decimal have no exponents) that reads back exactly."""
    if not math.isfinite(value):
        raise CapError(f"{field}: {value} is not a finite number")
    text = format(Decimal(repr(value)), "f")
    return text[:-2] if text.endswith(".0") else text


def _format_point(point: common_pb2.GeoPoint, field: str) -> str:
    problem = _point_problem(point)  # NaN fails the range checks too
    if problem:
        raise CapError(f"{field}: {problem}")
    return f"{_format_decimal(point.latitude, field)},{_format_decimal(point.longitude, field)}"


def _format_polygon(polygon: common_pb2.Polygon, field: str) -> str:
    pairs = [
        _format_point(point, f"{field}.points[{index}]")
        for index, point in enumerate(polygon.points)
    ]
    problem = _polygon_problem(polygon)
    if problem:
        raise CapError(f"{field}: {problem}")
    return " ".join(pairs)


def _format_circle(circle: common_pb2.Circle, field: str) -> str:
    if not circle.HasField("center"):
        raise CapError(f"{field}.center: not set; a CAP circle needs its centre")
    if not 0.0 <= circle.radius_km < math.inf:
        raise CapError(f"{field}.radius_km: {circle.radius_km} must be 0 or more km")
    center = _format_point(circle.center, f"{field}.center")
    return f"{center} {_format_decimal(circle.radius_km, f'{field}.radius_km')}"
