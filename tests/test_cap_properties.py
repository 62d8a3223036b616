"""Property: any valid CAP 1.2 document, built at random from the schema's structure (optional
elements present or not, repeated elements 0..n times, every enumeration value, Unicode text,
any offset, numbers and base64 spelt in any legal way, a prefix or none, several encodings),
round-trips through the codec: its export is schema-valid and means the same."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from dutylink.adapters.cap import codec
from dutylink.adapters.cap.codec import CAP_NAMESPACE, parse_cap, to_cap_xml
from dutylink.adapters.cap.compare import cap_differences

XSD = Path(codec.__file__).parent / "schema" / "CAP-v1.2.xsd"
SCHEMA = etree.XMLSchema(etree.parse(str(XSD)))  # libxml2's validator: independent of the codec

# Text CAP can carry: no control characters or surrogates; spaces inside, not only.
_TEXT_CHARS = st.characters(
    categories=["L", "N", "P", "S", "Zs"], exclude_characters='"', max_codepoint=0x2FFFF
)
_TOKEN_CHARS = st.characters(
    categories=["L", "N", "Pd", "Po"], exclude_characters=',<&"', max_codepoint=0xFFFF
)


def text(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(_TEXT_CHARS | st.just("\n"), min_size=min_size, max_size=max_size)


def token() -> st.SearchStrategy[str]:
    return st.text(_TOKEN_CHARS, min_size=1, max_size=16)


@st.composite
def cap_datetime(draw: st.DrawFn) -> str:
    moment = draw(
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31))
    ).replace(microsecond=0)
    minutes = draw(st.integers(-14 * 4, 14 * 4)) * 15
    local = moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=minutes)))
    written = local.isoformat()
    if minutes == 0:
        written = written[:-6] + draw(st.sampled_from(["-00:00", "+00:00"]))
    return written


@st.composite
def decimal_text(draw: st.DrawFn, low: int, high: int) -> str:
    """A decimal in low..high, spelt in any xs:decimal way ("+1.50", "1.5", "-0", "7")."""
    units = draw(st.integers(low * 10_000, high * 10_000))
    sign = "-" if units < 0 else draw(st.sampled_from(["", "+"]))
    whole, fraction = divmod(abs(units), 10_000)
    digits = f"{fraction:04d}" + "0" * draw(st.integers(0, 2))
    if fraction == 0 and draw(st.booleans()):
        return f"{sign}{whole}"
    return f"{sign}{whole}.{digits}"


@st.composite
def point(draw: st.DrawFn) -> str:
    return f"{draw(decimal_text(-90, 90))},{draw(decimal_text(-180, 180))}"


@st.composite
def polygon(draw: st.DrawFn) -> str:
    points = draw(st.lists(point(), min_size=3, max_size=6))
    separator = draw(st.sampled_from([" ", "\n  ", "  "]))
    return separator.join([*points, points[0]])


@st.composite
def base64_text(draw: st.DrawFn) -> tuple[str, bytes]:
    data = draw(st.binary(min_size=1, max_size=120))
    encoded = base64.b64encode(data).decode("ascii")
    width = draw(st.sampled_from([0, 4, 64, 76]))
    if width:
        encoded = "\n".join(encoded[i : i + width] for i in range(0, len(encoded), width))
    return encoded, data


def list_entries() -> st.SearchStrategy[str]:
    entries = st.lists(token() | text(1, 12).filter(lambda t: t.strip(" \t\r\n") == t and t), min_size=1, max_size=4)  # fmt: skip
    return entries.map(lambda items: " ".join(f'"{e}"' if " " in e or not e.isprintable() else e for e in items))  # fmt: skip


class Builder:
    """Appends CAP elements to a tree with the document's namespace prefix (or none)."""

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix
        self.root = etree.Element(f"{{{CAP_NAMESPACE}}}alert", nsmap={prefix: CAP_NAMESPACE})

    def add(self, parent: etree._Element, name: str, value: str | None = None) -> etree._Element:
        elem = etree.SubElement(parent, f"{{{CAP_NAMESPACE}}}{name}")
        if value is not None:
            elem.text = value
        return elem


def maybe(draw: st.DrawFn, builder: Builder, parent: etree._Element, name: str, value: st.SearchStrategy[str]) -> None:  # fmt: skip
    if draw(st.booleans()):
        builder.add(parent, name, draw(value))


