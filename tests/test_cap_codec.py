"""CAP 1.2 codec: golden tests over the samples, round-trip properties, and refusals of hostile or
invalid input (entity bombs, external entities and DTDs, oversize, non-CAP, schema violations)."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from dutylink.adapters.cap import codec
from dutylink.adapters.cap.codec import (
    CAP_NAMESPACE,
    MAX_CAP_BYTES,
    CapError,
    parse_cap,
    to_cap_xml,
)
from dutylink.v1 import common_pb2, warning_pb2
from gateway.core.validation import Validator

SAMPLES = Path(codec.__file__).parent / "samples"
SAMPLE_FILES = sorted(SAMPLES.glob("*.xml"))
THUNDERSTORM = (SAMPLES / "cap-1.2-example-2-severe-thunderstorm-warning.xml").read_bytes()
XML_SPACE = " \t\r\n"
E = TypeVar("E", bound=int)


def sample(name: str) -> warning_pb2.Warning:
    return parse_cap((SAMPLES / name).read_bytes())


def without_cap_xml(warning: warning_pb2.Warning) -> warning_pb2.Warning:
    copy = warning_pb2.Warning()
    copy.CopyFrom(warning)
    copy.ClearField("cap_xml")
    return copy


def at(text: str) -> Timestamp:
    """The instant of an ISO 8601 dateTime with offset, as a Timestamp."""
    return Timestamp(seconds=int(datetime.fromisoformat(text).timestamp()))


def line_of(document: bytes, needle: bytes) -> int:
    return document[: document.index(needle)].count(b"\n") + 1


# ---------------------------------------------------------------------------------------------
# Canonical form of a CAP document, for comparing an export with the original: element order and
# values, with text stripped of layout whitespace, dateTimes as (instant, offset), lists split
# with CAP's quoting (by shlex, independently of the codec), numbers as numbers, base64 decoded.


def canonical(elem: etree._Element) -> tuple[object, ...]:
    name = etree.QName(elem).localname
    children = [child for child in elem if isinstance(child.tag, str)]
    if children:
        return (name, tuple(canonical(child) for child in children))
    return (name, canonical_value(name, (elem.text or "").strip(XML_SPACE)))


def instant(text: str) -> tuple[datetime, timedelta | None]:
    moment = datetime.fromisoformat(text)
    return moment, moment.utcoffset()


def canonical_value(name: str, text: str) -> object:
    if name in ("sent", "effective", "onset", "expires"):
        return instant(text)
    if name == "references":
        return tuple(
            (sender, identifier, *instant(sent))
            for sender, identifier, sent in (triple.split(",") for triple in text.split())
        )
    if name in ("addresses", "incidents"):
        lexer = shlex.shlex(text, posix=True)
        lexer.whitespace_split, lexer.quotes, lexer.escape, lexer.commenters = True, '"', "", ""
        return tuple(lexer)
    if name == "polygon":
        return tuple(tuple(float(x) for x in pair.split(",")) for pair in text.split())
    if name == "circle":
        center, radius = text.split()
        return tuple(float(x) for x in center.split(",")), float(radius)
    if name in ("altitude", "ceiling", "size"):
        return Decimal(text)
    if name == "derefUri":
        return base64.b64decode("".join(text.split()))
    return text


def canonical_document(data: bytes) -> tuple[object, ...]:
    return canonical(etree.fromstring(data, etree.XMLParser(remove_comments=True)))


# ---------------------------------------------------------------------------------------------
# Golden tests over the samples


def test_samples_are_the_four_spec_examples_and_the_two_dutylink_ones() -> None:
    assert [path.name for path in SAMPLE_FILES] == [
        "cap-1.2-example-1-homeland-security-advisory.xml",
        "cap-1.2-example-2-severe-thunderstorm-warning.xml",
        "cap-1.2-example-3-earthquake-report-update.xml",
        "cap-1.2-example-4-amber-alert-multilingual.xml",
        "dutylink-rainstorm-orange-alert.xml",
        "dutylink-rainstorm-orange-update.xml",
    ]


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_sample_exports_to_equivalent_xml(path: Path) -> None:
    original = path.read_bytes()
    exported = to_cap_xml(parse_cap(original))
    assert canonical_document(exported) == canonical_document(original)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_sample_round_trips_and_keeps_the_received_bytes(path: Path) -> None:
    original = path.read_bytes()
    warning = parse_cap(original)
    assert warning.cap_xml == original
    again = parse_cap(to_cap_xml(warning))
    assert without_cap_xml(again) == without_cap_xml(warning)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_sample_satisfies_the_dutylink_warning_rules(path: Path) -> None:
    assert Validator().problems(parse_cap(path.read_bytes())) == []


def test_homeland_security_advisory_maps_alert_info_parameter_and_resource() -> None:
    warning = sample("cap-1.2-example-1-homeland-security-advisory.xml")
    assert warning.identifier == "43b080713727"
    assert warning.sender == "hsas@dhs.gov"
    assert warning.sent == at("2003-04-02T14:39:01-05:00")
    assert warning.utc_offset_minutes == -300
    assert (warning.status, warning.msg_type, warning.scope) == (
        warning_pb2.CAP_STATUS_ACTUAL,
        warning_pb2.CAP_MSG_TYPE_ALERT,
        warning_pb2.CAP_SCOPE_PUBLIC,
    )
    (info,) = warning.infos
    assert info.language == ""  # absent: CAP's default en-US, not written back
    assert list(info.categories) == [warning_pb2.CAP_CATEGORY_SECURITY]
    assert (info.urgency, info.severity, info.certainty) == (
        warning_pb2.CAP_URGENCY_IMMEDIATE,
        warning_pb2.CAP_SEVERITY_SEVERE,
        warning_pb2.CAP_CERTAINTY_LIKELY,
    )
    assert info.instruction.startswith("A High Condition is declared")  # leading space stripped
    assert info.web == "http://www.dhs.gov/dhspublic/display?theme=29"
    assert list(info.parameters) == [warning_pb2.ValuePair(value_name="HSAS", value="ORANGE")]
    assert list(info.resources) == [
        warning_pb2.WarningResource(
            resource_desc="Image file (GIF)",
            mime_type="image/gif",
            uri="http://www.dhs.gov/dhspublic/getAdvisoryImage",
        )
    ]
    assert info.areas[0].area_desc == "U.S. nationwide and interests worldwide"


def test_thunderstorm_warning_maps_polygon_geocodes_and_expiry() -> None:
    warning = sample("cap-1.2-example-2-severe-thunderstorm-warning.xml")
    (info,) = warning.infos
    assert list(info.response_types) == [warning_pb2.CAP_RESPONSE_TYPE_SHELTER]
    assert list(info.event_codes) == [warning_pb2.ValuePair(value_name="SAME", value="SVR")]
    assert not info.HasField("effective") and not info.HasField("onset")
    assert info.expires == at("2003-06-17T16:00:00-07:00")
    (area,) = info.areas
    (polygon,) = area.polygons
    assert [(p.latitude, p.longitude) for p in polygon.points] == [
        (38.47, -120.14),
        (38.34, -119.95),
        (38.52, -119.74),
        (38.62, -119.89),
        (38.47, -120.14),
    ]
    assert [(g.value_name, g.value) for g in area.geocodes] == [
        ("SAME", "006109"),
        ("SAME", "006009"),
        ("SAME", "006003"),
    ]
    assert not area.HasField("altitude") and not area.HasField("ceiling")


def test_earthquake_update_maps_references_circle_and_parameters() -> None:
    warning = sample("cap-1.2-example-3-earthquake-report-update.xml")
    assert warning.msg_type == warning_pb2.CAP_MSG_TYPE_UPDATE
    assert list(warning.references) == [
        warning_pb2.CapReference(
            sender="trinet@caltech.edu",
            identifier="TRI13970876.1",
            sent=at("2003-06-11T20:30:00-07:00"),
            sent_utc_offset_minutes=-420,
        )
    ]
    (info,) = warning.infos
    assert [(p.value_name, p.value) for p in info.parameters][2:4] == [
        ("Magnitude", "3.4 Ml"),
        ("Depth", "11.8 mi."),
    ]
    assert list(info.areas[0].circles) == [
        common_pb2.Circle(
            center=common_pb2.GeoPoint(latitude=32.9525, longitude=-115.5527), radius_km=0.0
        )
    ]


def test_amber_alert_keeps_both_language_blocks() -> None:
    warning = sample("cap-1.2-example-4-amber-alert-multilingual.xml")
    assert warning.source == "SW"
    assert [info.language for info in warning.infos] == ["en-US", "es-US"]
    assert warning.infos[1].event == "Abducción de Niño"
    assert warning.infos[1].areas[0].area_desc == "condado de Los Ángeles"


def test_rainstorm_warning_maps_chinese_and_english_blocks_polygon_and_geocodes() -> None:
    warning = sample("dutylink-rainstorm-orange-alert.xml")
    assert warning.utc_offset_minutes == 480
    assert warning.sent == at("2026-07-14T08:00:00+00:00")
    assert [info.language for info in warning.infos] == ["zh-CN", "en-US"]
    zh, en = warning.infos
    assert zh.headline == "上海中心气象台发布暴雨橙色预警"
    assert (zh.event, en.event) == ("暴雨", "Rainstorm")
    assert zh.effective == at("2026-07-14T16:00:00+08:00")
    assert zh.onset == at("2026-07-14T16:30:00+08:00")
    assert zh.expires == at("2026-07-14T22:00:00+08:00")
    assert list(zh.parameters) == [warning_pb2.ValuePair(value_name="预警级别", value="橙色")]
    polygon_area, district_area = zh.areas
    assert polygon_area.area_desc == "中心城区"
    assert len(polygon_area.polygons[0].points) == 6 and not polygon_area.geocodes
    assert [(g.value_name, g.value) for g in district_area.geocodes] == [
        ("GB/T 2260", "310115"),
        ("GB/T 2260", "310112"),
    ]
    exported = to_cap_xml(warning)
    assert b"<sent>2026-07-14T16:00:00+08:00</sent>" in exported
    assert b"<expires>2026-07-14T22:00:00+08:00</expires>" in exported


def test_rainstorm_update_references_the_warning_it_updates() -> None:
    alert = sample("dutylink-rainstorm-orange-alert.xml")
    update = sample("dutylink-rainstorm-orange-update.xml")
    assert update.msg_type == warning_pb2.CAP_MSG_TYPE_UPDATE
    (reference,) = update.references
    assert (reference.sender, reference.identifier, reference.sent) == (
        alert.sender,
        alert.identifier,
        alert.sent,
    )
    assert reference.sent_utc_offset_minutes == alert.utc_offset_minutes == 480
    assert list(update.incidents) == ["DL-INC-20260714-0042", "SH flood season 2026"]


def test_rainstorm_update_carries_its_guidance_inline_with_size_and_digest() -> None:
    (resource,) = sample("dutylink-rainstorm-orange-update.xml").infos[0].resources
    assert resource.deref_uri.decode("utf-8").startswith("暴雨橙色预警防御指南")
    assert resource.size == len(resource.deref_uri) == 184
    assert resource.digest == hashlib.sha1(resource.deref_uri).hexdigest()
    assert resource.uri == "guidance-zh.txt"
    assert resource.mime_type == "text/plain; charset=utf-8"


# ---------------------------------------------------------------------------------------------
# Writing


def minimal_warning(**fields: object) -> warning_pb2.Warning:
    warning = warning_pb2.Warning(
        identifier="w-1",
        sender="met@sh.dutylink.example",
        sent=at("2026-07-14T16:00:00+08:00"),
        status=warning_pb2.CAP_STATUS_ACTUAL,
        msg_type=warning_pb2.CAP_MSG_TYPE_ALERT,
        scope=warning_pb2.CAP_SCOPE_PUBLIC,
        utc_offset_minutes=480,
        infos=[
            warning_pb2.WarningInfo(
                categories=[warning_pb2.CAP_CATEGORY_MET],
                event="暴雨",
                urgency=warning_pb2.CAP_URGENCY_EXPECTED,
                severity=warning_pb2.CAP_SEVERITY_SEVERE,
                certainty=warning_pb2.CAP_CERTAINTY_LIKELY,
                areas=[warning_pb2.WarningArea(area_desc="浦东新区")],
            )
        ],
    )
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(warning, name).extend(value)
        else:
            setattr(warning, name, value)
    return warning


def test_export_renders_the_fields_not_the_received_bytes() -> None:
    warning = sample("cap-1.2-example-1-homeland-security-advisory.xml")
    warning.infos[0].headline = "Homeland Security Sets Code YELLOW"
    exported = to_cap_xml(warning)
    assert b"<headline>Homeland Security Sets Code YELLOW</headline>" in exported
    assert b"ORANGE</headline>" not in exported
    assert b"Copyright OASIS" not in exported  # nothing copied from cap_xml


def test_export_is_utf8_cap_1_2_with_an_xml_declaration() -> None:
    exported = to_cap_xml(minimal_warning())
    assert exported.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<alert xmlns=")
    root = etree.fromstring(exported)
    assert root.tag == f"{{{CAP_NAMESPACE}}}alert"
    assert "暴雨".encode() in exported


def test_export_writes_utc_as_minus_zero_and_drops_fractions() -> None:
    warning = minimal_warning(utc_offset_minutes=0)
    warning.sent.nanos = 999_999_999
    exported = to_cap_xml(warning)
    assert b"<sent>2026-07-14T08:00:00-00:00</sent>" in exported
    assert parse_cap(exported).sent == at("2026-07-14T08:00:00+00:00")


def test_plus_zero_offset_reads_as_utc_and_is_written_back_as_plus_zero() -> None:
    document = THUNDERSTORM.replace(b"2003-06-17T14:57:00-07:00", b"2003-06-17T21:57:00+00:00")
    warning = parse_cap(document)
    assert warning.utc_offset_minutes == 0
    assert warning.utc_plus_zero
    assert warning.sent == at("2003-06-17T14:57:00-07:00")
    assert b"<sent>2003-06-17T21:57:00+00:00</sent>" in to_cap_xml(warning)
    assert not parse_cap(THUNDERSTORM).utc_plus_zero


def test_info_dates_keep_their_own_offsets() -> None:
    document = THUNDERSTORM.replace(
        b"<expires>2003-06-17T16:00:00-07:00", b"<expires>2003-06-17T23:00:00-00:00"
    ).replace(b"<expires>", b"<onset>2003-06-17T14:57:00-07:00</onset><expires>")
    warning = parse_cap(document)
    info = warning.infos[0]
    assert info.expires_utc_offset_minutes == 0
    assert not info.HasField("onset_utc_offset_minutes")  # the alert's own offset: not repeated
    assert info.expires == at("2003-06-17T16:00:00-07:00")
    exported = to_cap_xml(warning)
    assert b"<expires>2003-06-17T23:00:00-00:00</expires>" in exported
    assert b"<onset>2003-06-17T14:57:00-07:00</onset>" in exported


def test_references_keep_the_plus_zero_form() -> None:
    document = swap(
        b"<scope>Public</scope>",
        b"<scope>Public</scope><references>a,b,2003-06-17T14:57:00+00:00 "
        b"a,c,2003-06-17T14:57:00-00:00</references>",
    )
    warning = parse_cap(document)
    assert [r.sent_utc_plus_zero for r in warning.references] == [True, False]
    assert (
        b"<references>a,b,2003-06-17T14:57:00+00:00 a,c,2003-06-17T14:57:00-00:00</references>"
        in to_cap_xml(warning)
    )


def test_addresses_and_incidents_with_spaces_are_double_quoted() -> None:
    warning = minimal_warning(
        scope=warning_pb2.CAP_SCOPE_PRIVATE,
        addresses=["fire", "Pudong duty office", "公安　指挥中心"],
        incidents=["DL-1", "flood season"],
    )
    exported = to_cap_xml(warning)
    assert '<addresses>fire "Pudong duty office" "公安　指挥中心"</addresses>'.encode() in exported
    assert b'<incidents>DL-1 "flood season"</incidents>' in exported
    parsed = parse_cap(exported)
    assert list(parsed.addresses) == ["fire", "Pudong duty office", "公安　指挥中心"]
    assert list(parsed.incidents) == ["DL-1", "flood season"]


def test_quoted_addresses_are_read_whatever_the_separating_whitespace() -> None:
    document = THUNDERSTORM.replace(
        b"<scope>Public</scope>",
        b'<scope>Private</scope>\n  <addresses>\n  a@x\t"b c"  d\n</addresses>',
    )
    assert list(parse_cap(document).addresses) == ["a@x", "b c", "d"]


def test_altitude_ceiling_and_numbers_are_written_as_plain_decimals() -> None:
    warning = minimal_warning()
    area = warning.infos[0].areas[0]
    area.altitude, area.ceiling = 0.00001, 1e16
    area.circles.add(center=common_pb2.GeoPoint(latitude=31.2, longitude=121.5), radius_km=2.5)
    exported = to_cap_xml(warning)
    assert b"<altitude>0.00001</altitude>" in exported
    assert b"<ceiling>10000000000000000</ceiling>" in exported
    assert b"<circle>31.2,121.5 2.5</circle>" in exported
    assert without_cap_xml(parse_cap(exported)) == warning


def test_gb18030_document_reads_like_its_utf8_original_and_exports_as_utf8() -> None:
    original = (SAMPLES / "dutylink-rainstorm-orange-alert.xml").read_bytes()
    gb18030 = original.decode().replace('"UTF-8"', '"GB18030"').encode("gb18030")
    assert gb18030 != original
    warning = parse_cap(gb18030)
    assert warning.cap_xml == gb18030  # as received, for signatures
    assert without_cap_xml(warning) == without_cap_xml(parse_cap(original))
    assert to_cap_xml(warning) == to_cap_xml(parse_cap(original))


def test_xml_signature_is_accepted_and_left_to_cap_xml() -> None:
    signature = (
        b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/>'
        b"<SignatureValue>AAAA</SignatureValue></Signature>\n</alert>"
    )
    document = THUNDERSTORM.replace(b"</alert>", signature)
    warning = parse_cap(document)
    assert warning.cap_xml == document
    assert b"Signature" not in to_cap_xml(warning)


def _set_area(**fields: object) -> Callable[[warning_pb2.Warning], None]:
    def change(warning: warning_pb2.Warning) -> None:
        area = warning.infos[0].areas[0]
        for name, value in fields.items():
            if isinstance(value, list):
                getattr(area, name).extend(value)
            else:
                setattr(area, name, value)

    return change


def _open_ring() -> list[common_pb2.Polygon]:
    corners = [(31.3, 121.4), (31.3, 121.5), (31.2, 121.5), (31.2, 121.4)]
    return [
        common_pb2.Polygon(
            points=[common_pb2.GeoPoint(latitude=a, longitude=b) for a, b in corners]
        )
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.ClearField("status"), "status: not set; CAP requires a value"),
        (lambda w: w.ClearField("sent"), "sent: not set; CAP requires <sent>"),
        (lambda w: w.infos[0].ClearField("urgency"), "infos[0].urgency: not set"),
        (lambda w: w.infos[0].ClearField("categories"), "infos[0].categories: empty"),
        (
            lambda w: setattr(w.infos[0], "language", "zh_CN"),
            "infos[0].language: 'zh_CN' is not a language tag",
        ),
        (lambda w: setattr(w, "identifier", "w 1"), "identifier: 'w 1' contains a space"),
        (lambda w: setattr(w, "sender", ""), "sender: '' is empty"),
        (lambda w: setattr(w, "utc_offset_minutes", 900), "sent: UTC offset 900 min"),
        (lambda w: setattr(w.infos[0], "headline", "a\x00b"), "infos[0].headline: All strings"),
        (lambda w: w.addresses.append('say "hi"'), "addresses[0]: 'say \"hi\"'"),
        (lambda w: w.incidents.append(""), "incidents[0]: ''"),
        (lambda w: w.references.add(sender="a", identifier="b"), "references[0].sent: not set"),
        (_set_area(polygons=_open_ring()), "infos[0].areas[0].polygons[0]: not closed"),
        (_set_area(ceiling=10.0), "infos[0].areas[0].ceiling: CAP allows a ceiling only"),
        (_set_area(altitude=float("inf")), "infos[0].areas[0].altitude: inf is not a finite"),
        (
            _set_area(circles=[common_pb2.Circle(center=common_pb2.GeoPoint(latitude=91))]),
            "infos[0].areas[0].circles[0].center: latitude 91.0 is outside -90..90",
        ),
    ],
)
def test_export_refuses_what_cap_cannot_express_naming_the_field(
    change: Callable[[warning_pb2.Warning], None], message: str
) -> None:
    warning = minimal_warning()
    change(warning)
    with pytest.raises(CapError, match="^" + re.escape(message)):
        to_cap_xml(warning)


def test_export_that_fails_the_schema_is_reported_as_a_codec_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(warning: warning_pb2.Warning) -> etree._Element:
        alert = etree.Element(f"{{{CAP_NAMESPACE}}}alert", nsmap={None: CAP_NAMESPACE})
        etree.SubElement(alert, f"{{{CAP_NAMESPACE}}}identifier").text = warning.identifier
        return alert

    monkeypatch.setattr(codec, "_write_alert", broken)
    with pytest.raises(
        CapError, match=r"a codec bug\): line 2: <alert>: incomplete: missing <sender>$"
    ):
        to_cap_xml(minimal_warning())


# ---------------------------------------------------------------------------------------------
# Round-trip properties

XML_SAFE = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc", "Cn"), include_characters="\t\n\r"
)
TOKEN_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc", "Cn", "Zs", "Zl", "Zp"), exclude_characters=",<&"
)
ENTRY_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cs", "Cc", "Cn"),
    include_characters="\t\n\r",
    exclude_characters='"',
)
# Years 2 to 9998, so that every UTC offset keeps the local time within 0001..9999.
SECONDS = st.integers(
    int(datetime(2, 1, 1, tzinfo=UTC).timestamp()),
    int(datetime(9998, 12, 31, tzinfo=UTC).timestamp()),
)
OFFSETS = st.integers(-720, 840)  # the proto's range for utc_offset_minutes
URIS = st.sampled_from(
    ["https://met.sh.dutylink.example/w/1", "http://example.com/a?b=c&d=e", "urn:x:y", "map.png"]
)


def texts(*, min_size: int = 0, max_size: int = 30) -> st.SearchStrategy[str]:
    """Text CAP carries exactly: XML 1.0 characters, no leading or trailing XML whitespace (which
    the parser strips as layout)."""
    return (
        st.text(XML_SAFE, min_size=min_size, max_size=max_size)
        .map(lambda s: s.strip(XML_SPACE))
        .filter(lambda s: len(s) >= min_size)
    )


tokens = st.text(TOKEN_CHARS, min_size=1, max_size=20)
entries = st.text(ENTRY_CHARS, min_size=1, max_size=20)


def timestamps() -> st.SearchStrategy[Timestamp]:
    return SECONDS.map(lambda seconds: Timestamp(seconds=seconds))


def enums(table: Mapping[str, E]) -> st.SearchStrategy[E]:
    return st.sampled_from(sorted(table.values()))


points = st.builds(
    common_pb2.GeoPoint,
    latitude=st.floats(-90, 90, allow_nan=False),
    longitude=st.floats(-180, 180, allow_nan=False),
)
polygons = st.lists(points, min_size=3, max_size=6).map(
    lambda ring: common_pb2.Polygon(points=[*ring, ring[0]])
)
circles = st.builds(
    common_pb2.Circle, center=points, radius_km=st.floats(0, 20038, allow_nan=False)
)
value_pairs = st.builds(warning_pb2.ValuePair, value_name=texts(), value=texts())


@st.composite
def areas(draw: st.DrawFn) -> warning_pb2.WarningArea:
    area = warning_pb2.WarningArea(
        area_desc=draw(texts()),
        polygons=draw(st.lists(polygons, max_size=2)),
        circles=draw(st.lists(circles, max_size=2)),
        geocodes=draw(st.lists(value_pairs, max_size=3)),
    )
    finite = st.floats(allow_nan=False, allow_infinity=False)
    altitude = draw(st.none() | finite)
    if altitude is not None:
        area.altitude = altitude
        ceiling = draw(st.none() | finite)
        if ceiling is not None:
            area.ceiling = ceiling
    return area


resources_ = st.builds(
    warning_pb2.WarningResource,
    resource_desc=texts(),
    mime_type=st.sampled_from(["image/png", "text/plain; charset=utf-8", "application/pdf"]),
    size=st.integers(0, 2**64 - 1),
    uri=st.just("") | URIS,
    deref_uri=st.binary(max_size=64),
    digest=st.just("") | st.binary(min_size=20, max_size=20).map(bytes.hex),
)


@st.composite
def infos(draw: st.DrawFn) -> warning_pb2.WarningInfo:
    info = warning_pb2.WarningInfo(
        language=draw(
            st.sampled_from(["", "en-US", "zh-CN", "es-US"])
            | st.from_regex(r"[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8}){0,2}", fullmatch=True)
        ),
        categories=draw(st.lists(enums(codec._CATEGORY), min_size=1, max_size=3)),
        event=draw(texts()),
        response_types=draw(st.lists(enums(codec._RESPONSE_TYPE), max_size=2)),
        urgency=draw(enums(codec._URGENCY)),
        severity=draw(enums(codec._SEVERITY)),
        certainty=draw(enums(codec._CERTAINTY)),
        audience=draw(texts()),
        event_codes=draw(st.lists(value_pairs, max_size=2)),
        sender_name=draw(texts()),
        headline=draw(texts()),
        description=draw(texts(max_size=80)),
        instruction=draw(texts()),
        web=draw(st.just("") | URIS),
        contact=draw(texts()),
        parameters=draw(st.lists(value_pairs, max_size=2)),
        resources=draw(st.lists(resources_, max_size=2)),
        areas=draw(st.lists(areas(), max_size=2)),
    )
    for field in ("effective", "onset", "expires"):
        when = draw(st.none() | timestamps())
        if when is not None:
            getattr(info, field).CopyFrom(when)
    return info


@st.composite
def references_(draw: st.DrawFn) -> warning_pb2.CapReference:
    offset = draw(OFFSETS)
    return warning_pb2.CapReference(
        sender=draw(tokens),
        identifier=draw(tokens),
        sent=draw(timestamps()),
        sent_utc_offset_minutes=offset,
        sent_utc_plus_zero=offset == 0 and draw(st.booleans()),
    )


references = references_()


@st.composite
def warnings(draw: st.DrawFn) -> warning_pb2.Warning:
    """A Warning in the codec's canonical form: info offsets only where they differ from the
    alert's, and `utc_plus_zero` only when some dateTime has offset 0."""
    warning = warning_pb2.Warning(
        identifier=draw(tokens),
        sender=draw(tokens),
        sent=draw(timestamps()),
        status=draw(enums(codec._STATUS)),
        msg_type=draw(enums(codec._MSG_TYPE)),
        source=draw(texts()),
        scope=draw(enums(codec._SCOPE)),
        restriction=draw(texts()),
        addresses=draw(st.lists(entries, max_size=3)),
        codes=draw(st.lists(texts(), max_size=2)),
        note=draw(texts()),
        references=draw(st.lists(references, max_size=3)),
        incidents=draw(st.lists(entries, max_size=3)),
        infos=draw(st.lists(infos(), max_size=3)),
        utc_offset_minutes=draw(OFFSETS),
    )
    offsets = {warning.utc_offset_minutes}
    for info in warning.infos:
        for name, offset_field in codec._INFO_TIMES:
            if info.HasField(name) and draw(st.booleans()):
                offset = draw(OFFSETS)
                offsets.add(offset)
                if offset != warning.utc_offset_minutes:
                    setattr(info, offset_field, offset)
    warning.utc_plus_zero = 0 in offsets and draw(st.booleans())
    return warning


ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUND_TRIP
@given(warnings())
def test_any_expressible_warning_round_trips(warning: warning_pb2.Warning) -> None:
    assert without_cap_xml(parse_cap(to_cap_xml(warning))) == warning


