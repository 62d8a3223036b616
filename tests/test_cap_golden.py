"""The CAP golden corpus (tests/golden/cap/): realistic documents of fictional issuers, one per
shape that real feeds send. Each goes in and comes out intact: parse_cap accepts it, the export
is schema-valid and means the same (cap_differences), and the gateway's rules accept the event."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from lxml import etree

from dutylink.adapters.cap import codec
from dutylink.adapters.cap.codec import parse_cap, to_cap_xml
from dutylink.adapters.cap.compare import cap_differences
from dutylink.adapters.cap.mapping import outbound_mapping, warning_event
from dutylink.v1 import event_pb2, warning_pb2
from gateway.core.validation import Validator

GOLDEN = Path(__file__).parent / "golden" / "cap"
GOLDEN_FILES = sorted(GOLDEN.glob("*.xml"))
XSD = Path(codec.__file__).parent / "schema" / "CAP-v1.2.xsd"

# What the gateway advises against, but accepts (advice, not refusal), per golden document.
ADVISED = {
    "long-headline.xml": [("warning.infos[0].headline", "advice.max_len")],
    "many-areas-69.xml": [("warning.infos[0].areas", "advice.max_items")],
    "cancel-expires-equals-sent.xml": [("", "event.expires_after_time")],
}


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def test_the_corpus_has_every_class_of_document() -> None:
    assert [path.name for path in GOLDEN_FILES] == [
        "ack.xml",
        "altitude-ceiling.xml",
        "bilingual-zh-cn-en-us.xml",
        "cancel-expires-equals-sent.xml",
        "circles-and-polygons.xml",
        "forwarded-by-aggregator.xml",
        "iso-8859-1.xml",
        "large-resource-100k.xml",
        "long-headline.xml",
        "many-areas-69.xml",
        "many-geocodes.xml",
        "private-scope.xml",
        "restricted-scope.xml",
        "signed.xml",
        "update-references-mixed-offsets.xml",
    ]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_golden_is_accepted_and_keeps_its_bytes(path: Path) -> None:
    original = path.read_bytes()
    assert parse_cap(original).cap_xml == original


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_golden_export_is_valid_cap(path: Path) -> None:
    exported = to_cap_xml(parse_cap(path.read_bytes()))
    # Checked here with libxml2's validator, independently of the codec's own check.
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    assert schema.validate(etree.fromstring(exported)), schema.error_log


@pytest.mark.parametrize(
    "path", [p for p in GOLDEN_FILES if p.name != "signed.xml"], ids=lambda path: path.stem
)
def test_golden_export_means_the_same(path: Path) -> None:
    original = path.read_bytes()
    assert cap_differences(original, to_cap_xml(parse_cap(original))) == []


def test_signed_alert_is_forwarded_byte_equal_and_re_rendering_drops_only_the_signature() -> None:
    original = golden("signed.xml")
    warning = parse_cap(original)
    event = event_pb2.Event(id="t:1", warning=warning)
    forwarded = outbound_mapping(forward_original=True)(event)
    assert forwarded is not None
    assert forwarded.body == original
    # A re-rendered document cannot carry a signature over other bytes: it loses exactly that.
    rendered = outbound_mapping(forward_original=False)(event)
    assert rendered is not None
    assert cap_differences(original, rendered.body) == ["/alert/ds:Signature[1]: only in a"]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_golden_passes_the_gateway_rules(path: Path) -> None:
    event = warning_event(parse_cap(path.read_bytes()), "golden", "310000")
    assert event is not None
    checked = Validator().check(event)
    assert checked.problems == ()
    advised = [(advisory.field, advisory.rule_id) for advisory in checked.advisories]
    assert advised == ADVISED.get(path.name, [])


def test_an_ack_is_published_as_warning_ack_so_the_exchange_counts_it_as_taken() -> None:
    event = warning_event(parse_cap(golden("ack.xml")), "golden", "310000")
    assert event is not None and event.type == "warning.ack"
    (reference,) = event.warning.references
    assert (reference.sender, reference.identifier) == (
        "ecology.sh.example",
        "SH-ECO-20260815-0007",
    )


def test_iso_8859_1_text_reads_as_unicode_and_exports_as_utf8() -> None:
    original = golden("iso-8859-1.xml")
    assert "é".encode("latin-1") in original and "é".encode() not in original
    warning = parse_cap(original)
    assert warning.infos[0].sender_name == "Service fictif de prévision des avalanches"
    assert "Bülletin" in warning.infos[0].instruction
    exported = to_cap_xml(warning)
    assert exported.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert "prévision".encode() in exported


def test_large_inline_resource_survives_with_its_digest() -> None:
    original = golden("large-resource-100k.xml")
    assert len(original) > 100_000
    resource = parse_cap(original).infos[0].resources[0]
    assert len(resource.deref_uri) == resource.size == 73_600
    assert hashlib.sha1(resource.deref_uri).hexdigest() == resource.digest


def test_mixed_offsets_are_reproduced_exactly() -> None:
    original = golden("update-references-mixed-offsets.xml")
    warning = parse_cap(original)
    info = warning.infos[0]
    assert warning.utc_offset_minutes == 540
    assert info.effective_utc_offset_minutes == 0
    assert not info.HasField("onset_utc_offset_minutes")
    assert info.expires_utc_offset_minutes == 690
    exported = to_cap_xml(warning)
    for text in (
        b"<effective>2026-02-14T00:40:00-00:00</effective>",
        b"<onset>2026-02-14T09:30:41+09:00</onset>",
        b"<expires>2026-02-14T13:10:00+11:30</expires>",
        b"EQ-EX-2026-0214,2026-02-14T00:31:00-00:00 ",
    ):
        assert text in exported


def test_plus_zero_form_of_a_forwarded_alert_is_reproduced() -> None:
    warning = parse_cap(golden("forwarded-by-aggregator.xml"))
    assert warning.utc_plus_zero
    exported = to_cap_xml(warning)
    assert b"<sent>2026-04-09T22:15:30+00:00</sent>" in exported
    assert b"<expires>2026-04-11T06:00:00+00:00</expires>" in exported


def test_cancellation_expiring_when_sent_is_kept() -> None:
    warning = parse_cap(golden("cancel-expires-equals-sent.xml"))
    assert warning.msg_type == warning_pb2.CAP_MSG_TYPE_CANCEL
    assert warning.infos[0].expires == warning.sent
    assert [r.identifier for r in warning.references] == ["31000041600000_20261123080000"]
