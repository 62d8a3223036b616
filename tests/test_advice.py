"""Advice: DutyLink's wishes beyond CAP are advisories in the receipt, not refusals; the hard
bounds that remain only protect the gateway."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from dutylink.adapters.framework import Pipeline, RejectedStore
from dutylink.adapters.metrics import Metrics
from dutylink.adapters.records import Record
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import common_pb2, event_pb2, gateway_pb2, gateway_pb2_grpc, warning_pb2
from gateway.core.validation import CUT_RULE, FieldProblem, Validator
from gateway.server import Gateway
from tests.conftest import TOKENS
from tests.factories import warning_event

LONG_HEADLINE = (
    "National Weather Service: Hurricane Warning for the coastal counties from the river "
    "mouth to the state line, storm surge of 3 to 5 metres above ground expected, evacuate "
    "zones A and B now, shelters open at all public schools, follow the instructions of local "
    "officials and the evacuation routes shown on the county websites"
)


def national_alert(languages: int = 2, areas: int = 40, geocodes: int = 120) -> event_pb2.Event:
    """A national service's alert: an info block per language, each with `areas` areas of
    `geocodes` geocodes."""
    event = warning_event()
    template = event.warning.infos[0]
    del event.warning.infos[:]
    for language in ("zh-CN", "en-US", "fr-FR")[:languages]:
        info = event.warning.infos.add()
        info.CopyFrom(template)
        info.language = language
        del info.areas[:]
        for a in range(areas):
            area = info.areas.add(area_desc=f"Forecast zone {a}")
            area.geocodes.extend(
                warning_pb2.ValuePair(value_name="GB/T 2260", value=str(310000 + a * 200 + g))
                for g in range(geocodes)
            )
    return event


def advice_of(advisories: tuple[FieldProblem, ...]) -> set[tuple[str, str]]:
    return {(a.field, a.rule_id) for a in advisories}


def test_a_300_character_headline_and_69_areas_are_accepted_with_advisories_naming_the_fields() -> (
    None
):
    event = national_alert(languages=1, areas=69, geocodes=3)
    event.warning.infos[0].headline = (LONG_HEADLINE * 2)[:300]
    checked = Validator().check(event)
    assert checked.problems == ()
    assert advice_of(checked.advisories) == {
        ("warning.infos[0].headline", "advice.max_len"),
        ("warning.infos[0].areas", "advice.max_items"),
    }
    headline = next(a for a in checked.advisories if a.rule_id == "advice.max_len")
    assert headline.description == "advised at most 160 long, got 300"


def test_a_bilingual_national_alert_fits_the_default_limits_without_advice() -> None:
    checked = Validator().check(national_alert(languages=2, areas=40, geocodes=120))
    assert checked == type(checked)((), ())


def test_the_hard_bounds_still_refuse_absurd_sizes() -> None:
    headline = warning_event()
    headline.warning.infos[0].headline = "x" * 4097
    areas = national_alert(languages=1, areas=4097, geocodes=0)
    validator = Validator()
    assert [p.rule_id for p in validator.problems(headline)] == ["string.max_len"]
    assert [(p.field, p.rule_id) for p in validator.problems(areas)] == [
        ("warning.infos[0].areas", "repeated.max_items")
    ]


def test_a_cancellation_that_expires_when_it_is_sent_is_accepted_with_advisories() -> None:
    event = warning_event()
    event.expires.CopyFrom(event.time)
    warning = event.warning
    warning.msg_type = warning_pb2.CAP_MSG_TYPE_CANCEL
    warning.references.add(sender=warning.sender, identifier="SH-ECO-1").sent.CopyFrom(warning.sent)
    warning.infos[0].effective.CopyFrom(warning.sent)
    warning.infos[0].expires.CopyFrom(warning.sent)
    checked = Validator().check(event)
    assert checked.problems == ()
    assert advice_of(checked.advisories) == {
        ("", "event.expires_after_time"),
        ("warning.infos[0]", "warning_info.expires_after_effective"),
    }


def test_a_cancellation_without_references_is_still_refused_as_cap_requires() -> None:
    event = warning_event()
    event.warning.msg_type = warning_pb2.CAP_MSG_TYPE_CANCEL
    assert [p.rule_id for p in Validator().problems(event)] == ["warning.references_required"]


def test_repeated_categories_a_low_ceiling_and_a_long_polygon_are_advice() -> None:
    event = warning_event()
    info = event.warning.infos[0]
    info.categories.append(info.categories[0])
    area = info.areas[0]
    area.altitude, area.ceiling = 1000.0, 500.0
    ring = [(30 + i * 0.0001, 121.0 + (i % 2) * 0.01) for i in range(1499)]
    area.polygons.add().points.extend(
        common_pb2.GeoPoint(latitude=lat, longitude=lon) for lat, lon in [*ring, ring[0]]
    )
    checked = Validator().check(event)
    assert checked.problems == ()
    assert advice_of(checked.advisories) == {
        ("warning.infos[0].categories", "advice.unique"),
        ("warning.infos[0].areas[0]", "warning_area.ceiling_above_altitude"),
        ("warning.infos[0].areas[0].polygons[1].points", "advice.max_items"),
    }


async def test_a_bilingual_alert_of_69_areas_with_inline_audio_is_stored_with_advisories(
    gateway: Gateway,
) -> None:
    event = national_alert(languages=2, areas=69, geocodes=120)  # ~16,700 elements
    for info in event.warning.infos:
        info.headline = (LONG_HEADLINE * 2)[:300]
    audio = event.warning.infos[0].resources.add(
        resource_desc="spoken alert", mime_type="audio/mpeg"
    )
    audio.deref_uri = bytes(range(256)) * 300  # ~77 KB: ~100 KB of base64 in CAP XML
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        receipt = await ecology.publish(event)
    assert not receipt.duplicate and receipt.stream_sequence >= 1
    assert {(a.field, a.rule_id) for a in receipt.advisories} == {
        (f"warning.infos[{i}].{field}", rule)
        for i in (0, 1)
        for field, rule in (("headline", "advice.max_len"), ("areas", "advice.max_items"))
    }


async def test_publish_and_batch_receipts_carry_the_advisories_which_are_logged_and_counted(
    gateway: Gateway,
) -> None:
    advised = warning_event()
    advised.warning.infos[0].headline = LONG_HEADLINE
    plain = warning_event()
    batch_advised = warning_event()
    batch_advised.warning.infos[0].headline = LONG_HEADLINE
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        with capture_logs() as logs:
            receipt = await ecology.publish(advised)
        results = await ecology.publish_batch([plain, batch_advised])
    assert not receipt.duplicate
    assert [(a.field, a.rule_id) for a in receipt.advisories] == [
        ("warning.infos[0].headline", "advice.max_len")
    ]
    assert "advised at most 160 long" in receipt.advisories[0].description
    assert results[0].HasField("receipt") and list(results[0].receipt.advisories) == []
    assert [a.rule_id for a in results[1].receipt.advisories] == ["advice.max_len"]
    [logged] = [entry for entry in logs if entry["event"] == "publish.advisories"]
    assert logged["event_id"] == advised.id
    assert logged["advisories"] == ["warning.infos[0].headline: advice.max_len"]
    counted = gateway.metrics.registry.get_sample_value(
        "dutylink_publish_advisories_total", {"agency": "ecology", "rule_id": "advice.max_len"}
    )
    assert counted == 2


async def test_an_event_over_a_hard_bound_is_still_refused_by_the_gateway(
    gateway: Gateway,
) -> None:
    event = warning_event()
    event.warning.infos[0].headline = "x" * 5000
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ecology.publish(event)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_adapter_pipeline_logs_advisories_per_record(
    gateway: Gateway, tmp_path: Path
) -> None:
    event = warning_event()
    event.warning.infos[0].headline = LONG_HEADLINE
    record = Record("CAP-1", b"<alert/>", "drop/cap-1.xml")
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        pipeline = Pipeline(
            ecology, lambda _: [event], RejectedStore(tmp_path / "rejected"), Metrics("cap")
        )
        with capture_logs() as logs:
            [outcome] = await pipeline.publish([record])
    assert outcome.ok and outcome.receipts[0].advisories
    [logged] = [entry for entry in logs if entry["event"] == "adapter.advisories"]
    assert logged["record_id"] == "CAP-1"
    assert logged["advisories"] == [
        "warning.infos[0].headline: advised at most 160 long, got "
        f"{len(LONG_HEADLINE)} (advice.max_len)"
    ]
    assert not (tmp_path / "rejected").exists()


def test_lax_cap_uris_mime_types_and_digests_are_advice() -> None:
    """CAP's XSD takes any string for these; real feeds send them so."""
    event = warning_event()
    info = event.warning.infos[0]
    info.web = "www.weather.example/alerts"
    info.resources.add(
        resource_desc="radar map",
        mime_type="jpg",
        uri="maps/radar loop.jpg",
        digest="ab" * 32,  # a SHA-256, not CAP's SHA-1
    )
    checked = Validator().check(event)
    assert checked.problems == ()
    assert advice_of(checked.advisories) == {
        ("warning.infos[0].web", "advice.pattern"),
        ("warning.infos[0].resources[0].mime_type", "advice.pattern"),
        ("warning.infos[0].resources[0].uri", "advice.pattern"),
        ("warning.infos[0].resources[0].digest", "advice.pattern"),
    }


async def test_a_batch_answer_stays_within_the_size_limit_however_many_advisories(
    gateway: Gateway,
) -> None:
    def advised() -> event_pb2.Event:
        event = warning_event()
        info = event.warning.infos[0]
        for _ in range(65):  # 65 areas, each with its ceiling below its altitude
            info.areas.add(area_desc="a", altitude=900.0, ceiling=100.0)
        return event

    events = [advised() for _ in range(600)]  # ~2 KB of advisories each listed in full
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.PublisherServiceStub(channel)
        response = await stub.PublishBatch(
            gateway_pb2.PublishBatchRequest(events=events),
            metadata=(("authorization", f"Bearer {TOKENS['ecology']}"),),
            timeout=60,
        )
    limit = gateway.config.gateway.max_message_bytes
    assert response.ByteSize() <= limit
    receipts = [r.receipt for r in response.results]
    assert all(r.stream_sequence and r.advisories for r in receipts), "all stored"
    assert len(receipts[0].advisories) == gateway.config.gateway.max_violations_per_event + 1
    assert [a.rule_id for a in receipts[-1].advisories] == [CUT_RULE]
