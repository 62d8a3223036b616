"""The webhook adapter end to end: the housing bureau POSTs signed hazard reports, a real gateway
stores them, and the emergency bureau's endpoint receives them as signed POSTs; replays, bad
signatures and broken records are refused or kept in rejected/, failing endpoints retried."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from pydantic import SecretStr
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from dutylink.adapters.framework import Outbound, RejectedStore, Subscription, deliver_outbound
from dutylink.adapters.mapping import JsonMapping
from dutylink.adapters.metrics import Metrics
from dutylink.adapters.records import OutboundRecord, Record, Rejected
from dutylink.adapters.runner import AdapterConfig, AdapterConfigError, AdapterRunner
from dutylink.adapters.webhook.adapter import KIND, build
from dutylink.adapters.webhook.signing import (
    SIGNATURE_HEADER,
    STANDARD_SIGNATURE,
    TIMESTAMP_HEADER,
    ReplayGuard,
    ReplayGuardFullError,
    SignatureError,
    parse_secret,
    sign,
    signed_headers,
    standard_headers,
    verify,
    verify_request,
    verify_standard,
)
from dutylink.catalogue import load_catalogue
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.core import subjects
from gateway.core.validation import Validator
from gateway.server import Gateway
from gateway.testkit.inprocess import free_port
from tests.conftest import TOKENS
from tests.factories import incident_event

SAMPLES = Path(__file__).parent.parent / "adapters" / "webhook" / "samples"
SAMPLE = tomllib.loads((SAMPLES / "housing.toml").read_text(encoding="utf-8"))["options"]
REPORTS: list[dict[str, Any]] = json.loads((SAMPLES / "housing-hazard-reports.json").read_bytes())
IN_SECRET = b"housing-to-exchange-0123456789abcdef"
OUT_SECRET = b"exchange-to-emergency-fedcba9876543210"
FAST_RETRY = {"attempts": 5, "timeout_seconds": 10, "wait_initial_seconds": 0.05,
              "wait_max_seconds": 0.2, "wait_jitter_seconds": 0}  # fmt: skip


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not within {seconds} s")


def report(report_id: str, **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(REPORTS[0])
    document.update(report_id=report_id, **changes)
    return document


def secret_file(directory: Path, name: str, secret: bytes) -> str:
    path = directory / name
    path.write_bytes(secret + b"\n")  # a trailing newline is not part of the secret
    return str(path)


# --- the department endpoint and the exchange around it ---------------------------------------


@dataclass
class Received:
    headers: Mapping[str, str]
    body: bytes
    signed: bool


@dataclass
class Endpoint:
    """The emergency bureau's REST endpoint: checks our signature, answers as scripted."""

    url: str = ""
    script: dict[str, list[int]] = field(default_factory=dict)  # event id -> statuses, then 200
    received: list[Received] = field(default_factory=list)

    def of(self, event_id: str) -> list[Received]:
        return [r for r in self.received if r.headers["Idempotency-Key"] == event_id]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:  # Standard Webhooks' own reference verifier, as a department would use it
            Webhook(OUT_SECRET).verify(body, dict(request.headers), json_parse=False)
            signed = request.headers["webhook-id"] == request.headers["Idempotency-Key"]
        except (WebhookVerificationError, KeyError):
            signed = False
        self.received.append(Received(dict(request.headers), body, signed))
        statuses = self.script.get(request.headers.get("Idempotency-Key", ""), [])
        status = statuses.pop(0) if statuses else 200
        return web.json_response({"status": status}, status=status)


