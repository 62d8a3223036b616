"""Semantic comparison of two EDXL-RM documents. Pure: bytes in, a list of differences out.

`rm_differences(a, b)` names every difference by element path, e.g.
`/RequestResource/ResourceInformation[ResourceInfoElementID=1]/Resource/Keyword: only in b: …`.
Ignored, because EDXL-RM gives them no meaning: namespace prefixes, comments, whitespace
around and inside text (XML's four space characters collapsed), the spelling of numbers
(`Amount` compared as xs:double), the offset a dateTime is written in when both name one
(compared as instants), and the order of the repeated elements whose order means nothing
(`_UNORDERED`: contacts, funding, incidents, resource lines, keywords, radios). Everything
else, element order within a repeated element such as `ScheduleInformation` (a Route is an
ordered list) or `Value` included, is compared.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC

from lxml import etree

from dutylink.adapters.edxl.xml import XmlError, parse_datetime, parse_xml

_UNORDERED = frozenset(
    {
        "ContactInformation",
        "Funding",
        "IncidentInformation",
        "ResourceInformation",
        "Keyword",
        "Radio",
    }
)
_TIMES = frozenset({"SentDateTime", "DateTime", "InventoryRefreshDateTime"})
_DOUBLES = frozenset({"Amount"})
_SPACE = re.compile(r"[ \t\n\r]+")
_RM_NAMESPACES = frozenset(
    {"urn:oasis:names:tc:emergency:EDXL:RM:1.0:msg", "urn:oasis:names:tc:emergency:EDXL:RM:1.0"}
)


def rm_differences(a: bytes, b: bytes) -> list[str]:
    """Every semantic difference between EDXL-RM documents `a` and `b`; [] when equal."""
    roots = []
    for label, data in (("a", a), ("b", b)):
        try:
            roots.append(parse_xml(data))
        except XmlError as error:
            return [f"document {label} is not readable XML: {error}"]
    return element_differences(roots[0], roots[1])


def element_differences(a: etree._Element, b: etree._Element, path: str | None = None) -> list[str]:
    """Differences between two elements and their subtrees (see the module's rules)."""
    here = path if path is not None else "/" + _local(str(a.tag))
    if a.tag != b.tag:
        return [f"{here}: element {a.tag!s} in a, {b.tag!s} in b"]
    found: list[str] = []
    attributes_a, attributes_b = _attributes(a), _attributes(b)
    for name in dict.fromkeys([*attributes_a, *attributes_b]):
        if attributes_a.get(name) != attributes_b.get(name):
            found.append(
                f"{here}/@{_local(name)}: "
                f"{attributes_a.get(name)!r} in a, {attributes_b.get(name)!r} in b"
            )
    text_a, text_b = _own_text(a), _own_text(b)
    if text_a != text_b:
        found.append(f"{here}: text {text_a!r} in a, {text_b!r} in b")
    children_a, children_b = _children(a), _children(b)
    groups: dict[str, tuple[list[etree._Element], list[etree._Element]]] = {}
    for side, children in ((0, children_a), (1, children_b)):
        for child in children:
            groups.setdefault(str(child.tag), ([], []))[side].append(child)
    for tag, (group_a, group_b) in groups.items():
        name = _local(tag)
        unordered = name in _UNORDERED and tag[1:].partition("}")[0] in _RM_NAMESPACES
        if unordered:
            found += _unordered(group_a, group_b, f"{here}/{name}")
        else:
            found += _ordered(group_a, group_b, f"{here}/{name}")
    return found


def _ordered(group_a: list[etree._Element], group_b: list[etree._Element], base: str) -> list[str]:
    found: list[str] = []
    many = max(len(group_a), len(group_b)) > 1
    for i in range(max(len(group_a), len(group_b))):
        step = f"{base}[{i + 1}]" if many else base
        if i >= len(group_b):
            found.append(f"{step}: only in a")
        elif i >= len(group_a):
            found.append(f"{step}: only in b")
        else:
            found += element_differences(group_a[i], group_b[i], step)
    return found


def _unordered(
    group_a: list[etree._Element], group_b: list[etree._Element], base: str
) -> list[str]:
    found: list[str] = []
    if base.endswith("/ResourceInformation"):  # lines are keyed by their id
        keyed_a = {_line_id(line): line for line in group_a}
        keyed_b = {_line_id(line): line for line in group_b}
        if len(keyed_a) == len(group_a) and len(keyed_b) == len(group_b):
            for key in dict.fromkeys([*keyed_a, *keyed_b]):
                step = f"{base}[ResourceInfoElementID={key}]"
                if key not in keyed_b:
                    found.append(f"{step}: only in a")
                elif key not in keyed_a:
                    found.append(f"{step}: only in b")
                else:
                    found += element_differences(keyed_a[key], keyed_b[key], step)
            return found
    left = Counter(_canonical(element) for element in group_a)
    right = Counter(_canonical(element) for element in group_b)
    only_a = [e for e in group_a if _unmatched(right, _canonical(e))]
    only_b = [e for e in group_b if _unmatched(left, _canonical(e))]
    if len(only_a) == 1 and len(only_b) == 1:  # one changed element: say what changed in it
        return element_differences(only_a[0], only_b[0], base)
    found += [f"{base}: only in a: {_summary(element)}" for element in only_a]
    found += [f"{base}: only in b: {_summary(element)}" for element in only_b]
    return found


def _unmatched(partners: Counter[str], key: str) -> bool:
    """True when `key` has no partner left (each partner is counted off as it is used)."""
    if partners[key] > 0:
        partners[key] -= 1
        return False
    return True


def _line_id(line: etree._Element) -> str:
    for child in _children(line):
        if _local(str(child.tag)) == "ResourceInfoElementID":
            return _collapse(child.text or "")
    return ""


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _attributes(element: etree._Element) -> dict[str, str]:
    return {str(name): _collapse(str(value)) for name, value in element.attrib.items()}


def _own_text(element: etree._Element) -> str:
    """The element's own character content (not its children's), normalised by its type."""
    parts = [element.text or ""] + [child.tail or "" for child in element]
    raw = _collapse("".join(parts))
    name = _local(str(element.tag))
    if name in _TIMES and not _children(element):
        return _instant(raw)
    if name in _DOUBLES and not _children(element):
        try:
            return repr(float(raw.replace("INF", "inf")))
        except ValueError:
            return raw
    return raw


def _instant(value: str) -> str:
    """A dateTime as its UTC instant when it names an offset; as written otherwise."""
    try:
        moment, nanos = parse_datetime(value)
    except ValueError:
        try:  # no offset: compare the local time itself (24:00 normalised)
            moment, nanos = parse_datetime(value, default_tz=UTC)
        except ValueError:
            return value
        return f"local {moment.replace(tzinfo=None).isoformat()}.{nanos:09d}"
    utc = moment.astimezone(UTC)
    return f"{utc.isoformat()}.{nanos:09d}"


def _canonical(element: etree._Element) -> str:
    """An order-insensitive (where allowed) normal form of a subtree, for multiset matching."""
    children = [_canonical(child) for child in _children(element)]
    grouped: dict[str, list[str]] = {}
    for child, form in zip(_children(element), children, strict=True):
        grouped.setdefault(str(child.tag), []).append(form)
    for tag, forms in grouped.items():
        if _local(tag) in _UNORDERED:
            forms.sort()
    attributes = sorted(_attributes(element).items())
    body = "".join(form for forms in grouped.values() for form in forms)
    return f"<{element.tag!s} {attributes!r} {_own_text(element)!r}>{body}</>"


def _summary(element: etree._Element) -> str:
    text = _collapse(" ".join(element.itertext()))
    return f"<{_local(str(element.tag))}> {text[:120]!r}"


def _local(tag: str) -> str:
    """Local name of a Clark-notation tag or attribute name: {urn:x}Name -> Name."""
    return tag.rpartition("}")[2]


def _collapse(value: str) -> str:
    return _SPACE.sub(" ", value).strip(" ")
