"""The EDXL adapter end to end: resource messages (and EDXL-DE envelopes carrying CAP and RM)
dropped by one agency arrive as equivalent EDXL-RM files at another."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import Callable, Iterable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pydantic import SecretStr

from dutylink.adapters.edxl.adapter import KIND
from dutylink.adapters.edxl.de import de_differences, unwrap_de
from dutylink.adapters.edxl.mapping import (
    de_outbound_mapping,
    envelope_of,
    inbound_mapping,
    resource_event,
)
from dutylink.adapters.edxl.rm import parse_rm
from dutylink.adapters.edxl.xml import load_schema
from dutylink.adapters.framework import Pipeline, RejectedStore
from dutylink.adapters.metrics import Metrics
from dutylink.adapters.options import AdapterConfigError
from dutylink.adapters.records import Parts, Record
from dutylink.adapters.runner import AdapterConfig, AdapterRunner, load_adapter_config
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import event_pb2
from gateway.core.validation import Validator
from gateway.server import Gateway
from tests.conftest import TOKENS

SAMPLES = Path(__file__).parent.parent / "adapters" / "edxl" / "samples"


@pytest.fixture
def gateway(pipe_gateway: Gateway) -> Gateway:
    """Standards samples, not one loop: see pipe_gateway."""
    return pipe_gateway


async def until(condition: Callable[[], bool], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not within {seconds} s")


async def test_resource_messages_and_envelopes_cross_to_another_agency_as_edxl_rm(
    gateway: Gateway, tmp_path: Path
) -> None:
    drop, outbox = tmp_path / "drop", tmp_path / "outbox"
    fire = AdapterRunner(KIND, AdapterConfig(
        file=tmp_path / "fire.toml", gateway=gateway.address, token=SecretStr(TOKENS["fire"]),
        state_dir=tmp_path / "fire", options={"system": "fire119", "division_code": "310115",
                                             "inbound": {"directory": str(drop), "poll_seconds": 0.1}},
    ))  # fmt: skip
    emergency = AdapterRunner(KIND, AdapterConfig(
        file=tmp_path / "em.toml", gateway=gateway.address, token=SecretStr(TOKENS["emergency"]),
        state_dir=tmp_path / "emergency",
        options={"outbound": {"subscription": "rm-out", "directory": str(outbox)}},
    ))  # fmt: skip
    tasks = [asyncio.create_task(r.run()) for r in (fire, emergency)]
    try:
        await fire.wait_started()
        await emergency.wait_started()
        await asyncio.sleep(0.3)
        request = SAMPLES / "01-request-resource.xml"
        (drop / request.name).write_bytes(request.read_bytes())
        await until(lambda: len(list(outbox.glob("*.xml"))) == 1)
        (written,) = outbox.glob("*.xml")
        assert parse_rm(written.read_bytes()) == parse_rm(request.read_bytes())

        envelope = SAMPLES / "de-envelope-cap-and-request-resource.xml"
        (drop / envelope.name).write_bytes(envelope.read_bytes())
        (drop / "broken.xml").write_bytes(b"<RequestResource xmlns='urn:x'>")
        await until(lambda: (tmp_path / "fire" / "drop" / "done" / "broken.xml").exists())
        await until(lambda: (tmp_path / "fire" / "drop" / "done" / envelope.name).exists())
        reasons = [p.read_text() for p in (tmp_path / "fire" / "rejected").glob("*.reason.json")]
        assert len(reasons) == 1 and "broken.xml" in reasons[0] and "XML" in reasons[0]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    published = fire.metrics.registry.get_sample_value(
        "dutylink_adapter_events_published_total", {"adapter": "edxl"}
    )
    # the request; then the envelope's CAP alert and its request (the same message id as the
    # first file's: a duplicate for the gateway, counted as published, stored once)
    assert published == 3
    assert len(list(outbox.glob("*.xml"))) == 1


# --- EDXL-DE: partial acceptance, kept envelope metadata, envelopes out ------------------------

GOLDEN = Path(__file__).parent / "golden" / "edxl-de"
DE = "{urn:oasis:names:tc:emergency:EDXL:DE:1.0}"
# What each golden envelope becomes: event ids by content position, and the content positions
# the mapping rejects with a word of the reason.
EXPECTED: dict[str, tuple[dict[int, str], dict[int, str]]] = {
    "mixed-good-and-bad.xml": (
        {0: "em:emergency:CAP:2026-0903-011", 4: "em:emergency:RM:2026-0903-022",
         5: "em:emergency:CAP:2026-0903-009"},
        {1: "'Notice' is not one of", 2: "'Boss'", 3: "text/plain content is neither"},
    ),
    "several-cap-alerts.xml": (
        {0: "em:NWS-EC-TY2614-W-0300", 1: "em:NWS-EC-RS-W-0301", 2: "em:NWS-EC-GALE-W-0302"}, {},
    ),
    "bilingual-cap-target-areas.xml": ({0: "em:RTWC-TTM-20261101-01"}, {}),
}  # fmt: skip


def only_contents(data: bytes, positions: Iterable[int]) -> bytes:
    """The envelope with only the content objects at `positions` (from 0)."""
    root = etree.fromstring(data)
    keep = set(positions)
    for position, element in enumerate(root.findall(f"{DE}contentObject")):
        if position not in keep:
            root.remove(element)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def schema_valid(data: bytes) -> bool:
    return load_schema("edxl-de/edxlde-1_0.xsd").validate(etree.fromstring(data))


def mapped(name: str) -> Parts:
    data = (GOLDEN / name).read_bytes()
    result = inbound_mapping("em", "310115", "INTERNAL")(Record(name, data, f"drop/{name}"))
    assert isinstance(result, Parts)
    return result


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_good_contents_become_valid_events_with_their_envelope_and_bad_ones_parts(
    name: str,
) -> None:
    events, rejected = EXPECTED[name]
    result = mapped(name)
    assert {p.relation["content_position"]: e.id for p, e in result.events} == events
    assert {p.relation["content_position"]: why for p, why in result.rejected}.keys() == rejected.keys()  # fmt: skip
    for part, why in result.rejected:
        assert rejected[int(part.relation["content_position"])] in why
        assert part.relation["distribution_id"] == unwrap_de((GOLDEN / name).read_bytes()).distribution_id  # fmt: skip
    validator = Validator()
    for part, event in result.events:
        assert event.distribution.content.position == part.relation["content_position"]
        assert event.distribution.distribution_id == part.relation["distribution_id"]
        event.source = "emergency"
        problems = validator.problems(event)
        if event.id == "em:emergency:CAP:2026-0903-009":  # no such region: the gateway refuses
            assert [(p.field, p.rule_id) for p in problems] == [
                ("jurisdiction.division_code", "string.pattern")
            ]
        else:
            assert problems == [], (event.id, problems)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_envelope_rebuilt_from_its_events_is_schema_valid_and_equal_in_meaning(
    name: str,
) -> None:
    original = (GOLDEN / name).read_bytes()
    result = mapped(name)
    rebuilt = envelope_of([event for _, event in result.events])
    assert schema_valid(rebuilt)
    assert de_differences(only_contents(original, EXPECTED[name][0]), rebuilt) == []
    # and the differences from the whole original are just the rejected content objects
    if EXPECTED[name][1]:
        assert de_differences(original, rebuilt)[0] == "/EDXLDistribution/contentObject: 6 != 3 elements"  # fmt: skip


def test_de_differences_names_every_difference_by_element_path() -> None:
    original = (GOLDEN / "bilingual-cap-target-areas.xml").read_bytes()
    changed = (
        original.decode()
        .replace("<distributionID>RTWC-2026-1101-0142-01<", "<distributionID>RTWC-X<")
        .replace("2026-11-01T01:42:30.125Z", "2026-11-01T09:42:30.125+08:00")  # same instant
        .replace("<locCodeUN>CNNGB</locCodeUN>", "")
        .replace("tsunami-focal-point@", "focal-point@")
        .replace("<value>National Tsunami Warning Focal Point<", "<value>NTWFP<")
        .replace("<incidentID>RTWC-EQ-20261101-0138<", "<incidentID>EQ-0138<")
        .replace("tsunami waves of 0.3-1 m possible", "tsunami waves possible")
        .replace("<cap:circle>30.10,123.40 300</cap:circle>", "<cap:circle>30.1,123.4 300.0</cap:circle>")  # same
    ).encode()  # fmt: skip
    assert de_differences(original, changed) == [
        "/EDXLDistribution/distributionID: 'RTWC-2026-1101-0142-01' != 'RTWC-X'",
        "/EDXLDistribution/dateTimeSent: the same instant written as '2026-11-01T01:42:30.125Z' and '2026-11-01T09:42:30.125+08:00'",
        "/EDXLDistribution/recipientRole[1]/value[1]: 'National Tsunami Warning Focal Point' != 'NTWFP'",
        "/EDXLDistribution/explicitAddress[2]/explicitAddressValue[2]: 'tsunami-focal-point@civil-protection.example' != 'focal-point@civil-protection.example'",
        "/EDXLDistribution/targetArea[2]/locCodeUN: 2 != 1 elements",
        "/EDXLDistribution/contentObject[1]/incidentID: 'RTWC-EQ-20261101-0138' != 'EQ-0138'",
        "/EDXLDistribution/contentObject[1]/xmlContent/embeddedXMLContent[1]/alert/info[2]/headline: 'M7.4 East China Sea earthquake: tsunami waves of 0.3-1 m possible' != 'M7.4 East China Sea earthquake: tsunami waves possible'",
    ]  # fmt: skip
    assert de_differences(original, original) == []


def test_an_event_that_came_in_no_envelope_gets_one_from_its_own_fields() -> None:
    message = parse_rm((SAMPLES / "01-request-resource.xml").read_bytes())
    event = resource_event(message, "fire119", "310115", event_pb2.CLASSIFICATION_RESTRICTED)
    event.source = "fire"
    record = de_outbound_mapping()(event)
    assert record is not None and schema_valid(record.body)
    envelope = unwrap_de(record.body)
    assert (
        envelope.distribution_id,
        envelope.sender_id,
        envelope.status,
        envelope.distribution_type,
    ) == (
        "fire119:fire:RM:2026-0815-001",
        "fire",
        "Actual",
        "Request",
    )
    assert envelope.combined_confidentiality == "RESTRICTED"
    assert envelope.sent_at == event.time.ToDatetime(UTC)
    (content,) = envelope.contents
    assert content.kind == "rm" and content.xml is not None and content.incident_id == "INC-2026-0815-001"  # fmt: skip
    assert parse_rm(content.xml) == message


@pytest.mark.parametrize(
    ("outbound", "message"),
    [
        ({"directory": "o", "envelope": "cap"}, "envelope: 'cap' is not one of none, de"),
        ({"directory": "o", "families": ["warning"]}, "families: some of ['resource'] with envelope = 'none'"),
        ({"envelope": "de"}, "directory: required"),
        ({"directory": "o", "forward": True}, "unknown key 'forward'"),
        ([{"directory": "a"}, {"directory": "b"}], "each side needs its own subscription name"),
    ],
)  # fmt: skip
def test_bad_outbound_options_are_refused_naming_the_key(outbound: Any, message: str) -> None:
    with pytest.raises(AdapterConfigError, match=re.escape(message)):
        KIND.build({"outbound": outbound}, Path("state"))


async def test_an_envelopes_good_contents_cross_as_envelopes_and_its_bad_ones_wait_in_rejected(
    gateway: Gateway, tmp_path: Path
) -> None:
    drop, rm_out, de_out = tmp_path / "drop", tmp_path / "rm-out", tmp_path / "de-out"
    emergency = AdapterRunner(KIND, AdapterConfig(
        file=tmp_path / "em.toml", gateway=gateway.address, token=SecretStr(TOKENS["emergency"]),
        state_dir=tmp_path / "emergency", options={"system": "em", "division_code": "310115",
                                                   "inbound": {"directory": str(drop), "poll_seconds": 0.1}},
    ))  # fmt: skip
    fire = AdapterRunner(KIND, AdapterConfig(
        file=tmp_path / "fire.toml", gateway=gateway.address, token=SecretStr(TOKENS["fire"]),
        state_dir=tmp_path / "fire",
        options={"outbound": [{"subscription": "rm-out", "directory": str(rm_out)},
                              {"subscription": "de-out", "directory": str(de_out), "envelope": "de"}]},
    ))  # fmt: skip
    tasks = [asyncio.create_task(r.run()) for r in (emergency, fire)]
    try:
        await emergency.wait_started()
        await fire.wait_started()
        await asyncio.sleep(0.3)
        for name in EXPECTED:
            (drop / name).write_bytes((GOLDEN / name).read_bytes())
        done = tmp_path / "emergency" / "drop" / "done"
        await until(lambda: all((done / name).exists() for name in EXPECTED))
        await until(lambda: len(list(de_out.glob("*.xml"))) == 6 and len(list(rm_out.glob("*.xml"))) == 1)  # fmt: skip
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # the bad content objects, each on its own with the relation to its envelope
    reasons = {}
    for path in (tmp_path / "emergency" / "rejected").glob("*.reason.json"):
        reason = json.loads(path.read_text())
        reasons[reason["relation"]["content_position"]] = reason
        kept = path.with_name(path.name.removesuffix(".reason.json") + ".record").read_bytes()
        reason["kept_root"] = etree.QName(etree.fromstring(kept)).localname
    assert sorted(reasons) == [1, 2, 3, 5]
    for position, reason in reasons.items():
        assert reason["record_id"] == "mixed-good-and-bad.xml"
        assert reason["origin"].endswith("mixed-good-and-bad.xml")
        assert reason["part"] == f"contentObject[{position + 1}]"
        assert reason["relation"]["distribution_id"] == "emergency:DE:2026-0903-017"
    assert [reasons[p]["kept_root"] for p in (1, 2, 3, 5)] == ["alert", "RequestResource", "contentObject", "alert"]  # fmt: skip
    assert "jurisdiction.division_code" in reasons[5]["reason"]  # refused by the gateway
    metric = emergency.metrics.registry.get_sample_value
    assert metric("dutylink_adapter_parts_rejected_total", {"adapter": "edxl"}) == 4
    assert metric("dutylink_adapter_records_rejected_total", {"adapter": "edxl", "direction": "in"}) == 0  # fmt: skip
    assert metric("dutylink_adapter_events_published_total", {"adapter": "edxl"}) == 6

    # each event crossed in an envelope of its own content object, equal in meaning to the
    # original envelope with that content object alone
    originals = {unwrap_de((GOLDEN / n).read_bytes()).distribution_id: GOLDEN / n for n in EXPECTED}  # fmt: skip
    for written in de_out.glob("*.xml"):
        data = written.read_bytes()
        assert schema_valid(data), written.name
        envelope = unwrap_de(data)
        assert len(envelope.contents) == 1
        position = int(written.name.split(".")[1])  # "<distributionID>.<position>.<id>.xml"
        original = only_contents(originals[envelope.distribution_id].read_bytes(), [position])
        assert de_differences(original, data) == [], written.name
    (rm,) = rm_out.glob("*.xml")
    assert parse_rm(rm.read_bytes()).message_id == "emergency:RM:2026-0903-022"


async def test_an_envelope_whose_every_content_fails_is_kept_whole_with_each_reason(
    gateway: Gateway, tmp_path: Path
) -> None:
    data = only_contents((GOLDEN / "mixed-good-and-bad.xml").read_bytes(), [1, 2, 5])
    metrics, store = Metrics("edxl"), RejectedStore(tmp_path / "rejected")
    async with DutyLinkClient(gateway.address, token=TOKENS["emergency"]) as client:
        pipeline = Pipeline(client, inbound_mapping("em", "310115", "INTERNAL"), store, metrics)
        (outcome,) = await pipeline.publish([Record("all-bad.xml", data, "drop/all-bad.xml")])
    assert outcome.status == "rejected" and not outcome.receipts
    # two refused by the codecs, the third by the gateway: one reason names all three parts
    assert re.search(r"contentObject\[1\]: CAP: .*; contentObject\[2\]: EDXL-RM: .*; contentObject\[3\]: event em:emergency:CAP:2026-0903-009: .*jurisdiction", outcome.rejected)  # fmt: skip
    (kept,) = (tmp_path / "rejected").glob("*.record")
    assert kept.read_bytes() == data  # the whole envelope: what its parts share stays with them
    assert metrics.registry.get_sample_value("dutylink_adapter_parts_rejected_total", {"adapter": "edxl"}) == 0  # fmt: skip
    assert metrics.registry.get_sample_value("dutylink_adapter_records_rejected_total", {"adapter": "edxl", "direction": "in"}) == 1  # fmt: skip


def test_the_example_config_loads_and_builds_as_its_readme_says() -> None:
    root = Path(__file__).parent.parent
    config = load_adapter_config(root / "examples" / "edxl" / "emergency-edxl.toml")
    assert config.gateway == "127.0.0.1:50051"
    agencies = tomllib.loads((root / "gateway" / "sample_agencies.toml").read_text())["agencies"]
    assert {"id": "emergency", "token": config.token.get_secret_value() if config.token else None}.items() <= next(a for a in agencies if a["id"] == "emergency").items()  # fmt: skip
    plan = KIND.build(config.options, config.state_dir)
    assert len(plan.sources) == 1 and plan.inbound is not None
    rm_side, de_side = plan.outbound
    assert (rm_side.subscription.families, de_side.subscription.families) == (("resource",), ("resource", "warning"))  # fmt: skip
    # the README's walk-through: three of the mixed envelope's six content objects map (the
    # gateway refuses one of them), three do not
    data = (GOLDEN / "mixed-good-and-bad.xml").read_bytes()
    result = plan.inbound(Record("mixed-good-and-bad.xml", data, "examples/edxl/drop"))
    assert isinstance(result, Parts) and (len(result.events), len(result.rejected)) == (3, 3)


def test_a_content_object_with_only_key_excerpts_is_kept_with_its_metadata() -> None:
    original = only_contents((GOLDEN / "mixed-good-and-bad.xml").read_bytes(), [0, 3])
    data = re.sub(
        rb"<nonXMLContent>.*</nonXMLContent>",
        b"<xmlContent><keyXMLContent><p:station xmlns:p='urn:x-pump'>P-7</p:station></keyXMLContent></xmlContent>",
        original, flags=re.S,
    )  # fmt: skip
    result = inbound_mapping("em", "310115", "INTERNAL")(Record("k.xml", data, "drop/k.xml"))
    assert isinstance(result, Parts) and len(result.events) == 1
    ((part, why),) = result.rejected
    assert (part.label, why) == ("contentObject[2]", "key-XML-only content is neither CAP 1.2 nor EDXL-RM 1.0")  # fmt: skip
    kept = etree.fromstring(part.body)
    assert kept.tag == f"{DE}contentObject" and schema_valid_content(kept)
    assert kept.findtext(f"{DE}contentDescription") == "Pumping station P-7 log excerpt"


def schema_valid_content(content: etree._Element) -> bool:
    """`content` is a valid contentObject: checked inside a minimal envelope."""
    envelope = etree.fromstring(
        f"<EDXLDistribution xmlns='{DE[1:-1]}'><distributionID>x</distributionID><senderID>x</senderID>"
        "<dateTimeSent>2026-01-01T00:00:00Z</dateTimeSent><distributionStatus>Test</distributionStatus>"
        "<distributionType>Report</distributionType><combinedConfidentiality>x</combinedConfidentiality>"
        "</EDXLDistribution>"
    )  # fmt: skip
    envelope.append(content)
    return schema_valid(etree.tostring(envelope))


def test_documents_sharing_a_content_object_become_events_each_and_foreign_xml_a_part() -> None:
    root = etree.fromstring((GOLDEN / "several-cap-alerts.xml").read_bytes())
    first, second, third = root.findall(f"{DE}contentObject")
    embedded = f"{DE}xmlContent/{DE}embeddedXMLContent"
    first.find(embedded).append(second.find(embedded)[0])  # type: ignore[union-attr]
    root.remove(second)
    holder = third.find(embedded)
    assert holder is not None
    holder.remove(holder[0])
    etree.SubElement(holder, "{urn:x-sitrep}report").text = "Situation at 03:00"
    data = etree.tostring(root)
    result = inbound_mapping("em", "310115", "INTERNAL")(Record("s.xml", data, "drop/s.xml"))
    assert isinstance(result, Parts)
    assert [(p.label, e.id) for p, e in result.events] == [
        ("contentObject[1] document 1", "em:NWS-EC-TY2614-W-0300"),
        ("contentObject[1] document 2", "em:NWS-EC-RS-W-0301"),
    ]
    assert [(p.label, why) for p, why in result.rejected] == [
        (
            "contentObject[2]",
            "<report> (namespace urn:x-sitrep) content is neither CAP 1.2 nor EDXL-RM 1.0",
        )
    ]
    assert all(e.distribution.content.position == 0 for _, e in result.events)
    # out again, each document gets a contentObject of its own (the one loss of grouping)
    rebuilt = envelope_of([event for _, event in result.events])
    assert de_differences(only_contents(data, [0]), rebuilt) == [
        "/EDXLDistribution/contentObject: 1 != 2 elements",
        "/EDXLDistribution/contentObject[1]/xmlContent/embeddedXMLContent: 2 != 1 elements",
    ]


def test_empty_values_the_schema_allows_are_kept_not_refused() -> None:
    data = (
        (GOLDEN / "bilingual-cap-target-areas.xml").read_bytes()
        .replace(b"<senderID>ops@rtwc.example</senderID>", b"<senderID></senderID>")
        .replace(b"<valueListUrn>urn:x-rtwc:valuelist:role</valueListUrn>", b"<valueListUrn/>")
    )  # fmt: skip
    result = inbound_mapping("em", "310115", "INTERNAL")(Record("e.xml", data, "drop/e.xml"))
    assert isinstance(result, Parts)
    ((_, event),) = result.events
    event.source = "emergency"
    assert Validator().problems(event) == []
    assert de_differences(data, envelope_of([event])) == []
