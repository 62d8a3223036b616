"""Personal data at rest, end to end on a real NATS server: the store's own files, read raw,
hold no personal field of the events published (nor of their dead letters) while the
recipients the policy allows get every one of them; the key ring's loading is audited by key id
only, and a rotation takes effect while the gateway runs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import stat
import struct
from datetime import timedelta
from pathlib import Path

import nats
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_pb2, event_pb2, gateway_pb2
from gateway.core.crypto import INTERNATIONAL, NATIONAL, CryptoProfile
from gateway.core.sealing import SEALED_HEADER, open_sealed
from gateway.core.subjects import DEADLETTER_STREAM, EVENTS_STREAM, deadletter_subject
from gateway.server import Gateway
from gateway.store.nats_server import CONFIG_FILE, NatsServer
from gateway.store.sealing_keys import read_key_file, rotated, write_key_file
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event, resource_request_event
from tests.test_audit_facts import logged

NAME, PHONE, ID_NUMBER = "Zhang Sanfeng", "13812345678", "31011519900101123X"
LATITUDE = 31.240187
CONTACT, CONTACT_PHONE, CONTACT_MAIL = "Zhao Liuliu", "13933334444", "zhao.liuliu@example.cn"
PERSONAL = [
    NAME.encode(),
    PHONE.encode(),
    ID_NUMBER.encode(),
    struct.pack("<d", LATITUDE),  # a double, as protobuf encodes it
    CONTACT.encode(),
    CONTACT_PHONE.encode(),
    CONTACT_MAIL.encode(),
]


def personal_events() -> list[event_pb2.Event]:
    incident = incident_event()
    reporter = incident.incident.reporter
    reporter.name, reporter.phone, reporter.id_number = NAME, PHONE, ID_NUMBER
    reporter.position.latitude, reporter.position.longitude = LATITUDE, 121.500217
    resource = resource_request_event()
    resource.resource.contacts.add(
        description="Depot", person_name=CONTACT, phone=CONTACT_PHONE, email=CONTACT_MAIL
    )
    return [incident, resource]


def store_bytes(store_dir: Path) -> bytes:
    files = [path for path in store_dir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".blk" for path in files), "the store has written block files"
    return b"".join(path.read_bytes() for path in files)


async def subscribed(client: DutyLinkClient, name: str) -> None:
    """Create the durable subscription `name` (it takes what is published from now on)."""
    subscription = client.subscribe(name)
    await subscription.open()
    await subscription.close()


async def receive(client: DutyLinkClient, count: int) -> list[gateway_pb2.Delivery]:
    received: list[gateway_pb2.Delivery] = []
    done = asyncio.Event()

    async def handler(delivery: gateway_pb2.Delivery) -> None:
        received.append(delivery)
        if len(received) >= count:
            done.set()

    consuming = asyncio.create_task(client.consume("at-rest", handler))
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
    return received


async def receive_for(client: DutyLinkClient, name: str, seconds: float) -> list[str]:
    """The ids of what subscription `name` delivers within `seconds`."""
    received: list[str] = []
    subscription = client.subscribe(name)
    await subscription.open()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for delivery in subscription:
                received.append(delivery.event.id)
    await subscription.close()
    return received


async def dead_letter_all(client: DutyLinkClient, count: int) -> None:
    """A subscriber whose handler always fails: with one delivery allowed, each event becomes a
    dead letter (stored in the dead-letter stream, on disk too)."""
    failed: set[str] = set()

    async def handler(delivery: gateway_pb2.Delivery) -> None:
        failed.add(delivery.event.id)
        raise RuntimeError("the handler is down")

    consuming = asyncio.create_task(client.consume("failing", handler, nack_delay=timedelta(0)))
    try:
        for _ in range(100):
            if len(failed) >= count:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the nacks come back past max_deliveries: dead letters
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming


@pytest.mark.parametrize(
    ("seal", "profile"),
    [(True, INTERNATIONAL), (True, NATIONAL), (False, INTERNATIONAL)],
    ids=["sealed", "sealed-national", "in-clear"],
)
async def test_a_raw_read_of_the_store_shows_no_personal_field(
    tmp_path: Path, seal: bool, profile: CryptoProfile
) -> None:
    key_file = tmp_path / "keys" / "sealing.keys"
    config = config_for_tests(
        nats={"data_dir": str(tmp_path / "data")},
        audit={"crypto_profile": profile.name},
        personal_data={"seal": seal, "key_file": str(key_file)},
        subscriptions={"ack_wait_seconds": 1.0, "max_deliveries": 1},
    )
    events = personal_events()
    async with NatsServer(tmp_path / "nats") as server:
        async with (
            gateway_for_tests(server.url, config) as gateway,
            DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
            DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
            DutyLinkClient(gateway.address, token=TOKENS["health"]) as health,
        ):
            await subscribed(police, "at-rest")
            await subscribed(health, "failing")
            await fire.publish_batch(events)
            delivered = {d.event.id: d.event for d in await receive(police, len(events))}
            await dead_letter_all(health, len(events))
        entries = await logged(server.url)
    # The recipient the (open) policy allows gets every personal field back.
    incident, resource = (delivered[e.id] for e in events)
    assert incident.incident.reporter.phone == PHONE
    assert incident.incident.reporter.position.latitude == LATITUDE
    assert resource.resource.contacts[-1].email == CONTACT_MAIL
    assert incident.incident.reporter == events[0].incident.reporter
    assert resource.resource.contacts == events[1].resource.contacts
    dead = [e for e in entries if e.action == audit_pb2.AUDIT_ACTION_DEAD_LETTER]
    assert {e.event_id for e in dead} == {e.id for e in events}
    raw = store_bytes(tmp_path / "nats")
    assert events[0].id.encode() in raw  # the reader does see the stored events
    found = [value for value in PERSONAL if value in raw]
    if seal:
        assert found == [], "personal fields in clear in the store's files"
        keyring = read_key_file(key_file, profile)
        (keys,) = [e for e in entries if e.action == audit_pb2.AUDIT_ACTION_SEALING_KEYS]
        assert f"seals with {keyring.current}" in keys.reason and str(key_file) in keys.reason
        secret = base64.b64encode(keyring.keys[keyring.current])
        assert secret not in b"".join(e.SerializeToString() for e in entries)
    else:
        assert found == PERSONAL  # the control: stored in clear, the raw read finds them


async def sealing_reasons(url: str, count: int) -> list[tuple[int, str]]:
    """The first `count` key ring entries of the log, once they are there."""
    for _ in range(100):
        reasons = [
            (e.outcome, e.reason)
            for e in await logged(url)
            if e.action == audit_pb2.AUDIT_ACTION_SEALING_KEYS
        ]
        if len(reasons) >= count:
            return reasons
        await asyncio.sleep(0.1)
    pytest.fail(f"fewer than {count} key ring entries in the audit log")


async def test_a_rotation_is_audited_and_seals_new_events_with_the_new_key(
    tmp_path: Path, nats_url: str
) -> None:
    key_file = tmp_path / "sealing.keys"
    config = config_for_tests(
        personal_data={"key_file": str(key_file), "reload_seconds": 0.1},
        subscriptions={"ack_wait_seconds": 1.0},
    )
    before, after = personal_events()[0], personal_events()[0]
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
    ):
        await subscribed(police, "at-rest")
        first = await fire.publish(before)
        old = read_key_file(key_file, INTERNATIONAL)
        new = rotated(old)
        write_key_file(key_file, new)
        await sealing_reasons(nats_url, 2)  # the watch read it again: in force
        key_file.write_text("{not a ring", encoding="utf-8")  # a bad edit: refused, audited
        reasons = await sealing_reasons(nats_url, 3)
        second = await fire.publish(after)  # the ring in force is still the rotated one
        delivered = {d.event.id: d.event for d in await receive(police, 2)}
    for sent in (before, after):
        assert delivered[sent.id].incident.reporter == sent.incident.reporter
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        stored = [await js.get_msg(EVENTS_STREAM, seq=r.stream_sequence) for r in (first, second)]
    finally:
        await connection.close()
    assert [(m.headers or {})[SEALED_HEADER].split(":")[0] for m in stored] == [
        old.current,
        new.current,
    ]
    assert reasons[0] == (
        audit_pb2.AUDIT_OUTCOME_OK,
        f"loaded: AES-256-GCM: seals with {old.current}; from {key_file}",
    )
    assert reasons[1] == (
        audit_pb2.AUDIT_OUTCOME_OK,
        f"changed (was AES-256-GCM: seals with {old.current}): AES-256-GCM: seals with "
        f"{new.current}; opens also {old.current}; from {key_file}",
    )
    outcome, refused = reasons[2]
    assert outcome == audit_pb2.AUDIT_OUTCOME_INVALID
    assert refused == f"refused: {key_file}: not a sealing key ring (JSONDecodeError)"


async def test_an_event_this_gateway_cannot_open_is_kept_as_a_dead_letter(
    tmp_path: Path, nats_url: str
) -> None:
    """A replica without the key that sealed an event (another ring) does not deliver it in
    part, nor lose it: it dead-letters it naming the key, sealed part and all, so that a
    replay once the key is back delivers it whole."""
    ring_a, ring_b = tmp_path / "a.keys", tmp_path / "b.keys"
    event = personal_events()[0]
    sealing_with = config_for_tests(personal_data={"key_file": str(ring_a)})
    async with (
        gateway_for_tests(nats_url, sealing_with) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
    ):
        await subscribed(police, "other-ring")
        await fire.publish(event)
    other_ring = config_for_tests(personal_data={"key_file": str(ring_b)})
    async with (
        gateway_for_tests(nats_url, other_ring) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
    ):
        received = await receive_for(police, "other-ring", seconds=2.0)
    assert received == [], "delivered without its personal fields"
    keyring = read_key_file(ring_a, INTERNATIONAL)
    dead = [
        e
        for e in await logged(nats_url)
        if e.action == audit_pb2.AUDIT_ACTION_DEAD_LETTER and e.event_id == event.id
    ]
    assert len(dead) == 1
    assert dead[0].reason.startswith(
        f"unopenable: sealed with key {keyring.current}, which this gateway does not hold"
    )
    connection = await nats.connect(nats_url)
    try:
        letter = await connection.jetstream().get_last_msg(
            DEADLETTER_STREAM, deadletter_subject("police", "other-ring")
        )
    finally:
        await connection.close()
    kept = open_sealed(letter.data or b"", (letter.headers or {})[SEALED_HEADER], keyring)
    assert kept.incident.reporter == event.incident.reporter


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "in-clear"])
async def test_the_embedded_store_is_encrypted_with_a_key_kept_apart(
    tmp_path: Path, encrypted: bool
) -> None:
    """JetStream's own encryption, the second layer: with it, not even the fields left in
    clear by sealing (an event's title) can be read from the embedded store's files; its key
    is a 0600 file beside (never inside) the store and never in the server's configuration."""
    config = config_for_tests(
        nats={"data_dir": str(tmp_path), "store_encryption": encrypted},
    )
    event = incident_event()
    event.incident.title = "MARKER-4f1c9e2a title of the incident"
    async with (
        Gateway(config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire,
    ):
        await fire.publish(event)
    raw = store_bytes(tmp_path / "nats" / "jetstream")
    assert (b"MARKER-4f1c9e2a" in raw) is not encrypted
    key_file = tmp_path / "keys" / "jetstream.key"
    assert key_file.exists() is encrypted
    if encrypted:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text(encoding="utf-8").strip()
        assert key.encode() not in store_bytes(tmp_path / "nats")  # config, logs, store
        assert "cipher: aes" in (tmp_path / "nats" / CONFIG_FILE).read_text(encoding="utf-8")
