"""cap_differences: what is a difference in meaning between two CAP documents, and what is not."""

from __future__ import annotations

import pytest

from dutylink.adapters.cap.codec import CapError
from dutylink.adapters.cap.compare import cap_differences

BASE = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>EX-1</identifier>
  <sender>met@example.org</sender>
  <sent>2026-07-14T08:00:00+08:00</sent>
  <status>Actual</status>
  <msgType>Update</msgType>
  <scope>Private</scope>
  <addresses>fire "city hall"</addresses>
  <references>met@example.org,EX-0,2026-07-14T07:00:00+08:00</references>
  <info>
    <category>Met</category>
    <event>Rainstorm</event>
    <urgency>Expected</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <expires>2026-07-15T00:00:00-00:00</expires>
    <headline>Rainstorm orange warning</headline>
    <resource>
      <resourceDesc>map</resourceDesc>
      <mimeType>image/png</mimeType>
      <size>6</size>
      <derefUri>aGVsbG8h</derefUri>
    </resource>
    <area>
      <areaDesc>Pudong</areaDesc>
      <polygon>31.32,121.40 31.32,121.56 31.18,121.56 31.32,121.40</polygon>
      <circle>31.2,121.5 10</circle>
      <altitude>100.0</altitude>
    </area>
  </info>
