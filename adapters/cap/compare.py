"""Comparing two CAP 1.2 documents by meaning: a pure function, bytes in, differences out.

    cap_differences(original, exported)
    # ["/alert/info[1]/headline: 'Flood warning' != 'Flood warnings'",
    #  "/alert/info[2]/area[3]: only in a"]

Not differences (they carry no meaning in CAP): the order of differently named siblings (schema
order), whitespace around values and between elements, comments, the spelling of numbers
(`121.40` = `121.4`), base64 line wrapping, how a dateTime spells its instant as long as instant
and offset agree (`+00:00` = `-00:00`, both UTC), double quotes around list entries without
spaces, namespace prefixes, the encoding, and empty optional elements (`<web></web>`, which CAP
readers treat as absent). Everything else is: values, counts, the order of same-named siblings
(info blocks, areas, polygons), offsets of dateTimes, and the exact text of `references` (which
receivers match textually). Elements outside CAP (an XML Signature) are compared as XML.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import re
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from lxml import etree

from dutylink.adapters.cap.codec import (
    CAP_NAMESPACE,
    DSIG_NAMESPACE,
    REPEATABLE_ELEMENTS,
    CapError,
    step_name,
)
from dutylink.adapters.xmlsafe import parse_xml

_XML_SPACE: Final = " \t\r\n"
_XML_SPACE_RUN: Final = re.compile(r"[ \t\r\n]+")
_LIST_ENTRY: Final = re.compile(r'"([^"]*)"|([^ \t\r\n"]+)')


def cap_differences(a: bytes, b: bytes) -> list[str]:
    """Every difference in meaning between CAP documents `a` and `b`, each named by its element
    path ("/alert/info[1]/headline: 'x' != 'y'"); [] when they mean the same. Raises CapError
    when either is not well-formed XML (parsed as safely as `parse_cap` does)."""
    root_a = parse_xml(a, max_bytes=max(len(a), 1), error=CapError)
    root_b = parse_xml(b, max_bytes=max(len(b), 1), error=CapError)
    differences: list[str] = []
    if root_a.tag != root_b.tag:
        return [f"/: root <{step_name(root_a)}> != <{step_name(root_b)}>"]
    _compare(root_a, root_b, "/" + step_name(root_a), differences)
    return differences


def _compare(a: etree._Element, b: etree._Element, path: str, out: list[str]) -> None:
    attributes_a, attributes_b = dict(a.attrib), dict(b.attrib)
    for name in sorted(set(attributes_a) | set(attributes_b)):
        value_a, value_b = attributes_a.get(name), attributes_b.get(name)
        if value_a != value_b:
            out.append(f"{path}/@{_attribute_name(name)}: {_show(value_a)} != {_show(value_b)}")
    children_a, children_b = _meaningful_children(a), _meaningful_children(b)
    if not children_a and not children_b:
        _compare_values(a, b, path, out)
        return
    for tag in _union_in_order(children_a, children_b):
        _compare_siblings(children_a.get(tag, []), children_b.get(tag, []), path, out)


def _compare_siblings(
    left: list[etree._Element], right: list[etree._Element], path: str, out: list[str]
) -> None:
    """Same-named siblings, aligned by content, so that one area inserted or removed is named
    once instead of shifting every later area into a difference."""
    count = max(len(left), len(right))

    def step(elem: etree._Element, index: int) -> str:
        return f"{path}/{_step(elem, index, count)}"

    matcher = difflib.SequenceMatcher(
        None, [_meaning(e) for e in left], [_meaning(e) for e in right], autojunk=False
    )
    for operation, a_from, a_to, b_from, b_to in matcher.get_opcodes():
        if operation == "equal":
            continue
        paired = min(a_to - a_from, b_to - b_from)
        for offset in range(paired):  # replaced: compared in place, named by a's position
            index = a_from + offset
            _compare(left[index], right[b_from + offset], step(left[index], index), out)
        for index in range(a_from + paired, a_to):
            out.append(f"{step(left[index], index)}: only in a{_shown_value(left[index])}")
        for index in range(b_from + paired, b_to):
            out.append(f"{step(right[index], index)}: only in b{_shown_value(right[index])}")


def _meaning(elem: etree._Element) -> Hashable:
    """A hashable form of the element that is equal exactly when `_compare` finds nothing."""
    children = _meaningful_children(elem)
    attributes = tuple(sorted(elem.attrib.items()))
    if not children:
        name = etree.QName(elem).localname if _is_cap(elem) else ""
        value = _READERS.get(name, _plain)(_text(elem))
        return (attributes, value)
    return (
        attributes,
        tuple(
            sorted(
                (tag, tuple(_meaning(child) for child in group)) for tag, group in children.items()
            )
        ),
    )


def _meaningful_children(elem: etree._Element) -> dict[str, list[etree._Element]]:
    """Element children grouped by qualified tag, in first-seen order; empty CAP leaves (which
    CAP readers treat as absent) are left out."""
    groups: dict[str, list[etree._Element]] = {}
    for child in elem:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions, entity references
        if _is_cap(child) and len(child) == 0 and not _text(child):
            continue
        groups.setdefault(child.tag, []).append(child)
    return groups


def _union_in_order(
    a: dict[str, list[etree._Element]], b: dict[str, list[etree._Element]]
) -> list[str]:
    return list(a) + [tag for tag in b if tag not in a]


def _step(elem: etree._Element, index: int, count: int) -> str:
    name = step_name(elem)
    repeatable = etree.QName(elem).localname in REPEATABLE_ELEMENTS or not _is_cap(elem)
    return f"{name}[{index + 1}]" if repeatable or count > 1 else name


def _is_cap(elem: etree._Element) -> bool:
    return etree.QName(elem).namespace == CAP_NAMESPACE


def _attribute_name(name: str) -> str:
    qname = etree.QName(name)
    if qname.namespace == DSIG_NAMESPACE:
        return f"ds:{qname.localname}"
    return qname.text


def _text(elem: etree._Element) -> str:
    return (elem.text or "").strip(_XML_SPACE)


def _compare_values(a: etree._Element, b: etree._Element, path: str, out: list[str]) -> None:
    name = etree.QName(a).localname if _is_cap(a) else ""
    reader = _READERS.get(name, _plain)
    text_a, text_b = _text(a), _text(b)
    if text_a == text_b:
        return
    value_a, value_b = reader(text_a), reader(text_b)
    if value_a == value_b:
        return
    if name == "derefUri":
        out.append(f"{path}: {_describe_bytes(text_a)} != {_describe_bytes(text_b)}")
    else:
        out.append(f"{path}: {_show(text_a)} != {_show(text_b)}")


def _shown_value(elem: etree._Element) -> str:
    if len(elem) or not _text(elem):
        return ""
    return f" ({_show(_text(elem))})"


def _show(value: str | None) -> str:
    if value is None:
        return "(absent)"
    return repr(value if len(value) <= 80 else value[:79] + "…")


def _describe_bytes(text: str) -> str:
    data = _base64(text)
    if isinstance(data, bytes):
        return f"{len(data)} bytes (SHA-1 {hashlib.sha1(data).hexdigest()[:12]}…)"
    return _show(text)


# Typed readers: each turns a value's text into something that compares by meaning. A text that
# does not read (a malformed number) is compared as itself, so it is still reported.


def _plain(text: str) -> object:
    return text


def _instant(text: str) -> object:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    offset = moment.utcoffset()
    if offset is None:
        return text
    return (moment - offset).replace(tzinfo=None), offset // timedelta(minutes=1)


def _decimal(text: str) -> object:
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


def _point(text: str) -> object:
    latitude, comma, longitude = text.partition(",")
    return (_decimal(latitude), _decimal(longitude)) if comma else text


def _polygon(text: str) -> object:
    return tuple(_point(pair) for pair in _XML_SPACE_RUN.split(text) if pair)


def _circle(text: str) -> object:
    parts = [part for part in _XML_SPACE_RUN.split(text) if part]
    return (_point(parts[0]), _decimal(parts[1])) if len(parts) == 2 else text


def _list(text: str) -> object:
    return tuple(quoted or bare for quoted, bare in _LIST_ENTRY.findall(text))


def _references(text: str) -> object:
    return tuple(triple for triple in _XML_SPACE_RUN.split(text) if triple)


def _base64(text: str) -> object:
    try:
        return base64.b64decode(_XML_SPACE_RUN.sub("", text), validate=True)
    except binascii.Error:
        return text


_READERS: Final[dict[str, Callable[[str], object]]] = {
    "sent": _instant,
    "effective": _instant,
    "onset": _instant,
    "expires": _instant,
    "size": _decimal,
    "altitude": _decimal,
    "ceiling": _decimal,
    "polygon": _polygon,
    "circle": _circle,
    "addresses": _list,
    "incidents": _list,
    "references": _references,
    "derefUri": _base64,
}