@ROUND_TRIP
@given(warnings())
def test_export_of_a_parsed_export_is_identical(warning: warning_pb2.Warning) -> None:
    exported = to_cap_xml(warning)
    assert to_cap_xml(parse_cap(exported)) == exported


@settings(max_examples=300, deadline=None)
@given(st.lists(entries, max_size=6), st.lists(entries, max_size=6))
def test_address_and_incident_lists_round_trip(addresses: list[str], incidents: list[str]) -> None:
    warning = minimal_warning(addresses=addresses, incidents=incidents)
    parsed = parse_cap(to_cap_xml(warning))
    assert (list(parsed.addresses), list(parsed.incidents)) == (addresses, incidents)


# ---------------------------------------------------------------------------------------------
# Refusals: hostile XML. Nothing may be expanded, no file opened, no connection made.


def _run_watched(action: Callable[[], object], touched: Callable[[], bool]) -> tuple[object, bool]:
    """Runs `action` in a thread while polling `touched()`; returns (result or exception, whether
    `touched()` ever fired). A touch unblocks the action, so a failing test does not hang."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(action())
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    seen = False
    deadline = time.monotonic() + 30
    while worker.is_alive() and time.monotonic() < deadline:
        seen = touched() or seen
        worker.join(0.005)
    seen = touched() or seen
    assert not worker.is_alive(), "the parser hung"
    return outcome[0], seen


@pytest.fixture
def trap_file(tmp_path: Path) -> tuple[str, Callable[[], bool]]:
    """A named pipe: opening it for reading blocks until we open it for writing, which only
    succeeds (without blocking) while someone is trying to read it. (url, opened-by-someone?)"""
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes (POSIX)")
    fifo = tmp_path / "secret.txt"
    os.mkfifo(fifo)

    def opened() -> bool:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader, so nobody has opened it
                raise
            return False
        os.write(fd, b"SECRET-SENTINEL")
        os.close(fd)
        return True

    return fifo.as_uri(), opened


@pytest.fixture
def trap_server() -> Iterator[tuple[str, Callable[[], bool]]]:
    """A listening socket on loopback: (base url, did-anyone-connect?)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)

        def connected() -> bool:
            try:
                connection, _ = server.accept()
            except BlockingIOError:
                return False
            connection.close()
            return True

        yield f"http://127.0.0.1:{server.getsockname()[1]}", connected