@dataclass
class Exchange:
    housing: AdapterRunner  # webhook in
    emergency: AdapterRunner  # webhook out
    endpoint: Endpoint
    port: int  # where housing's adapter takes POSTs
    nats_url: str

    @property
    def rejected_in(self) -> Path:
        return self.housing.config.state_dir / "rejected"

    @property
    def rejected_out(self) -> Path:
        return self.emergency.config.state_dir / "rejected"

    async def post(
        self, body: bytes, *, timestamp: int | None = None, secret: bytes = IN_SECRET,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        return await post(self.port, body, timestamp=timestamp, secret=secret, headers=headers)

    async def deliveries(self) -> int | None:
        """How many deliveries (redeliveries included) emergency's subscription made, once
        every one is acked (None while some are pending or in flight)."""
        connection = await nats.connect(self.nats_url)
        try:
            info = await connection.jetstream().consumer_info(
                subjects.EVENTS_STREAM, subjects.consumer_name("emergency", "emergency-incidents")
            )
        finally:
            await connection.close()
        settled = info.num_ack_pending == 0 and info.num_pending == 0
        return info.delivered.consumer_seq if settled else None

    async def settled(self, seconds: float = 5) -> int | None:
        for _ in range(int(seconds / 0.05)):
            if (count := await self.deliveries()) is not None:
                return count
            await asyncio.sleep(0.05)
        return None


async def post(
    port: int, body: bytes, *, timestamp: int | None = None, secret: bytes = IN_SECRET,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """POST `body` signed (unless `headers` are given) to the adapter, by Standard Webhooks'
    reference signer as a department's system would; status and JSON answer."""
    if headers is None:
        headers = reference_signed(secret, timestamp or int(time.time()), body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/events", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def reference_signed(secret: bytes, timestamp: int, body: bytes, message_id: str = "") -> dict[str, str]:  # fmt: skip
    """Standard Webhooks headers made by the scheme's reference library (not by ours)."""
    message_id = message_id or f"msg_{timestamp}_{len(body)}"
    moment = datetime.fromtimestamp(timestamp, UTC)
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=moment, data=body.decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature}  # fmt: skip


async def listening(port: int) -> None:
    for _ in range(200):
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/"):
                return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def housing_options(tmp_path: Path, port: int) -> dict[str, Any]:
    inbound = {**SAMPLE["inbound"], "listen": f"127.0.0.1:{port}",
               "secret_file": secret_file(tmp_path, "in.secret", IN_SECRET)}  # fmt: skip
    return {"inbound": inbound, "mapping": SAMPLE["mapping"]}


def metric(runner: AdapterRunner, name: str, **labels: str) -> float:
    value = runner.metrics.registry.get_sample_value(name, {"adapter": "webhook", **labels})
    return value or 0.0


@pytest.fixture
async def exchange(gateway: Gateway, nats_url: str, tmp_path: Path) -> AsyncIterator[Exchange]:
    endpoint = Endpoint()
    app = web.Application()
    app.router.add_post("/api/dutylink/incidents", endpoint.handle)
    server = web.AppRunner(app, access_log=None)
    await server.setup()
    await web.TCPSite(server, "127.0.0.1", 0).start()
    endpoint.url = f"http://127.0.0.1:{server.addresses[0][1]}/api/dutylink/incidents"
    port = free_port()
    housing = AdapterRunner(
        KIND,
        AdapterConfig(
            file=tmp_path / "housing.toml", gateway=gateway.address, token=SecretStr(TOKENS["housing"]),
            state_dir=tmp_path / "housing-state", options=housing_options(tmp_path, port),
        ),
    )  # fmt: skip
    outbound = {**SAMPLE["outbound"], "subscription": "emergency-incidents", "ignore_sources": [],
                "url": endpoint.url, "retry": FAST_RETRY,
                "secret_file": secret_file(tmp_path, "out.secret", OUT_SECRET)}  # fmt: skip
    emergency = AdapterRunner(
        KIND,
        AdapterConfig(
            file=tmp_path / "emergency.toml", gateway=gateway.address, token=SecretStr(TOKENS["emergency"]),
            state_dir=tmp_path / "emergency-state", options={"outbound": outbound},
        ),
    )  # fmt: skip
    tasks = [asyncio.create_task(runner.run()) for runner in (housing, emergency)]
    running = Exchange(housing, emergency, endpoint, port, nats_url)
    try:
        await housing.wait_started()
        await emergency.wait_started()
        await listening(port)
        # The subscription starts at new events: it must exist before anything is published.
        for _ in range(100):
            try:
                await running.deliveries()
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.05)
        yield running
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.cleanup()


# --- signatures ---------------------------------------------------------------------------------


def test_the_signatures_are_the_readme_examples() -> None:
    # The worked examples in adapters/webhook/README.md, computed there with openssl.
    body = b'{"report_id":"BSR-2026-0815-0042"}'
    key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    standard = standard_headers([key], "msg_BSR-2026-0815-0042", 1786773600, body)
    expected = "v1,6SDyr3f0u5sSA+YSPnzwOwOLSqaoObvlvYqyq8Sda/k="
    assert standard[STANDARD_SIGNATURE] == expected
    legacy = "v1=dba6cbe6f5a4b684a7055cfdd4eddfa149c27ad8d162e8f51442a1a722bf3e53"
    assert sign(b"example-secret-not-for-production", 1786773600, body) == legacy
    readme = (SAMPLES.parent / "README.md").read_text(encoding="utf-8")
    assert expected in readme and legacy in readme and body.decode() in readme


def test_verify_refuses_missing_wrong_and_stale_signatures() -> None:
    body, now = b'{"report_id":"1"}', 1786773600
    good = signed_headers(IN_SECRET, now, body)

    def check(headers: Mapping[str, str], data: bytes = body, at: float = now) -> str:
        with pytest.raises(SignatureError) as error:
            verify(IN_SECRET, data, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), now=at, tolerance=300)  # fmt: skip
        return str(error.value)

    assert verify(IN_SECRET, body, good[TIMESTAMP_HEADER], good[SIGNATURE_HEADER].upper().replace("V1=", "v1="), now=now + 299, tolerance=300).timestamp == now  # fmt: skip
    assert "are required" in check({TIMESTAMP_HEADER: str(now)})
    assert "does not match" in check(good, b'{"report_id":"2"}')
    assert "does not match" in check(signed_headers(b"another secret", now, body))
    assert "does not match" in check({**good, TIMESTAMP_HEADER: str(now + 1)})
    assert "whole unix seconds" in check({**good, TIMESTAMP_HEADER: "2026-08-15T06:00:00Z"})
    assert "must be 'v1=" in check({**good, SIGNATURE_HEADER: good[SIGNATURE_HEADER][3:]})
    assert "-301 s from our clock" in check(good, at=now + 301)
    assert "+301 s from our clock" in check(good, at=now - 301)


