"""EDXL-DE 1.0 distribution envelopes: unwrap to routing fields plus the embedded documents,
and wrap documents in a new envelope. Pure: bytes in, values out, and back.

Long because it follows EDXL-DE 1.0 element by element in both directions (unwrap and wrap, value
lists, target areas, content objects) and adds `de_differences`, the comparison in meaning that the
round-trip tests read.

The envelope is validated against the OASIS EDXL-DE 1.0 schema. Embedded documents come out
as standalone XML bytes (re-serialised elements, not the original byte range: read XML
signatures over their canonical form), each tagged "cap", "rm" or "other" by its root
namespace, so the caller hands them to the CAP or RM codec. Non-XML content is reported as
"other" with its MIME type and URI, never dropped.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal, TypeVar, cast

from lxml import etree

from dutylink.adapters.edxl.rm import MSG_NS
from dutylink.adapters.edxl.xml import (
    MAX_XML_BYTES,
    XmlError,
    format_datetime,
    load_schema,
    parse_datetime,
    parse_xml,
    text,
    validate,
)

DE_NS = "urn:oasis:names:tc:emergency:EDXL:DE:1.0"
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
DEFAULT_CONFIDENTIALITY = "UNCLASSIFIED AND NOT SENSITIVE"  # EDXL-DE 1.0's stated default

ContentKind = Literal["cap", "rm", "other"]
DistributionStatus = Literal["Actual", "Exercise", "System", "Test"]
DistributionType = Literal[
    "Report",
    "Update",
    "Cancel",
    "Request",
    "Response",
    "Dispatch",
    "Ack",
    "Error",
    "SensorConfiguration",
    "SensorControl",
    "SensorStatus",
    "SensorDetection",
]
_KIND_BY_NAMESPACE: dict[str | None, ContentKind] = {CAP_NS: "cap", MSG_NS: "rm"}


class DeError(XmlError):
    """An EDXL-DE envelope cannot be read (unsafe, wrong root, schema-invalid) or built."""


@dataclass(frozen=True)
class ValueList:
    """EDXL-DE valueListType: values from the list named by `urn`."""

    urn: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ExplicitAddress:
    """EDXL-DE explicitAddress: recipients addressed in `scheme`, e.g. agency ids."""

    scheme: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class TargetArea:
    """EDXL-DE targetArea, as written: circles "lat,lon radius_km", polygons "lat,lon …",
    ISO 3166-1 country and 3166-2 subdivision codes, UN/LOCODEs."""

    circles: tuple[str, ...] = ()
    polygons: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    subdivisions: tuple[str, ...] = ()
    loc_codes_un: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContentObject:
    """One embedded payload of a contentObject and that object's metadata.

    XML content: `xml` is one embedded document (a contentObject whose embeddedXMLContent
    holds several yields one ContentObject each, sharing the metadata) and `kind` comes from
    its root namespace. Non-XML content: kind "other", `xml` None, `mime_type` set, and the
    inline `data` (decoded contentData) and/or `uri`. `kind` is set by `unwrap_de`; `wrap_de`
    ignores it.
    """

    kind: ContentKind = "other"
    xml: bytes | None = None
    # Of its contentObject among the envelope's, from 0 (set by unwrap_de; wrap_de writes
    # contents in the order given). Not part of equality: the same content anywhere is equal.
    position: int = field(default=0, compare=False)
    description: str = ""
    keywords: tuple[ValueList, ...] = ()
    incident_id: str = ""
    incident_description: str = ""
    originator_roles: tuple[ValueList, ...] = ()
    consumer_roles: tuple[ValueList, ...] = ()
    confidentiality: str = ""
    mime_type: str = ""
    size: int | None = None
    digest: str = ""
    uri: str = ""
    data: bytes | None = None


@dataclass(frozen=True)
class Distribution:
    """The routing fields of an EDXL-DE 1.0 envelope and its contents, in document order."""

    distribution_id: str
    sender_id: str
    sent_at: datetime  # aware, in the sender's offset
    status: DistributionStatus
    distribution_type: DistributionType
    combined_confidentiality: str
    language: str = ""
    sender_roles: tuple[ValueList, ...] = ()
    recipient_roles: tuple[ValueList, ...] = ()
    keywords: tuple[ValueList, ...] = ()
    distribution_references: tuple[str, ...] = ()
    explicit_addresses: tuple[ExplicitAddress, ...] = ()
    target_areas: tuple[TargetArea, ...] = ()
    contents: tuple[ContentObject, ...] = ()


def _d(name: str) -> str:
    return f"{{{DE_NS}}}{name}"


def _schema() -> etree.XMLSchema:
    return load_schema("edxl-de/edxlde-1_0.xsd")


# --------------------------------------------------------------------------------------------
# unwrap


def unwrap_de(data: bytes, *, max_bytes: int = MAX_XML_BYTES) -> Distribution:
    """The envelope fields and contents of an EDXL-DE 1.0 document. Raises DeError naming the
    element and line. Embedded documents are not validated here: pass each to its codec."""
    root = parse_xml(data, max_bytes=max_bytes, error=DeError)
    if root.tag != _d("EDXLDistribution"):
        qname = etree.QName(root)
        raise DeError(
            f"<{qname.localname}>: not an EDXL-DE 1.0 envelope: the root must be "
            f"<EDXLDistribution> in namespace {DE_NS}, not {qname.namespace or 'no namespace'}",
            line=root.sourceline,
        )
    validate(_schema(), root, error=DeError)
    sent = root.find(_d("dateTimeSent"))
    assert sent is not None  # required by the schema
    try:
        moment, nanos = parse_datetime(text(sent))
    except ValueError as exc:
        raise DeError(f"<dateTimeSent>: {exc}", line=sent.sourceline) from None
    return Distribution(
        distribution_id=_text(root, "distributionID"),
        sender_id=_text(root, "senderID"),
        sent_at=moment.replace(microsecond=nanos // 1000),
        status=cast(DistributionStatus, _text(root, "distributionStatus")),
        distribution_type=cast(DistributionType, _text(root, "distributionType")),
        combined_confidentiality=_text(root, "combinedConfidentiality"),
        language=_text(root, "language"),
        sender_roles=_value_lists(root, "senderRole"),
        recipient_roles=_value_lists(root, "recipientRole"),
        keywords=_value_lists(root, "keyword"),
        distribution_references=tuple(text(e) for e in root.iterfind(_d("distributionReference"))),
        explicit_addresses=tuple(
            ExplicitAddress(
                scheme=_text(address, "explicitAddressScheme"),
                values=tuple(text(v) for v in address.iterfind(_d("explicitAddressValue"))),
            )
            for address in root.iterfind(_d("explicitAddress"))
        ),
        target_areas=tuple(_target_area(area) for area in root.iterfind(_d("targetArea"))),
        contents=tuple(
            content
            for position, element in enumerate(root.iterfind(_d("contentObject")))
            for content in _contents(element, position)
        ),
    )


def _text(parent: etree._Element, name: str) -> str:
    child = parent.find(_d(name))
    return "" if child is None else text(child)


def _value_lists(parent: etree._Element, name: str) -> tuple[ValueList, ...]:
    return tuple(
        ValueList(
            urn=_text(element, "valueListUrn"),
            values=tuple(text(v) for v in element.iterfind(_d("value"))),
        )
        for element in parent.iterfind(_d(name))
    )


def _target_area(area: etree._Element) -> TargetArea:
    def texts(name: str) -> tuple[str, ...]:
        return tuple(text(e) for e in area.iterfind(_d(name)))

    return TargetArea(
        circles=texts("circle"),
        polygons=texts("polygon"),
        countries=texts("country"),
        subdivisions=texts("subdivision"),
        loc_codes_un=texts("locCodeUN"),
    )


def _contents(element: etree._Element, position: int) -> list[ContentObject]:
    metadata = ContentObject(
        position=position,
        description=_text(element, "contentDescription"),
        keywords=_value_lists(element, "contentKeyword"),
        incident_id=_text(element, "incidentID"),
        incident_description=_text(element, "incidentDescription"),
        originator_roles=_value_lists(element, "originatorRole"),
        consumer_roles=_value_lists(element, "consumerRole"),
        confidentiality=_text(element, "confidentiality"),
    )
    if (non_xml := element.find(_d("nonXMLContent"))) is not None:
        size = non_xml.find(_d("size"))
        encoded = non_xml.find(_d("contentData"))
        try:
            data = None if encoded is None else base64.b64decode("".join(text(encoded).split()))
        except binascii.Error as exc:  # schema-valid base64 decodes; kept as a guard
            raise DeError(f"<contentData>: {exc}", line=non_xml.sourceline) from None
        return [
            replace(
                metadata,
                mime_type=_text(non_xml, "mimeType"),
                size=None if size is None else int(text(size)),
                digest=_text(non_xml, "digest"),
                uri=_text(non_xml, "uri"),
                data=data,
            )
        ]
    documents = [
        document
        for embedded in element.iterfind(f"{_d('xmlContent')}/{_d('embeddedXMLContent')}")
        for document in embedded
        if isinstance(document.tag, str)  # elements only, not stray PIs
    ]
    if not documents:  # only keyXMLContent excerpts: reported, with nothing to decode
        return [metadata]
    return [
        replace(
            metadata,
            kind=_KIND_BY_NAMESPACE.get(etree.QName(document).namespace, "other"),
            xml=etree.tostring(document, encoding="UTF-8", xml_declaration=True, with_tail=False),
        )
        for document in documents
    ]


# --------------------------------------------------------------------------------------------
# wrap


def wrap_de(
    contents: Sequence[bytes | ContentObject],
    *,
    distribution_id: str,
    sender_id: str,
    sent_at: datetime,
    status: DistributionStatus = "Actual",
    distribution_type: DistributionType = "Report",
    combined_confidentiality: str = DEFAULT_CONFIDENTIALITY,
    language: str = "",
    sender_roles: Sequence[ValueList] = (),
    recipient_roles: Sequence[ValueList] = (),
    keywords: Sequence[ValueList] = (),
    distribution_references: Sequence[str] = (),
    explicit_addresses: Sequence[ExplicitAddress] = (),
    target_areas: Sequence[TargetArea] = (),
    max_bytes: int = MAX_XML_BYTES,
) -> bytes:
    """An EDXL-DE 1.0 envelope (UTF-8) around `contents`: XML documents as bytes, or
    ContentObjects for metadata and non-XML content. Every embedded document is parsed with
    the same safety rules as input; the envelope is schema-validated and at most `max_bytes`
    (so that `unwrap_de` with the same limit accepts it). Raises DeError."""
    if not contents:
        raise DeError("an envelope needs at least one content object")
    if sent_at.tzinfo is None:
        raise DeError("sent_at needs a time zone (EDXL-DE dateTimeSent carries an offset)")
    root = etree.Element(_d("EDXLDistribution"), nsmap={None: DE_NS})
    _sub(root, "distributionID", distribution_id)
    _sub(root, "senderID", sender_id)
    _sub(root, "dateTimeSent", format_datetime(sent_at))
    _sub(root, "distributionStatus", status)
    _sub(root, "distributionType", distribution_type)
    _sub(root, "combinedConfidentiality", combined_confidentiality)
    if language:
        _sub(root, "language", language)
    _add_value_lists(root, "senderRole", sender_roles)
    _add_value_lists(root, "recipientRole", recipient_roles)
    _add_value_lists(root, "keyword", keywords)
    for reference in distribution_references:
        _sub(root, "distributionReference", reference)
    for address in explicit_addresses:
        element = _sub(root, "explicitAddress")
        _sub(element, "explicitAddressScheme", address.scheme)
        for value in address.values:
            _sub(element, "explicitAddressValue", value)
    for area in target_areas:
        element = _sub(root, "targetArea")
        for name, values in (
            ("circle", area.circles),
            ("polygon", area.polygons),
            ("country", area.countries),
            ("subdivision", area.subdivisions),
            ("locCodeUN", area.loc_codes_un),
        ):
            for value in values:
                _sub(element, name, value)
    for i, content in enumerate(contents):
        item = ContentObject(xml=content) if isinstance(content, bytes) else content
        _add_content(_sub(root, "contentObject"), item, i, max_bytes)
    validate(_schema(), root, error=DeError)
    data = etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=True)
    if len(data) > max_bytes:
        raise DeError(f"the envelope is {len(data)} bytes, larger than the limit of {max_bytes}")
    return data


def _sub(parent: etree._Element, name: str, value: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _d(name))
    if value is not None:
        child.text = value
    return child


def _add_value_lists(parent: etree._Element, name: str, lists: Sequence[ValueList]) -> None:
    for value_list in lists:
        element = _sub(parent, name)
        _sub(element, "valueListUrn", value_list.urn)
        for value in value_list.values:
            _sub(element, "value", value)


def _add_content(element: etree._Element, content: ContentObject, index: int, limit: int) -> None:
    _add_metadata(element, content)
    _add_payload(element, content, index, limit)


def _add_metadata(element: etree._Element, content: ContentObject) -> None:
    if content.description:
        _sub(element, "contentDescription", content.description)
    _add_value_lists(element, "contentKeyword", content.keywords)
    if content.incident_id:
        _sub(element, "incidentID", content.incident_id)
    if content.incident_description:
        _sub(element, "incidentDescription", content.incident_description)
    _add_value_lists(element, "originatorRole", content.originator_roles)
    _add_value_lists(element, "consumerRole", content.consumer_roles)
    if content.confidentiality:
        _sub(element, "confidentiality", content.confidentiality)


def _add_payload(element: etree._Element, content: ContentObject, index: int, limit: int) -> None:
    if content.xml is not None:
        try:
            document = parse_xml(content.xml, max_bytes=limit, error=DeError)
        except DeError as exc:
            raise DeError(f"contents[{index}]: {exc}") from None
        _sub(_sub(element, "xmlContent"), "embeddedXMLContent").append(document)
        return
    if not content.mime_type:
        raise DeError(f"contents[{index}]: give xml, or mime_type for non-XML content")
    non_xml = _sub(element, "nonXMLContent")
    _sub(non_xml, "mimeType", content.mime_type)
    if content.size is not None:
        _sub(non_xml, "size", str(content.size))
    if content.digest:
        _sub(non_xml, "digest", content.digest)
    if content.uri:
        _sub(non_xml, "uri", content.uri)
    if content.data is not None:
        _sub(non_xml, "contentData", base64.b64encode(content.data).decode("ascii"))


def content_object_xml(content: ContentObject, *, max_bytes: int = MAX_XML_BYTES) -> bytes:
    """One ContentObject as a standalone `<contentObject>` document (in the EDXL-DE namespace),
    e.g. to keep a content object that could not be used, with its metadata (one with only
    keyXMLContent excerpts, not modelled, gets an empty `<xmlContent/>`). Raises DeError."""
    element = etree.Element(_d("contentObject"), nsmap={None: DE_NS})
    _add_metadata(element, content)
    if content.xml is None and not content.mime_type:  # keyXMLContent excerpts only
        _sub(element, "xmlContent")
    else:
        _add_payload(element, content, content.position, max_bytes)
    return etree.tostring(element, encoding="UTF-8", xml_declaration=True, pretty_print=True)


# --------------------------------------------------------------------------------------------
# compare


def de_differences(a: bytes, b: bytes) -> list[str]:
    """Every difference in meaning between two EDXL-DE 1.0 envelopes, each named by its element
    path, e.g. "/EDXLDistribution/contentObject[2]/contentDescription: 'x' != 'y'". Empty when
    they are equal in meaning.

    Envelope fields and content-object metadata are compared as values (whitespace around
    them aside; `dateTimeSent` as the instant and the offset it was written in). Embedded
    documents are compared as XML trees: namespaces by URI (not prefix), attributes as sets,
    text with whitespace collapsed, and texts that are both xs:dateTimes with offsets, or both
    decimals, by value. Comments and whitespace-only text do not count. Raises DeError when
    either is not a valid envelope."""
    left, right = unwrap_de(a), unwrap_de(b)
    root = "/EDXLDistribution"
    found: list[str] = []

    def same(path: str, x: object, y: object) -> None:
        if x != y:
            found.append(f"{path}: {x!r} != {y!r}")

    for name, attr in (
        ("distributionID", "distribution_id"),
        ("senderID", "sender_id"),
        ("distributionStatus", "status"),
        ("distributionType", "distribution_type"),
        ("combinedConfidentiality", "combined_confidentiality"),
        ("language", "language"),
    ):
        same(f"{root}/{name}", getattr(left, attr), getattr(right, attr))
    if left.sent_at != right.sent_at:
        same(f"{root}/dateTimeSent", format_datetime(left.sent_at), format_datetime(right.sent_at))
    elif left.sent_at.utcoffset() != right.sent_at.utcoffset():
        found.append(
            f"{root}/dateTimeSent: the same instant written as {format_datetime(left.sent_at)!r}"
            f" and {format_datetime(right.sent_at)!r}"
        )
    for name, attr in (("senderRole", "sender_roles"), ("recipientRole", "recipient_roles"), ("keyword", "keywords")):  # fmt: skip
        _compare_lists(found, f"{root}/{name}", getattr(left, attr), getattr(right, attr))
    _compare_strings(found, f"{root}/distributionReference", left.distribution_references, right.distribution_references)  # fmt: skip

    def addresses(path: str, x: ExplicitAddress, y: ExplicitAddress) -> None:
        _compare_text(found, f"{path}/explicitAddressScheme", x.scheme, y.scheme)
        _compare_strings(found, f"{path}/explicitAddressValue", x.values, y.values)

    _compare_items(found, f"{root}/explicitAddress", left.explicit_addresses, right.explicit_addresses, addresses)  # fmt: skip

    def areas(path: str, x: TargetArea, y: TargetArea) -> None:
        for name, attr in (("circle", "circles"), ("polygon", "polygons"), ("country", "countries"), ("subdivision", "subdivisions"), ("locCodeUN", "loc_codes_un")):  # fmt: skip
            _compare_strings(found, f"{path}/{name}", getattr(x, attr), getattr(y, attr))

    _compare_items(found, f"{root}/targetArea", left.target_areas, right.target_areas, areas)
    _compare_items(
        found, f"{root}/contentObject", _grouped(left.contents), _grouped(right.contents),
        lambda path, x, y: _compare_content(found, path, x, y),
    )  # fmt: skip
    return found


_T = TypeVar("_T")


def _grouped(contents: Sequence[ContentObject]) -> list[list[ContentObject]]:
    """The contents by contentObject (one contentObject may embed several documents)."""
    groups: dict[int, list[ContentObject]] = {}
    for content in contents:
        groups.setdefault(content.position, []).append(content)
    return [groups[p] for p in sorted(groups)]


def _compare_items(
    found: list[str], path: str, left: Sequence[_T], right: Sequence[_T],
    compare: Callable[[str, _T, _T], None],
) -> None:  # fmt: skip
    if len(left) != len(right):
        found.append(f"{path}: {len(left)} != {len(right)} elements")
    for i, (x, y) in enumerate(zip(left, right, strict=False)):
        compare(f"{path}[{i + 1}]", x, y)


def _compare_text(found: list[str], path: str, x: str, y: str) -> None:
    if x.strip() != y.strip():
        found.append(f"{path}: {x!r} != {y!r}")


def _compare_strings(found: list[str], path: str, left: Sequence[str], right: Sequence[str]) -> None:  # fmt: skip
    _compare_items(found, path, left, right, lambda where, x, y: _compare_text(found, where, x, y))


def _compare_lists(found: list[str], path: str, left: Sequence[ValueList], right: Sequence[ValueList]) -> None:  # fmt: skip
    def one(where: str, x: ValueList, y: ValueList) -> None:
        _compare_text(found, f"{where}/valueListUrn", x.urn, y.urn)
        _compare_strings(found, f"{where}/value", x.values, y.values)

    _compare_items(found, path, left, right, one)


def _compare_content(found: list[str], path: str, left: list[ContentObject], right: list[ContentObject]) -> None:  # fmt: skip
    x, y = left[0], right[0]
    for name, attr in (("contentDescription", "description"), ("incidentID", "incident_id"), ("incidentDescription", "incident_description"), ("confidentiality", "confidentiality")):  # fmt: skip
        _compare_text(found, f"{path}/{name}", getattr(x, attr), getattr(y, attr))
    for name, attr in (("contentKeyword", "keywords"), ("originatorRole", "originator_roles"), ("consumerRole", "consumer_roles")):  # fmt: skip
        _compare_lists(found, f"{path}/{name}", getattr(x, attr), getattr(y, attr))
    if (x.xml is None) != (y.xml is None):
        found.append(f"{path}: {'xmlContent' if x.xml is not None else 'nonXMLContent'} != {'xmlContent' if y.xml is not None else 'nonXMLContent'}")  # fmt: skip
        return
    if x.xml is None:
        for name, attr in (("mimeType", "mime_type"), ("size", "size"), ("digest", "digest"), ("uri", "uri"), ("contentData", "data")):  # fmt: skip
            if getattr(x, attr) != getattr(y, attr):
                found.append(f"{path}/nonXMLContent/{name}: {getattr(x, attr)!r} != {getattr(y, attr)!r}")  # fmt: skip
        return
    _compare_items(
        found, f"{path}/xmlContent/embeddedXMLContent", left, right,
        lambda where, p, q: _compare_tree_documents(found, where, p.xml or b"", q.xml or b""),
    )  # fmt: skip


def _compare_tree_documents(found: list[str], path: str, x: bytes, y: bytes) -> None:
    left, right = parse_xml(x, error=DeError), parse_xml(y, error=DeError)
    _compare_trees(found, f"{path}/{etree.QName(left).localname}", left, right)


def _compare_trees(found: list[str], path: str, x: etree._Element, y: etree._Element) -> None:
    """`path` names `x` (and `y`); repeated children are numbered from 1: ".../info[2]"."""
    if x.tag != y.tag:
        found.append(f"{path}: <{etree.QName(x).text}> != <{etree.QName(y).text}>")
        return
    if dict(x.attrib) != dict(y.attrib):
        found.append(f"{path}/@*: {dict(x.attrib)!r} != {dict(y.attrib)!r}")
    if not _same_text(x.text, y.text):
        found.append(f"{path}: {' '.join((x.text or '').split())!r} != {' '.join((y.text or '').split())!r}")  # fmt: skip
    left = [c for c in x if isinstance(c.tag, str)]
    right = [c for c in y if isinstance(c.tag, str)]
    if len(left) != len(right):
        names = [etree.QName(c).localname for c in left], [etree.QName(c).localname for c in right]
        found.append(f"{path}: children {names[0]} != {names[1]}")
        return
    totals = Counter(etree.QName(c).localname for c in left)
    seen: Counter[str] = Counter()
    for a, b in zip(left, right, strict=True):
        name = etree.QName(a).localname
        seen[name] += 1
        step = f"{path}/{name}" + (f"[{seen[name]}]" if totals[name] > 1 else "")
        _compare_trees(found, step, a, b)


def _same_text(x: str | None, y: str | None) -> bool:
    """Equal after collapsing whitespace, or token by token (split at whitespace and commas, as
    in coordinate lists) equal as text, as decimals or as the same xs:dateTime instant."""
    left, right = " ".join((x or "").split()), " ".join((y or "").split())
    if left == right:
        return True
    tokens = re.split(r"[\s,]+", left), re.split(r"[\s,]+", right)
    return len(tokens[0]) == len(tokens[1]) and all(
        _same_token(a, b) for a, b in zip(*tokens, strict=True)
    )


def _same_token(x: str, y: str) -> bool:
    if x == y:
        return True
    try:
        (m, mn), (n, nn) = parse_datetime(x), parse_datetime(y)
        return m == n and mn == nn
    except ValueError:
        pass
    try:
        return Decimal(x) == Decimal(y)
    except InvalidOperation:
        return False