def billion_laughs() -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    return (
        '<?xml version="1.0"?>\n'
        f"<!DOCTYPE alert [{''.join(entities)}]>\n"
        f'<alert xmlns="{CAP_NAMESPACE}"><identifier>&lol9;</identifier></alert>\n'
    )


def hostile_documents(url: str) -> dict[str, str]:
    cap = f'<alert xmlns="{CAP_NAMESPACE}">'
    return {
        "external entity": f'<!DOCTYPE alert [<!ENTITY x SYSTEM "{url}">]>{cap}<note>&x;</note></alert>',
        "external entity in attribute": f'<!DOCTYPE alert [<!ENTITY x SYSTEM "{url}">]>{cap[:-1]} a="&x;"/>',
        "external DTD": f'<!DOCTYPE alert SYSTEM "{url}">{cap}<note>x</note></alert>',
        "public DTD": f'<!DOCTYPE alert PUBLIC "-//X//DTD X//EN" "{url}">{cap}</alert>',
        "parameter entity": f'<!DOCTYPE alert [<!ENTITY % p SYSTEM "{url}"> %p;]>{cap}</alert>',
        "XInclude": f'{cap}<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{url}" parse="text"/></alert>',
    }


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_billion_laughs_is_refused_without_expansion(encoding: str) -> None:
    document = billion_laughs().replace('"1.0"?>', f'"1.0" encoding="{encoding}"?>')
    started = time.monotonic()
    with pytest.raises(CapError) as refused:
        parse_cap(document.encode(encoding))
    assert time.monotonic() - started < 2.0
    assert "lollol" not in str(refused.value)
    if encoding == "utf-8":  # seen in the prolog, before libxml2 reads the internal subset
        assert str(refused.value).startswith("line 2: DOCTYPE is not allowed")
    else:  # libxml2 refuses to expand, or the DOCTYPE is refused after parsing
        assert "DOCTYPE" in str(refused.value) or "amplification" in str(refused.value)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize(
    "kind",
    [
        "external entity",
        "external entity in attribute",
        "external DTD",
        "public DTD",
        "parameter entity",
        "XInclude",
    ],
)
def test_external_references_are_refused_and_never_opened(
    kind: str, encoding: str, trap_file: tuple[str, Callable[[], bool]]
) -> None:
    url, opened = trap_file
    document = hostile_documents(url)[kind].encode(encoding)
    outcome, touched = _run_watched(lambda: parse_cap(document), opened)
    assert not touched, f"{kind}: the parser opened {url}"
    assert isinstance(outcome, CapError)
    assert "SECRET-SENTINEL" not in str(outcome)
    if kind == "XInclude":  # no DOCTYPE: the schema refuses the foreign element
        assert str(outcome) == "line 1: <alert>: expected <identifier>, found <include>"
    else:  # refused before parsing, UTF-16 included
        assert str(outcome).startswith(("line 1: DOCTYPE is not allowed", "line 2: DOCTYPE"))