def test_the_replay_guard_remembers_signatures_for_their_window_only_and_is_bounded() -> None:
    guard = ReplayGuard(tolerance=300, capacity=2)
    first = verify(IN_SECRET, b"a", *signed_headers(IN_SECRET, 1000, b"a").values(), now=1000, tolerance=300)  # fmt: skip
    second = verify(IN_SECRET, b"b", *signed_headers(IN_SECRET, 1000, b"b").values(), now=1000, tolerance=300)  # fmt: skip
    third = verify(IN_SECRET, b"c", *signed_headers(IN_SECRET, 1200, b"c").values(), now=1200, tolerance=300)  # fmt: skip
    assert guard.admit(first, now=1000) and not guard.admit(first, now=1299)
    guard.forget(first)  # its request was not taken: the sender may send it again
    assert guard.admit(first, now=1001)
    assert guard.admit(second, now=1002)
    with pytest.raises(ReplayGuardFullError):
        guard.admit(third, now=1200)
    assert guard.admit(third, now=1301), "expired signatures make room"
    assert len(guard) == 1


def test_standard_signatures_verify_with_the_reference_library_under_every_key_in_force() -> None:
    """Rotation: signed with the old and the new secret, a receiver holding either accepts."""
    old, new = b"old secret 0123456789abcdef", b"new secret fedcba9876543210"
    body, now = b'{"report_id":"1"}', int(time.time())
    headers = standard_headers([old, new], "BSR-1", now, body)
    assert len(headers[STANDARD_SIGNATURE].split()) == 2
    for key in (old, new):
        Webhook(key).verify(body, headers, json_parse=False)
        assert verify_standard([key], body, headers, now=now, tolerance=300).timestamp == now
    with pytest.raises(WebhookVerificationError):
        Webhook(b"a third secret 0123456789").verify(body, headers, json_parse=False)
    # And the reference library's signatures verify here, with either of our keys in force.
    theirs = reference_signed(new, now, body, "msg_1")
    assert verify_standard([old, new], body, theirs, now=now + 299, tolerance=300)