def pairs(draw: st.DrawFn, b: Builder, parent: etree._Element, name: str, most: int) -> None:
    for _ in range(draw(st.integers(0, most))):
        pair = b.add(parent, name)
        b.add(pair, "valueName", draw(text(1, 12)))
        b.add(pair, "value", draw(text(0, 12)))


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    b = Builder(draw(st.sampled_from([None, "cap"])))
    alert = b.root
    b.add(alert, "identifier", draw(token()))
    b.add(alert, "sender", draw(token()))
    b.add(alert, "sent", draw(cap_datetime()))
    b.add(alert, "status", draw(st.sampled_from(list(codec._STATUS))))
    b.add(alert, "msgType", draw(st.sampled_from(list(codec._MSG_TYPE))))
    maybe(draw, b, alert, "source", text())
    b.add(alert, "scope", draw(st.sampled_from(list(codec._SCOPE))))
    maybe(draw, b, alert, "restriction", text())
    maybe(draw, b, alert, "addresses", list_entries())
    for _ in range(draw(st.integers(0, 2))):
        b.add(alert, "code", draw(text(1)))
    maybe(draw, b, alert, "note", text())
    if draw(st.booleans()):
        triples = st.tuples(token(), token(), cap_datetime()).map(",".join)
        b.add(alert, "references", " ".join(draw(st.lists(triples, min_size=1, max_size=3))))
    maybe(draw, b, alert, "incidents", list_entries())
    for _ in range(draw(st.integers(0, 2))):
        info = b.add(alert, "info")
        maybe(draw, b, info, "language", st.from_regex(r"[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8}){0,2}", fullmatch=True))  # fmt: skip
        for category in draw(st.lists(st.sampled_from(list(codec._CATEGORY)), min_size=1, max_size=3)):  # fmt: skip
            b.add(info, "category", category)
        b.add(info, "event", draw(text(1)))
        for response in draw(st.lists(st.sampled_from(list(codec._RESPONSE_TYPE)), max_size=2)):
            b.add(info, "responseType", response)
        b.add(info, "urgency", draw(st.sampled_from(list(codec._URGENCY))))
        b.add(info, "severity", draw(st.sampled_from(list(codec._SEVERITY))))
        b.add(info, "certainty", draw(st.sampled_from(list(codec._CERTAINTY))))
        maybe(draw, b, info, "audience", text())
        pairs(draw, b, info, "eventCode", 2)
        for name in ("effective", "onset", "expires"):
            maybe(draw, b, info, name, cap_datetime())
        for name in ("senderName", "headline", "description", "instruction"):
            maybe(draw, b, info, name, text(0, 60 if name == "description" else 12))
        maybe(draw, b, info, "web", st.sampled_from(["https://example.org/a?b=c", "urn:x:1"]))
        maybe(draw, b, info, "contact", text())
        pairs(draw, b, info, "parameter", 2)
        for _ in range(draw(st.integers(0, 2))):
            resource = b.add(info, "resource")
            b.add(resource, "resourceDesc", draw(text(1)))
            b.add(resource, "mimeType", draw(st.sampled_from(["image/png", "audio/mpeg"])))
            maybe(draw, b, resource, "size", st.integers(1, 2**64 - 1).map(str))
            maybe(draw, b, resource, "uri", st.sampled_from(["map.png", "https://x.example/a"]))
            if draw(st.booleans()):
                b.add(resource, "derefUri", draw(base64_text())[0])
            maybe(draw, b, resource, "digest", st.from_regex(r"[0-9a-f]{40}", fullmatch=True))
        for _ in range(draw(st.integers(0, 2))):
            area = b.add(info, "area")
            b.add(area, "areaDesc", draw(text(1)))
            for _ in range(draw(st.integers(0, 2))):
                b.add(area, "polygon", draw(polygon()))
            for _ in range(draw(st.integers(0, 2))):
                b.add(area, "circle", f"{draw(point())} {draw(decimal_text(0, 500))}")
            pairs(draw, b, area, "geocode", 2)
            if draw(st.booleans()):
                b.add(area, "altitude", draw(decimal_text(-1000, 60000)))
                maybe(draw, b, area, "ceiling", decimal_text(-1000, 60000))
    encoding = draw(st.sampled_from(["UTF-8", "ISO-8859-1", "UTF-16"]))
    return etree.tostring(
        alert, xml_declaration=True, encoding=encoding, pretty_print=draw(st.booleans())
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_valid_document_round_trips_in_meaning(document: bytes) -> None:
    schema = SCHEMA
    assert schema.validate(etree.fromstring(document)), schema.error_log  # the generator's check
    warning = parse_cap(document)
    exported = to_cap_xml(warning)
    assert schema.validate(etree.fromstring(exported)), schema.error_log
    assert cap_differences(document, exported) == []
