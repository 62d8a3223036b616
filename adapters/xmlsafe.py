"""Safe XML parsing for every adapter that reads XML (CAP, EDXL): bounded size, no DOCTYPE, no
entities, no DTD, no network. Pure: bytes in, an element or an error out.

Department feeds arrive from outside the exchange, so the parser trusts nothing: any DOCTYPE is
refused before libxml2 reads it (closing billion-laughs, external entities (XXE), external DTDs
and parameter entities at once), and checked again after parsing for encodings the byte scan
cannot read.
"""

from __future__ import annotations

from lxml import etree

MAX_XML_BYTES = 512 * 1024
DOCTYPE_REFUSED = (
    "DOCTYPE is not allowed: DTDs, entity declarations and external references are refused"
)


class XmlError(ValueError):
    """An XML document that is refused. `line` is the line in the input when known; `str()`
    starts with it ("line 12: ...") so a person can find the spot."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


def parse_xml(
    data: bytes, *, max_bytes: int = MAX_XML_BYTES, error: type[XmlError] = XmlError
) -> etree._Element:
    """The root element of `data`, parsed safely; refusals raise `error` (an XmlError class)."""
    if len(data) > max_bytes:
        raise error(f"document is {len(data)} bytes, larger than the limit of {max_bytes} bytes")
    if (line := doctype_line(data)) is not None:
        raise error(DOCTYPE_REFUSED, line=line)
    # A parser per call: lxml parsers must not be shared between threads. Do not add
    # collect_ids=False: lxml sets libxml2's XML_SKIP_IDS bit in `loadsubset` for it, and any
    # non-zero `loadsubset` makes libxml2 load the external DTD subset and parameter entities
    # (lxml 6.1 / libxml2 2.14, caught by the CAP codec's named-pipe tests).
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        message = exc.msg.split(", line ")[0] if exc.msg else "syntax error"
        raise error(f"not well-formed XML: {message}", line=exc.lineno or None) from None
    # Only plain reads here: DocInfo.externalDTD would load the external subset.
    if root.getroottree().docinfo.doctype:
        raise error(DOCTYPE_REFUSED, line=root.sourceline)
    return root


def doctype_line(data: bytes) -> int | None:
    """The line of a DOCTYPE in the document's prolog (after the XML declaration, comments and
    processing instructions), if it has one.

    A plain scan, not a regular expression: patterns over repeated comments and whitespace can
    backtrack catastrophically. UTF-16 documents (with a byte-order mark) are decoded first;
    everything else is scanned as bytes, which suits every ASCII-compatible encoding."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace").lstrip("\ufeff")
    else:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    position = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if text.startswith("<!DOCTYPE", position):
            return text.count("\n", 0, position) + 1
        if text.startswith("<!--", position):
            end, skip = text.find("-->", position + 4), 3
        elif text.startswith("<?", position):  # the XML declaration or a processing instruction
            end, skip = text.find("?>", position + 2), 2
        else:
            return None
        if end < 0:
            return None  # unterminated: libxml2 reports it
        position = end + skip