def test_verify_standard_refuses_what_is_wrong_and_never_raises_anything_else() -> None:
    body, now = b'{"report_id":"1"}', 1786773600
    good = standard_headers([IN_SECRET], "BSR-1", now, body)

    def check(headers: Mapping[str, str], data: bytes = body, at: float = now) -> str:
        with pytest.raises(SignatureError) as error:
            verify_standard([IN_SECRET], data, headers, now=at, tolerance=300)
        return str(error.value)

    assert "are required" in check({k: v for k, v in good.items() if k != "webhook-id"})
    assert "no signature" in check(good, b'{"report_id":"2"}')
    assert "no signature" in check({**good, "webhook-id": "BSR-2"})
    assert "no signature" in check({**good, STANDARD_SIGNATURE: "v1"})  # no comma
    assert "no signature" in check({**good, STANDARD_SIGNATURE: "v1,!!not base64!! v2,x"})
    assert "at most 8 signatures" in check({**good, STANDARD_SIGNATURE: " ".join(["v1,x"] * 9)})
    assert "at most 256 characters" in check({**good, "webhook-id": "x" * 257})
    assert "whole unix seconds" in check({**good, "webhook-timestamp": "1e9"})
    assert "not UTF-8" in check(good, b"\xff\xfe")
    assert "-301 s from our clock" in check(good, at=now + 301)


def test_the_scheme_before_is_taken_only_while_it_is_still_accepted() -> None:
    body, now = b'{"report_id":"1"}', 1786773600
    legacy = signed_headers(IN_SECRET, now, body)
    rotated = [b"the new secret 0123456789", IN_SECRET]
    taken = verify_request(rotated, body, legacy, now=now, tolerance=300, accept_legacy=True)
    assert taken.timestamp == now
    with pytest.raises(SignatureError, match="no longer accepted here"):
        verify_request(rotated, body, legacy, now=now, tolerance=300, accept_legacy=False)
    with pytest.raises(SignatureError, match="unsigned"):
        verify_request(rotated, body, {}, now=now, tolerance=300, accept_legacy=True)


# --- configuration ------------------------------------------------------------------------------


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    port = free_port()
    good = housing_options(tmp_path, port)
    (tmp_path / "empty.secret").write_text("\n")
    (tmp_path / "bad.secret").write_text("raw legacy secret\nwhsec_!!!\n")
    outbound = {"url": "http://127.0.0.1:1/x", "secret_file": secret_file(tmp_path, "o", OUT_SECRET)}  # fmt: skip
    cases: dict[str, dict[str, Any]] = {
        "[options.inbound] secret_file: required": {**good, "inbound": {"listen": f"127.0.0.1:{port}"}},
        f"secret_file: {tmp_path / 'none'}: No such file": {**good, "inbound": {**good["inbound"], "secret_file": str(tmp_path / "none")}},
        "empty.secret is empty": {**good, "inbound": {**good["inbound"], "secret_file": str(tmp_path / "empty.secret")}},
        "bad.secret:2: a whsec_ secret must be base64": {**good, "inbound": {**good["inbound"], "secret_file": str(tmp_path / "bad.secret")}},
        "signature: 'v2' is not one of standard, dutylink-v1": {"outbound": {**outbound, "signature": "v2"}},
        "'0.0.0.0' is not a loopback address": {**good, "inbound": {**good["inbound"], "listen": "0.0.0.0:8081"}},
        "[options.inbound]: unknown key 'tolerance'": {**good, "inbound": {**good["inbound"], "tolerance": 5}},
        "[options.mapping]: required": {"inbound": good["inbound"]},
        "url: 'ftp://x/y' is not an http(s) URL": {"outbound": {**outbound, "url": "ftp://x/y"}},
        "[options.outbound.fields] where: 'incident.locaton.address': no field 'locaton'": {"outbound": {**outbound, "fields": {"where": "incident.locaton.address"}}},
        "[options.outbound.retry] attempts: a whole number": {"outbound": {**outbound, "retry": {"attempts": 0}}},
        "give [options.inbound]": {},
    }  # fmt: skip
    for expected, options in cases.items():
        with pytest.raises(AdapterConfigError) as error:
            build(options, tmp_path)
        assert expected in str(error.value), (expected, str(error.value))
    assert build({**good, "inbound": {**good["inbound"], "listen": "0.0.0.0:8081", "allow_remote": True}}, tmp_path).sources  # fmt: skip