</alert>
"""


def differences(**replacements: tuple[str, str]) -> list[str]:
    changed = BASE
    for old, new in replacements.values():
        assert old in changed, old
        changed = changed.replace(old, new)
    return cap_differences(BASE.encode(), changed.encode())


@pytest.mark.parametrize(
    "change",
    [
        # whitespace around values and between elements, comments
        ("<headline>Rainstorm", "<headline>\n      Rainstorm"),
        ("  <info>\n", "<!-- note -->\n\n  <info>\n"),
        # schema order of differently named siblings
        (
            "<polygon>31.32,121.40 31.32,121.56 31.18,121.56 31.32,121.40</polygon>\n"
            "      <circle>31.2,121.5 10</circle>",
            "<circle>31.2,121.5 10</circle>\n"
            "      <polygon>31.32,121.40 31.32,121.56 31.18,121.56 31.32,121.40</polygon>",
        ),
        # number spelling
        ("31.32,121.40 31.32", "+31.320,121.4 31.32"),
        ("<altitude>100.0</altitude>", "<altitude>100</altitude>"),
        ("121.5 10</circle>", "121.50 10.000</circle>"),
        # base64 wrapping
        ("<derefUri>aGVsbG8h</derefUri>", "<derefUri>\naGVs\nbG8h\n</derefUri>"),
        # the same instant and offset, and UTC as +00:00
        ("2026-07-15T00:00:00-00:00", "2026-07-15T00:00:00+00:00"),
        # quoting of entries without spaces
        ('<addresses>fire "city hall"</addresses>', '<addresses>"fire"  "city hall"</addresses>'),
        # namespace prefixes
        (
            '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">',
            '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2" xmlns:x="urn:x">',
        ),
        # an empty optional element is absent
        ("<headline>", "<audience></audience><headline>"),
        # encoding of the same characters
        ("<headline>Rainstorm", "<headline>&#82;ainstorm"),
    ],
)
def test_not_a_difference(change: tuple[str, str]) -> None:
    assert differences(change=change) == []


def test_namespace_prefix_is_not_a_difference() -> None:
    prefixed = (
        BASE.replace('<alert xmlns="', '<cap:alert xmlns:cap="')
        .replace("</alert>", "</cap:alert>")
        .replace("<", "<cap:")
        .replace("<cap:/", "</cap:")
        .replace("<cap:?xml", "<?xml")
        .replace("<cap:cap:", "<cap:")
        .replace("</cap:cap:", "</cap:")
    )
    assert "<cap:headline>" in prefixed
    assert cap_differences(BASE.encode(), prefixed.encode()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("<headline>Rainstorm", "<headline>Heavy rainstorm"),
            "/alert/info[1]/headline: 'Rainstorm orange warning' != 'Heavy rainstorm orange warning'",
        ),
        (("<status>Actual", "<status>Exercise"), "/alert/status: 'Actual' != 'Exercise'"),
        (
            ("2026-07-14T08:00:00+08:00</sent>", "2026-07-14T00:00:00-00:00</sent>"),
            "/alert/sent: '2026-07-14T08:00:00+08:00' != '2026-07-14T00:00:00-00:00'",
        ),
        (
            ("2026-07-15T00:00:00-00:00", "2026-07-15T00:00:01-00:00"),
            "/alert/info[1]/expires: '2026-07-15T00:00:00-00:00' != '2026-07-15T00:00:01-00:00'",
        ),
        (
            ("31.18,121.56", "31.18,121.57"),
            "/alert/info[1]/area[1]/polygon[1]: '31.32,121.40 31.32,121.56 31.18,121.56 "
            "31.32,121.40' != '31.32,121.40 31.32,121.56 31.18,121.57 31.32,121.40'",
        ),
        (
            ("121.5 10</circle>", "121.5 11</circle>"),
            "/alert/info[1]/area[1]/circle[1]: '31.2,121.5 10' != '31.2,121.5 11'",
        ),
        (
            ("<altitude>100.0</altitude>", "<altitude>100.1</altitude>"),
            "/alert/info[1]/area[1]/altitude: '100.0' != '100.1'",
        ),
        (
            ("<derefUri>aGVsbG8h</derefUri>", "<derefUri>aGVsbG8/</derefUri>"),
            "/alert/info[1]/resource[1]/derefUri: 6 bytes (SHA-1 ",
        ),
        (
            ('"city hall"', '"city  hall"'),
            "/alert/addresses: 'fire \"city hall\"' != 'fire \"city  hall\"'",
        ),
        (
            (
                "07:00:00+08:00</references>",
                "07:00:00+08:00 a,b,2026-07-14T07:00:00+08:00</references>",
            ),
            "/alert/references: ",
        ),
        (
            ("T07:00:00+08:00</references>", "T06:00:00+07:00</references>"),
            "/alert/references: ",  # receivers match references textually
        ),
        (
            ("<headline>", "<web>https://example.org/</web><headline>"),
            "/alert/info[1]/web: only in b ('https://example.org/')",
        ),
        (
            ("<category>Met</category>", "<category>Met</category><category>Env</category>"),
            "/alert/info[1]/category[2]: only in b ('Env')",
        ),
        (
            ("</info>", "</info><info><category>Met</category></info>"),
            "/alert/info[2]: only in b",
        ),
        (
            ("<circle>31.2,121.5 10</circle>", ""),
            "/alert/info[1]/area[1]/circle[1]: only in a ('31.2,121.5 10')",
        ),
        (
            ("</info>", '</info><Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/>'),
            "/alert/ds:Signature[1]: only in b",
        ),
    ],
)
def test_difference_is_named_by_path(change: tuple[str, str], expected: str) -> None:
    found = differences(change=change)
    assert len(found) == 1, found
    assert found[0].startswith(expected)
    # and the comparison is symmetric in what it finds
    assert len(cap_differences(BASE.replace(*change).encode(), BASE.encode())) == 1


def test_every_difference_is_named() -> None:
    found = differences(
        a=("<status>Actual", "<status>Test"),
        b=("<event>Rainstorm", "<event>Flood"),
        c=("<areaDesc>Pudong", "<areaDesc>Minhang"),
    )
    assert [entry.split(":")[0] for entry in found] == [
        "/alert/status",
        "/alert/info[1]/event",
        "/alert/info[1]/area[1]/areaDesc",
    ]


def test_signature_content_is_compared_as_xml() -> None:
    signed = BASE.replace(
        "</info>",
        '</info><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
        "<ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>",
    )
    other = signed.replace("AAAA", "BBBB")
    assert cap_differences(signed.encode(), signed.replace("ds:", "sig:").replace(":ds=", ":sig=").encode()) == []  # fmt: skip
    assert cap_differences(signed.encode(), other.encode()) == [
        "/alert/ds:Signature[1]/ds:SignatureValue[1]: 'AAAA' != 'BBBB'"
    ]


def test_documents_that_are_not_xml_are_refused() -> None:
    with pytest.raises(CapError, match="not well-formed"):
        cap_differences(BASE.encode(), b"<alert")
    with pytest.raises(CapError, match="DOCTYPE"):
        cap_differences(BASE.encode(), b'<!DOCTYPE a [<!ENTITY x "y">]><alert/>')


def test_an_inserted_or_removed_sibling_is_named_once() -> None:
    areas = [
        f"<area><areaDesc>district {n}</areaDesc><geocode><valueName>GB/T 2260</valueName>"
        f"<value>3101{n:02d}</value></geocode></area>"
        for n in range(1, 8)
    ]
    with_all = BASE.replace("<area>", "".join(areas) + "<area>", 1)
    without_third = BASE.replace("<area>", "".join(areas[:2] + areas[3:]) + "<area>", 1)
    assert cap_differences(with_all.encode(), without_third.encode()) == [
        "/alert/info[1]/area[3]: only in a"
    ]
    assert cap_differences(without_third.encode(), with_all.encode()) == [
        "/alert/info[1]/area[3]: only in b"
    ]
    changed = with_all.replace("district 5<", "district five<")
    assert cap_differences(with_all.encode(), changed.encode()) == [
        "/alert/info[1]/area[5]/areaDesc: 'district 5' != 'district five'"
    ]
