"""An event id already stored with other content is a conflict, not a silent duplicate: the
receipt says so, the original is kept, the audit log records both digests, the adapter keeps
the record in rejected/; a byte-equal retry stays a plain duplicate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import nats
from structlog.testing import capture_logs
from typer.testing import CliRunner

from dutylink.adapters.framework import Pipeline, RejectedStore
from dutylink.adapters.metrics import Metrics
from dutylink.adapters.records import Record
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2, event_pb2
from gateway.audit.entries import decode_frames
from gateway.audit.witness import Ledger, publish_facts
from gateway.cli.audit import audit_app
from gateway.core import envelope, subjects
from gateway.server import Gateway
from gateway.store.events import EVENT_GETS_IN_FLIGHT
from gateway.store.nats_server import NatsServer
from gateway.store.streams import stored_messages
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.cli_support import LoopThread
from tests.conftest import TOKENS
from tests.factories import warning_event

runner = CliRunner()


def reissued(event: event_pb2.Event) -> event_pb2.Event:
    """The same alert id with other content (a re-issued CAP alert, same identifier)."""
    changed = event_pb2.Event()
    changed.CopyFrom(event)
    changed.warning.infos[0].headline = "Toxic smoke downwind: now also east of the park"
    return changed


async def stored_event(url: str, sequence: int) -> event_pb2.Event:
    client = await nats.connect(url)
    try:
        raw = await client.jetstream().get_msg(subjects.EVENTS_STREAM, seq=sequence)
    finally:
        await client.close()
    return event_pb2.Event.FromString(raw.data or b"")


async def audit_entries(url: str, gateway_id: str = "gw-1") -> list[audit_pb2.AuditEntry]:
    client = await nats.connect(url)
    try:
        frames = [
            raw.data or b""
            async for raw in stored_messages(
                client.jetstream(), subjects.AUDIT_STREAM, subjects.audit_entries(gateway_id)
            )
        ]
    finally:
        await client.close()
    return [audit_pb2.AuditEntry.FromString(d) for d in decode_frames(frames).entries]


async def test_other_content_under_a_stored_id_is_a_conflict_and_the_original_is_kept(
    gateway: Gateway, nats_url: str
) -> None:
    original = warning_event()
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        first = await ecology.publish(original)
        with capture_logs() as logs:
            conflict = await ecology.publish(reissued(original))
    assert conflict.conflict and conflict.duplicate
    assert conflict.stream_sequence == first.stream_sequence
    kept = await stored_event(nats_url, first.stream_sequence)
    assert kept.warning.infos[0].headline == original.warning.infos[0].headline
    assert [e["event"] for e in logs if e["event"] in ("publish.conflict", "client.conflict")] == [
        "publish.conflict",
        "client.conflict",
    ]
    counted = gateway.metrics.registry.get_sample_value(
        "dutylink_publish_conflicts_total", {"agency": "ecology"}
    )
    assert counted == 1


async def test_a_byte_equal_retry_stays_a_plain_duplicate_whatever_received_time_it_claims(
    gateway: Gateway,
) -> None:
    event = warning_event()
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        first = await ecology.publish(event)
        event.received_time.seconds = 12345  # replaced by the gateway: not content
        again = await ecology.publish(event)
    assert again.duplicate and not again.conflict
    assert again.stream_sequence == first.stream_sequence


async def test_a_batch_reports_a_conflict_per_result(gateway: Gateway) -> None:
    stored, retried = warning_event(), warning_event()
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        firsts = await ecology.publish_batch([stored, retried])
        fresh = warning_event()
        results = await ecology.publish_batch([reissued(stored), fresh, retried])
    receipts = [r.receipt for r in results]
    assert [(r.duplicate, r.conflict) for r in receipts] == [
        (True, True),
        (False, False),
        (True, False),
    ]
    assert receipts[0].stream_sequence == firsts[0].receipt.stream_sequence


async def test_an_original_stored_without_a_digest_header_is_compared_by_its_bytes(
    gateway: Gateway, nats_url: str
) -> None:
    """Events stored before the digest header existed: the gateway digests their bytes."""
    original = warning_event()
    stamped = envelope.stamped(original, "ecology", envelope.timestamp(datetime.now(UTC)))
    headers = envelope.cloudevents_headers(stamped)
    assert envelope.CONTENT_DIGEST_HEADER not in headers
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().publish(
            f"{subjects.EVENTS_PREFIX}.legacy",
            stamped.SerializeToString(),
            stream=subjects.EVENTS_STREAM,
            headers=headers,
        )
    finally:
        await client.close()
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        retry = await ecology.publish(original)
        conflict = await ecology.publish(reissued(original))
    assert retry.duplicate and not retry.conflict
    assert conflict.duplicate and conflict.conflict


async def test_the_adapter_keeps_a_conflicting_record_in_rejected_naming_the_original(
    gateway: Gateway, tmp_path: Path
) -> None:
    original = warning_event()
    record = Record("CAP-7", b"<alert>re-issued</alert>", "drop/cap-7.xml")
    rejected = tmp_path / "rejected"
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        first = await ecology.publish(original)
        pipeline = Pipeline(
            ecology, lambda _: [reissued(original)], RejectedStore(rejected), Metrics("cap")
        )
        [outcome] = await pipeline.publish([record])
    assert not outcome.ok
    assert outcome.rejected.startswith("conflict: ")
    assert outcome.rejected.endswith(f"stored original kept at sequence {first.stream_sequence}")
    [why] = rejected.glob("*.reason.json")
    assert json.loads(why.read_text())["reason"] == outcome.rejected
    [kept] = rejected.glob("*.record")
    assert kept.read_bytes() == record.body


def test_a_conflict_is_audited_with_both_digests_and_verify_store_accepts_it(
    tmp_path: Path,
) -> None:
    loop = LoopThread()
    server = NatsServer(tmp_path / "nats")
    original = warning_event()

    async def publish(url: str) -> tuple[int, list[audit_pb2.AuditEntry]]:
        config = config_for_tests(nats={"data_dir": str(tmp_path)})
        async with (
            gateway_for_tests(url, config) as gateway,
            DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology,
        ):
            first = await ecology.publish(original)
            await ecology.publish_batch([reissued(original)])
            await ecology.publish(reissued(original))
        return first.stream_sequence, await audit_entries(url)

    try:
        url = loop.run(server.start())
        sequence, entries = loop.run(publish(url))
        conflicts = [e for e in entries if e.outcome == audit_pb2.AUDIT_OUTCOME_CONFLICT]
        assert len(conflicts) == 2
        accepted = [
            e.event_digest
            for e in entries
            if e.outcome == audit_pb2.AUDIT_OUTCOME_ACCEPTED and e.event_id == original.id
        ]
        for entry in conflicts:
            assert entry.event_id == original.id and entry.stream_sequence == sequence
            assert entry.event_digest in accepted[1:], "settles its own ACCEPTED entry"
            assert len(entry.content_digest) == len(entry.stored_content_digest) == 32
            assert entry.content_digest != entry.stored_content_digest
            assert f"at sequence {sequence}" in entry.reason
        facts = publish_facts((i, e.SerializeToString()) for i, e in enumerate(entries))
        ledger = Ledger().add(facts)
        assert not ledger.unsettled, "every ACCEPTED entry is settled"
        assert sequence in ledger.wanted()

        args = ["verify", "--store", "--gateway-id", "gw-1", "--data-dir", str(tmp_path)]
        verified = runner.invoke(audit_app, args)
        assert verified.exit_code == 0, verified.stderr
        assert "1 acknowledged event present at their sequences" in verified.stdout
    finally:
        loop.run(server.stop())
        loop.close()


async def test_a_retried_batch_larger_than_one_window_of_gets_is_compared_event_by_event(
    gateway: Gateway,
) -> None:
    events = [warning_event() for _ in range(EVENT_GETS_IN_FLIGHT + 6)]
    async with DutyLinkClient(gateway.address, token=TOKENS["ecology"]) as ecology:
        firsts = await ecology.publish_batch(events)
        changed = len(events) - 2  # in the second window of gets
        again = await ecology.publish_batch(
            [reissued(e) if i == changed else e for i, e in enumerate(events)]
        )
    assert all(r.receipt.duplicate for r in again)
    assert [i for i, r in enumerate(again) if r.receipt.conflict] == [changed]
    assert [r.receipt.stream_sequence for r in again] == [r.receipt.stream_sequence for r in firsts]