async def test_a_delivery_refused_for_good_is_kept_in_rejected_and_not_raised(
    tmp_path: Path,
) -> None:
    attempts: list[str] = []

    async def refuse(record: OutboundRecord) -> None:
        attempts.append(record.name)
        raise Rejected("refused for good: HTTP 422")

    async def fail(record: OutboundRecord) -> None:
        raise ConnectionError("down")

    def mapping(event: Any) -> OutboundRecord:
        return OutboundRecord(event.id, b"{}", "application/json")

    metrics, store = Metrics("webhook"), RejectedStore(tmp_path / "rejected")
    delivery = gateway_pb2.Delivery(event=incident_event())
    await deliver_outbound(Outbound(Subscription("s"), mapping, refuse), store, metrics, delivery)
    (reason_file,) = (tmp_path / "rejected").glob("*.reason.json")
    kept = json.loads(reason_file.read_text())
    assert kept["direction"] == "out" and kept["record_id"] == delivery.event.id
    assert kept["reason"] == "refused for good: HTTP 422" and attempts == [delivery.event.id]
    assert metrics.registry.get_sample_value("dutylink_adapter_records_rejected_total", {"adapter": "webhook", "direction": "out"}) == 1  # fmt: skip
    assert metrics.registry.get_sample_value("dutylink_adapter_records_out_total", {"adapter": "webhook"}) == 0  # fmt: skip
    with pytest.raises(ConnectionError):  # any other failure still means: redeliver later
        await deliver_outbound(Outbound(Subscription("s"), mapping, fail), store, metrics, delivery)
    assert len(list((tmp_path / "rejected").glob("*.reason.json"))) == 1


# --- end to end ---------------------------------------------------------------------------------


async def test_signed_reports_reach_another_agency_as_signed_posts_of_the_mapped_fields(
    exchange: Exchange,
) -> None:
    status, answer = await exchange.post((SAMPLES / "housing-hazard-reports.json").read_bytes())
    assert status == 200
    ids = ["housing-bsr:BSR-2026-0815-0042", "housing-bsr:BSR-2026-0815-0043"]
    assert answer == {"results": [{"event_ids": [i], "duplicate": [False]} for i in ids]}
    await until(lambda: len(exchange.endpoint.received) == 2)
    first, second = (exchange.endpoint.of(i)[0] for i in ids)
    assert first.signed and second.signed, "signed with the outbound secret"
    assert first.headers["Content-Type"] == "application/json"
    assert json.loads(first.body) == {
        "event_id": ids[0], "event_type": "incident.reported", "from_agency": "housing",
        "time": "2026-08-15T00:05:00Z", "incident_id": "BSR-2026-0815-0042",
        "category": "INCIDENT_CATEGORY_BUILDING_COLLAPSE", "severity": "INCIDENT_SEVERITY_MAJOR",
        "status": "INCIDENT_STATUS_REPORTED",
        "title": "Load-bearing wall cracked after basement excavation next door",
        "address": "1288 Zhangyang Road, Building 7", "latitude": 31.2291,
        "longitude": 121.5264, "district_code": "310115",
    }  # fmt: skip
    assert "latitude" not in json.loads(second.body), "absent fields are left out"
    await until(lambda: metric(exchange.emergency, "dutylink_adapter_records_out_total") == 2)


async def test_a_replayed_request_is_refused_and_nothing_is_published_twice(
    exchange: Exchange,
) -> None:
    body = json.dumps(report("BSR-R-1")).encode()
    headers = signed_headers(IN_SECRET, int(time.time()), body)
    assert (await exchange.post(body, headers=headers))[0] == 200
    status, answer = await exchange.post(body, headers=headers)
    assert status == 401 and "replayed" in answer["error"]
    await until(lambda: len(exchange.endpoint.received) == 1)
    await asyncio.sleep(0.3)
    assert len(exchange.endpoint.received) == 1
    assert metric(exchange.housing, "dutylink_adapter_records_in_total") == 1