def test_external_files_are_never_read_into_the_result(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-SENTINEL")
    for kind, document in hostile_documents(secret.as_uri()).items():
        for encoding in ("utf-8", "utf-16"):
            with pytest.raises(CapError) as refused:
                parse_cap(document.encode(encoding))
            assert "SECRET-SENTINEL" not in str(refused.value), kind


@pytest.mark.parametrize(
    "kind", ["external entity", "external DTD", "parameter entity", "XInclude"]
)
def test_no_network_access_for_entities_or_dtds(
    kind: str, trap_server: tuple[str, Callable[[], bool]]
) -> None:
    url, connected = trap_server
    document = hostile_documents(f"{url}/evil")[kind].encode("utf-16")
    outcome, touched = _run_watched(lambda: parse_cap(document), connected)
    assert not touched and isinstance(outcome, CapError)


def test_schema_location_hints_are_not_followed(
    trap_server: tuple[str, Callable[[], bool]],
) -> None:
    url, connected = trap_server
    hinted = THUNDERSTORM.replace(
        b'<alert xmlns = "urn:oasis:names:tc:emergency:cap:1.2">',
        b'<alert xmlns = "urn:oasis:names:tc:emergency:cap:1.2" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="'
        + CAP_NAMESPACE.encode()
        + f' {url}/cap.xsd">'.encode(),
    )
    outcome, touched = _run_watched(lambda: parse_cap(hinted), connected)
    assert not touched
    assert isinstance(outcome, warning_pb2.Warning) and outcome.identifier == "KSTO1055887203"


@pytest.mark.parametrize(
    "prolog",
    [b" " * 200_000, b"<!-- -->" * 30_000, b"<?pi x?>\n" * 30_000, b"<!--" * 60_000],
    ids=["spaces", "comments", "instructions", "unterminated comments"],
)
def test_long_prologs_are_scanned_in_linear_time(prolog: bytes) -> None:
    document = b'<?xml version="1.0"?>' + prolog + THUNDERSTORM.split(b"-->\n", 1)[1]
    started = time.monotonic()
    if prolog.startswith(b"<!--<!--"):
        with pytest.raises(CapError, match="not well-formed XML"):
            parse_cap(document)
    else:
        assert parse_cap(document).identifier == "KSTO1055887203"
    assert time.monotonic() - started < 2.0


def test_oversize_input_is_refused_before_parsing() -> None:
    padded = THUNDERSTORM.replace(b"</alert>", b" " * MAX_CAP_BYTES + b"</alert>")
    with pytest.raises(
        CapError, match=rf"^document is {len(padded)} bytes, larger than the limit of 524288"
    ):
        parse_cap(padded)
    with pytest.raises(CapError, match=r"limit of 1000 bytes"):
        parse_cap(THUNDERSTORM, max_bytes=1000)
    assert parse_cap(THUNDERSTORM, max_bytes=len(THUNDERSTORM)).identifier == "KSTO1055887203"


# ---------------------------------------------------------------------------------------------
# Refusals: not CAP 1.2, or CAP that breaks the schema or CAP's own rules. Each names the
# element and its line.


def test_xml_that_is_not_cap_is_refused() -> None:
    with pytest.raises(CapError) as refused:
        parse_cap(b'<?xml version="1.0"?>\n<html><body>hi</body></html>')
    assert str(refused.value) == (
        "line 2: not a CAP 1.2 alert: the root element is <html> (no namespace); "
        "expected <alert> in urn:oasis:names:tc:emergency:cap:1.2"
    )


def test_cap_1_1_is_refused_by_name() -> None:
    with pytest.raises(CapError, match=r"^line 4: <alert>: this is CAP 1\.1 "):
        parse_cap(THUNDERSTORM.replace(b"cap:1.2", b"cap:1.1"))


def test_xml_that_is_not_well_formed_is_refused_with_its_line() -> None:
    with pytest.raises(CapError, match=r"^line 12: not well-formed XML: Premature end of data"):
        parse_cap(THUNDERSTORM[:400])
    with pytest.raises(CapError, match=r"^line 1: not well-formed XML: Entity 'nbsp' not"):
        parse_cap(f'<alert xmlns="{CAP_NAMESPACE}">&nbsp;</alert>'.encode())


def test_invalid_enum_value_is_named_with_its_line_and_the_allowed_values() -> None:
    document = THUNDERSTORM.replace(b"<urgency>Immediate</urgency>", b"<urgency>Soon</urgency>")
    with pytest.raises(CapError) as refused:
        parse_cap(document)
    line = line_of(document, b"<urgency>Soon")
    assert str(refused.value) == (
        f"line {line}: <urgency>: 'Soon' is not one of Immediate, Expected, Future, Past, Unknown"
    )
    assert refused.value.line == line == 15


def test_missing_required_element_is_named_where_it_was_expected() -> None:
    document = THUNDERSTORM.replace(b"<scope>Public</scope> \n", b"")
    with pytest.raises(CapError) as refused:
        parse_cap(document)
    assert str(refused.value) == (
        f"line {line_of(document, b'<info>')}: <alert>: expected <scope>, found <info>"
    )


def test_missing_first_element_and_missing_last_element_are_named() -> None:
    without_area_desc = THUNDERSTORM.replace(
        b"<areaDesc>EXTREME NORTH CENTRAL TUOLUMNE COUNTY IN CALIFORNIA, EXTREME NORTHEASTERN "
        b"CALAVERAS COUNTY IN CALIFORNIA, SOUTHWESTERN ALPINE COUNTY IN CALIFORNIA</areaDesc>",
        b"",
    )
    with pytest.raises(CapError) as refused:
        parse_cap(without_area_desc)
    assert str(refused.value) == "line 30: <area>: expected <areaDesc>, found <polygon>"
    empty_area = THUNDERSTORM.split(b"<area>")[0] + b"<area></area></info></alert>"
    with pytest.raises(CapError) as refused:
        parse_cap(empty_area)
    assert str(refused.value) == "line 28: <area>: incomplete: missing <areaDesc>"


def swap(old: bytes, new: bytes) -> bytes:
    assert old in THUNDERSTORM
    return THUNDERSTORM.replace(old, new)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            swap(b"14:57:00-07:00", b"14:57:00Z"),
            "line 7: <sent>: '2003-06-17T14:57:00Z' is not a CAP dateTime",
        ),
        (
            swap(b"14:57:00-07:00", b"14:57:00,07:00"),
            "line 7: <sent>: '2003-06-17T14:57:00,07:00' is not a CAP dateTime",
        ),
        (
            swap(b"14:57:00-07:00", b"14:57:00.5-07:00"),
            "line 7: <sent>: '2003-06-17T14:57:00.5-07:00' is not a CAP dateTime",
        ),
        (
            swap(b"<expires>2003-06-17T16", b"<expires>2003-06-17T24"),
            "line 22: <expires>: '2003-06-17T24:00:00-07:00' is not a CAP dateTime",
        ),
        (swap(b"<status>Actual", b"<status>actual"), "line 8: <status>: 'actual' is not one of"),
        (
            swap(b"<category>Met</category>", b"<category>Weather</category>"),
            "line 12: <category>: 'Weather' is not one of Geo, Met, Safety,",
        ),
        (
            swap(b"<certainty>Observed</certainty>", b""),
            "line 18: <info>: expected <certainty>, found <eventCode>",
        ),
        (
            swap(b"<scope>Public</scope>", b"<scope>Public</scope><extra/>"),
            "line 10: <alert>: <extra> is not allowed here",
        ),
        (
            swap(b"<identifier>KSTO1055887203", b"<identifier>KSTO,1055887203"),
            "line 5: <identifier>: 'KSTO,1055887203' contains a space, comma",
        ),
        (swap(b"<sender>KSTO@NWS.NOAA.GOV", b"<sender>"), "line 6: <sender>: '' is empty"),
        (
            swap(b" 38.47,-120.14</polygon>", b"</polygon>"),
            "line 30: <polygon>: not closed: CAP requires the last point to repeat the first",
        ),
        (
            swap(b"38.34,-119.95 38.52,-119.74 38.62,-119.89 ", b""),
            "line 30: <polygon>: 2 points; CAP requires a closed ring of at least 4",
        ),
        (
            swap(b"38.34,-119.95", b"-119.95,38.34"),
            "line 30: <polygon>: '-119.95,38.34': latitude -119.95 is outside -90..90",
        ),
        (
            swap(b"38.34,-119.95", b"38.34;-119.95"),
            "line 30: <polygon>: '38.34;-119.95' is not a 'latitude,longitude' pair",
        ),
        (
            swap(b"</polygon>", b"</polygon><circle>38.4,-120.0</circle>"),
            "line 30: <circle>: '38.4,-120.0' is not 'latitude,longitude radius_km'",
        ),
        (
            swap(b"</polygon>", b"</polygon><circle>38.4,-120.0 -5</circle>"),
            "line 30: <circle>: radius -5 must be 0 or more km",
        ),
        (
            swap(b"</geocode>\n    </area>", b"</geocode><ceiling>5</ceiling></area>"),
            "line 42: <ceiling>: CAP allows <ceiling> only together with <altitude>",
        ),
        (
            swap(b"</geocode>\n    </area>", b"</geocode><altitude>high</altitude></area>"),
            "line 42: <altitude>: 'high' is not a valid xs:decimal",
        ),
        (
            swap(b"<scope>Public</scope>", b"<scope>Public</scope><references>a,b</references>"),
            "line 10: <references>: 'a,b' is not a sender,identifier,sent triple",
        ),
        (
            swap(
                b"<scope>Public</scope>",
                b"<scope>Public</scope><references>a,b,2003-06-17</references>",
            ),
            "line 10: <references>: '2003-06-17' is not a CAP dateTime",
        ),
        (
            swap(b"<scope>Public</scope>", b"<scope>Public</scope><references>,b,c</references>"),
            "line 10: <references>: ',b,c': '' is empty",
        ),
        (
            swap(b"<scope>Public</scope>", b'<scope>Private</scope><addresses>a "b c</addresses>'),
            "line 10: <addresses>: unbalanced or misplaced double quote at character 3",
        ),
        (
            swap(b"<scope>Public</scope>", b'<scope>Private</scope><addresses>a ""</addresses>'),
            "line 10: <addresses>: empty quoted entry",
        ),
    ],
)
def test_invalid_cap_is_refused_naming_element_and_line(document: bytes, message: str) -> None:
    with pytest.raises(CapError) as refused:
        parse_cap(document)
    assert str(refused.value).startswith(message)