async def test_unsigned_badly_signed_stale_and_oversized_requests_are_refused(
    exchange: Exchange,
) -> None:
    body = json.dumps(report("BSR-X-1")).encode()
    now = int(time.time())
    refusals = {
        "no signature": await exchange.post(body, headers={"Content-Type": "application/json"}),
        "another secret": await exchange.post(body, secret=b"a guess"),
        "another body": await exchange.post(body, headers=reference_signed(IN_SECRET, now, b"{}")),
        "stale": await exchange.post(body, timestamp=now - 301),
        "future": await exchange.post(body, timestamp=now + 301),
    }
    for case, (status, answer) in refusals.items():
        assert status == 401 and answer["error"], case
    assert "from our clock" in refusals["stale"][1]["error"]
    big = json.dumps([report(f"BSR-X-{i}", details="x" * 8000) for i in range(140)]).encode()
    assert len(big) > 1024 * 1024
    status, answer = await exchange.post(big)
    assert status == 413 and "larger than 1048576 bytes" in answer["error"]
    assert metric(exchange.housing, "dutylink_adapter_records_in_total") == 0
    await asyncio.sleep(0.3)
    assert exchange.endpoint.received == []


async def test_a_malformed_record_goes_to_rejected_with_its_reason_and_the_others_are_published(
    exchange: Exchange,
) -> None:
    records = [report("BSR-M-1"), report("BSR-M-2", risk_level="9"), "not an object", report("BSR-M-4")]  # fmt: skip
    status, answer = await exchange.post(json.dumps(records).encode())
    assert status == 200
    results = answer["results"]
    assert results[0]["event_ids"] == ["housing-bsr:BSR-M-1"]
    assert results[1] == {"rejected": "incident.severity ('risk_level'): '9' is not one of 1, 2, 3, 4; priority ('risk_level'): '9' is not one of 1, 2, 3, 4"}  # fmt: skip
    assert results[2] == {"rejected": "not a JSON object"}
    assert results[3]["event_ids"] == ["housing-bsr:BSR-M-4"]
    kept = {
        json.loads(p.read_text())["record_id"]: json.loads(p.read_text())
        for p in exchange.rejected_in.glob("*.reason.json")
    }
    assert set(kept) == {"POST /events#1", "POST /events#2"}
    assert kept["POST /events#1"]["reason"] == results[1]["rejected"]
    (record_file,) = exchange.rejected_in.glob("*events_1.record")
    assert json.loads(record_file.read_bytes())["report_id"] == "BSR-M-2", "the record is kept"

    status, answer = await exchange.post(b'{"report_id": "BSR-M-5",')  # not JSON at all
    assert status == 400 and answer["error"].startswith("not JSON")
    assert len(list(exchange.rejected_in.glob("*.reason.json"))) == 3
    await until(lambda: len(exchange.endpoint.received) == 2)
    assert {r.headers["Idempotency-Key"] for r in exchange.endpoint.received} == {
        "housing-bsr:BSR-M-1", "housing-bsr:BSR-M-4",
    }  # fmt: skip


async def test_resending_the_same_record_is_a_duplicate_not_a_second_event(
    exchange: Exchange,
) -> None:
    body = json.dumps(report("BSR-D-1")).encode()
    first = await exchange.post(body, timestamp=int(time.time()) - 1)
    again = await exchange.post(body)  # signed anew: not a replay, the same record
    assert first == (200, {"results": [{"event_ids": ["housing-bsr:BSR-D-1"], "duplicate": [False]}]})  # fmt: skip
    assert again == (200, {"results": [{"event_ids": ["housing-bsr:BSR-D-1"], "duplicate": [True]}]})  # fmt: skip
    await until(lambda: len(exchange.endpoint.received) == 1)
    await asyncio.sleep(0.3)
    assert len(exchange.endpoint.received) == 1