def resource_document(body: bytes) -> bytes:
    return swap(
        b"<contact>BARUFFALDI/JUSKIE</contact>",
        b"<contact>BARUFFALDI/JUSKIE</contact>\n    <resource><resourceDesc>map</resourceDesc>"
        b"<mimeType>image/png</mimeType>" + body + b"</resource>",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<size>-1</size>", "line 28: <size>: -1 is not a size in bytes"),
        (b"<size>1.5</size>", "line 28: <size>: '1.5' is not a valid xs:integer"),
        (b"<derefUri>not base64!</derefUri>", "line 28: <derefUri>: not valid base64"),
        (b"<digest>x</digest><uri>a</uri>", "line 28: <resource>: <uri> is not allowed here"),
    ],
)
def test_invalid_resource_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(CapError) as refused:
        parse_cap(resource_document(body))
    assert str(refused.value).startswith(message)


def test_comments_and_cdata_do_not_change_values() -> None:
    document = swap(
        b"<headline>SEVERE THUNDERSTORM WARNING</headline>",
        b"<headline>SEVERE <!-- x -->THUNDER<![CDATA[STORM]]> WARNING &amp; more</headline>",
    )
    assert parse_cap(document).infos[0].headline == "SEVERE THUNDERSTORM WARNING & more"