async def test_a_failing_endpoint_is_retried_and_gets_the_event_once(exchange: Exchange) -> None:
    event_id = "housing-bsr:BSR-F-1"
    exchange.endpoint.script[event_id] = [500, 500]
    assert (await exchange.post(json.dumps(report("BSR-F-1")).encode()))[0] == 200
    await until(lambda: metric(exchange.emergency, "dutylink_adapter_records_out_total") == 1)
    attempts = exchange.endpoint.of(event_id)
    assert len(attempts) == 3 and all(a.signed for a in attempts)
    assert len({a.body for a in attempts}) == 1, "the same record each time"
    stamps = [int(a.headers["webhook-timestamp"]) for a in attempts]
    assert stamps == sorted(set(stamps)), "each retry signed anew: not a replay"
    assert {a.headers["webhook-id"] for a in attempts} == {event_id}, "one message id throughout"
    assert await exchange.settled() == 1, "retried within one delivery, then acked"
    assert len(exchange.endpoint.of(event_id)) == 3
    assert not exchange.rejected_out.exists()


async def test_an_event_the_endpoint_refuses_for_good_is_kept_in_rejected(
    exchange: Exchange,
) -> None:
    event_id = "housing-bsr:BSR-F-2"
    exchange.endpoint.script[event_id] = [400]
    assert (await exchange.post(json.dumps(report("BSR-F-2")).encode()))[0] == 200
    await until(lambda: any(exchange.rejected_out.glob("*.reason.json")))
    (reason_file,) = exchange.rejected_out.glob("*.reason.json")
    kept = json.loads(reason_file.read_text())
    assert kept["direction"] == "out" and kept["record_id"] == event_id
    assert kept["reason"].startswith(f"refused for good: {exchange.endpoint.url} answered 400 Bad Request")  # fmt: skip
    assert await exchange.settled() == 1, "delivered once and acked: kept, not redelivered"
    assert len(exchange.endpoint.of(event_id)) == 1, "a refusal is not retried"
    assert metric(exchange.emergency, "dutylink_adapter_records_out_total") == 0


async def test_while_the_gateway_is_unavailable_the_sender_gets_503_and_may_resend(
    tmp_path: Path,
) -> None:
    port = free_port()
    options = housing_options(tmp_path, port)
    options["inbound"] = {**options["inbound"], "publish_timeout_seconds": 0.3, "retry_after_seconds": 7}  # fmt: skip
    housing = AdapterRunner(
        KIND,
        AdapterConfig(
            file=tmp_path / "housing.toml", gateway=f"127.0.0.1:{free_port()}",  # nothing there
            token=SecretStr(TOKENS["housing"]), state_dir=tmp_path / "state", options=options,
        ),
    )  # fmt: skip
    task = asyncio.create_task(housing.run())
    try:
        await housing.wait_started()
        await listening(port)
        body = json.dumps(report("BSR-U-1")).encode()
        headers = signed_headers(IN_SECRET, int(time.time()), body)
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # the very same request again: not taken for a replay
                async with session.post(f"http://127.0.0.1:{port}/events", data=body, headers=headers) as response:  # fmt: skip
                    assert response.status == 503 and response.headers["Retry-After"] == "7"
                    assert "nothing was acknowledged" in (await response.json())["error"]
        assert not (tmp_path / "state" / "rejected").exists()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_acknowledgement_sample_maps_the_desks_receipts_to_valid_acknowledgements() -> None:
    options = tomllib.loads((SAMPLES / "housing-acks.toml").read_text(encoding="utf-8"))
    mapping = JsonMapping.from_options(options["options"]["mapping"])
    receipts = json.loads((SAMPLES / "housing-acks.json").read_bytes())
    events = [
        event
        for receipt in receipts
        for event in mapping.to_events(
            Record(receipt["receipt_id"], json.dumps(receipt).encode(), "POST /acks")
        )
    ]
    assert [e.type for e in events] == ["acknowledgement.acknowledged", "acknowledgement.declined"]
    taken, refused = events
    assert (taken.acknowledgement.event_source, taken.acknowledgement.event_id) == (
        "weather", "CMA-310115-20260815-0001",
    )  # fmt: skip
    assert taken.plane == event_pb2.PLANE_EXERCISE
    assert refused.acknowledgement.reason.startswith("not a building matter")
    catalogue = load_catalogue()
    for event in events:
        event.source = "housing"  # the gateway stamps it from the adapter's identity
        assert Validator().check(event).problems == ()
        declared = catalogue.get(event.type)
        assert declared is not None and declared.missing_fields(event) == []