def test_every_problem_is_reported_with_its_path_and_line() -> None:
    document = (
        THUNDERSTORM.replace(b"<identifier>KSTO1055887203", b"<identifier>KSTO,1055887203")
        .replace(b"<status>Actual", b"<status>actual")
        .replace(b"<urgency>Immediate", b"<urgency>Soon")
        .replace(b"<certainty>Observed</certainty>", b"")
        .replace(b" 38.47,-120.14</polygon>", b"</polygon>")
    )
    with pytest.raises(CapError) as refused:
        parse_cap(document)
    assert [(p.path, p.line) for p in refused.value.problems] == [
        ("/alert/identifier", 5),
        ("/alert/status", 8),
        ("/alert/info[1]/urgency", 15),
        ("/alert/info[1]/eventCode[1]", 18),
        ("/alert/info[1]/area[1]/polygon[1]", 30),
    ]
    assert str(refused.value).splitlines() == [
        "line 5: <identifier>: 'KSTO,1055887203' contains a space, comma, '<' or '&', which CAP "
        "forbids",
        "line 8: <status>: 'actual' is not one of Actual, Exercise, System, Test, Draft",
        "line 15: <urgency>: 'Soon' is not one of Immediate, Expected, Future, Past, Unknown",
        "line 18: <info>: expected <certainty>, found <eventCode>",
        "line 30: <polygon>: not closed: CAP requires the last point to repeat the first",
    ]
    # The first problem is still the error's own message and line, as before.
    assert (refused.value.line, refused.value.path) == (5, "/alert/identifier")
    assert isinstance(refused.value, ValueError)


def test_problems_in_later_info_blocks_and_areas_are_found() -> None:
    area = (
        b"<area><areaDesc>a</areaDesc>"
        b"<polygon>1,1 2,2 3,3 1,1</polygon><polygon>1,1 2,2 3,3 4,4</polygon></area>\n"
    )
    info = (
        b"<info><category>Met</category><event>x</event><urgency>Past</urgency>"
        b"<severity>Minor</severity><certainty>Observed</certainty>\n" + area * 3 + b"</info>\n"
    )
    document = THUNDERSTORM.split(b"<info>")[0] + info * 2 + b"</alert>"
    with pytest.raises(CapError) as refused:
        parse_cap(document)
    paths = [problem.path for problem in refused.value.problems]
    assert paths == [f"/alert/info[{i}]/area[{a}]/polygon[2]" for i in (1, 2) for a in (1, 2, 3)]
    assert "/alert/info[2]/area[3]/polygon[2]" in paths


def test_the_report_is_bounded() -> None:
    bad = b"<polygon>1,1 2,2 3,3</polygon>"
    document = swap(b"</polygon>", b"</polygon>" + bad * 60)
    with pytest.raises(CapError) as refused:
        parse_cap(document)
    assert len(refused.value.problems) == codec.MAX_REPORTED_PROBLEMS == 50
    assert refused.value.more == 10
    assert str(refused.value).splitlines()[-1] == "and 10 more problems"
    assert refused.value.problems[-1].path == "/alert/info[1]/area[1]/polygon[51]"


def test_a_value_the_schema_refuses_is_reported_once() -> None:
    document = swap(b"</geocode>\n    </area>", b"</geocode><altitude>high</altitude></area>")
    with pytest.raises(CapError) as refused:
        parse_cap(document)
    assert [p.message for p in refused.value.problems] == [
        "<altitude>: 'high' is not a valid xs:decimal"
    ]
