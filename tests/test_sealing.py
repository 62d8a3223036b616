"""Personal fields sealed at rest (gateway.core.sealing): what is stored holds none of them, the
sealed part opens to the very event under both crypto profiles, and it does not open when it
or the bytes beside it were changed, or without its key; key rings rotate and retire keys."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime

import pytest

from dutylink.policies.engine import Decision
from dutylink.policies.redaction import sensitive_fields
from dutylink.v1 import event_pb2
from gateway.access.auth import Principal
from gateway.core import envelope
from gateway.core.admission import Admitted, RefusalKind, Refused, pipeline
from gateway.core.crypto import INTERNATIONAL, NATIONAL, CryptoProfile, sm3
from gateway.core.sealing import (
    SEALED_HEADER,
    SEALED_PATHS,
    Keyring,
    Sealer,
    SealingError,
    key_id,
    new_keyring,
    open_sealed,
    parse_keyring,
    render_keyring,
)
from gateway.core.validation import Validator
from gateway.testkit.fuzz import seeds
from tests.factories import incident_event, resource_request_event

NAME, PHONE, ID_NUMBER = "Zhang San", "13800000000", "310115199001011234"
CONTACT_PHONE, CONTACT_MAIL = "13933334444", "zl@example.cn"


@pytest.fixture(params=[INTERNATIONAL, NATIONAL], ids=lambda p: p.name)
def profile(request: pytest.FixtureRequest) -> CryptoProfile:
    return request.param  # type: ignore[no-any-return]


def ring(profile: CryptoProfile) -> Keyring:
    return new_keyring(
        profile, secrets.token_bytes(profile.aead.key_bytes), secrets.token_bytes(32), "now"
    )


def sealer(keyring: Keyring) -> Sealer:
    return Sealer(keyring, secrets.token_bytes)


def reported() -> event_pb2.Event:
    event = incident_event()
    event.incident.reporter.name = NAME
    event.incident.reporter.phone = PHONE
    event.incident.reporter.id_number = ID_NUMBER
    event.incident.reporter.position.latitude = 31.2401
    event.incident.reporter.position.longitude = 121.5002
    return event


def with_contacts() -> event_pb2.Event:
    event = resource_request_event()
    event.resource.contacts.add(description="Staging officer", person_name="Wang Wu")
    event.resource.contacts.add(
        description="Depot", person_name="Zhao Liu", phone=CONTACT_PHONE, email=CONTACT_MAIL
    )
    event.resource.rm_xml = f"<rm><phone>{CONTACT_PHONE}</phone></rm>".encode()
    return event


def test_every_marked_field_and_each_verbatim_copy_is_sealed() -> None:
    for path, _ in sensitive_fields():
        assert any(path == p or path.startswith(p + ".") for p in SEALED_PATHS), path
    assert "incident.reporter.position" in SEALED_PATHS
    assert "resource.rm_xml" in SEALED_PATHS
    assert "incident.reporter.channel" not in SEALED_PATHS


@pytest.mark.parametrize("make", [reported, with_contacts])
def test_what_is_stored_holds_no_personal_value(
    profile: CryptoProfile, make: type[event_pb2.Event]
) -> None:
    event = make()
    sealed = sealer(ring(profile)).seal(event)
    assert sealed.sealed is not None
    stored = sealed.data + sealed.sealed.encode()
    for value in (NAME, PHONE, ID_NUMBER, CONTACT_PHONE, CONTACT_MAIL, "Zhao Liu", "Wang Wu"):
        assert value.encode() not in stored
    public = event_pb2.Event.FromString(sealed.data)
    assert public.id == event.id and public.type == event.type  # the rest stays readable
    assert len(public.resource.contacts) == len(event.resource.contacts)


@pytest.mark.parametrize("make", [reported, with_contacts])
def test_the_sealed_part_opens_to_the_very_event(
    profile: CryptoProfile, make: type[event_pb2.Event]
) -> None:
    keyring = ring(profile)
    event = make()
    sealed = sealer(keyring).seal(event)
    opened = open_sealed(sealed.data, sealed.sealed, keyring)
    assert opened.SerializeToString(deterministic=True) == event.SerializeToString(
        deterministic=True
    )


def test_every_demo_event_comes_back_whole(profile: CryptoProfile) -> None:
    keyring = ring(profile)
    for _, event in seeds(datetime(2026, 12, 7, tzinfo=UTC)):
        sealed = sealer(keyring).seal(event)
        opened = open_sealed(sealed.data, sealed.sealed, keyring)
        assert opened == event, event.type


def test_an_event_without_personal_fields_is_stored_as_it_was() -> None:
    event = incident_event()
    event.incident.reporter.Clear()
    sealed = sealer(ring(INTERNATIONAL)).seal(event)
    assert sealed.sealed is None
    assert sealed.data == event.SerializeToString()
    assert sealed.content_digest == envelope.content_digest(event)


def test_the_content_digest_of_a_sealed_event_is_keyed(profile: CryptoProfile) -> None:
    """A plain hash of the whole content would let a reader of the store try phone numbers
    against it; retries under one ring still match, other content does not."""
    keyring = ring(profile)
    event = reported()
    first, retry = sealer(keyring).seal(event), sealer(keyring).seal(event)
    assert first.content_digest == retry.content_digest
    assert first.sealed != retry.sealed  # a fresh nonce each time
    assert first.content_digest != envelope.content_digest(event)
    other = reported()
    other.incident.reporter.phone = "13800000001"
    assert sealer(keyring).seal(other).content_digest != first.content_digest


def test_a_changed_byte_of_either_half_does_not_open(profile: CryptoProfile) -> None:
    keyring = ring(profile)
    sealed = sealer(keyring).seal(reported())
    assert sealed.sealed is not None
    public = event_pb2.Event.FromString(sealed.data)
    public.incident.title += "!"  # the stored event edited: the part is bound to its bytes
    with pytest.raises(SealingError, match="does not open"):
        open_sealed(public.SerializeToString(), sealed.sealed, keyring)
    identifier, _, body = sealed.sealed.partition(":")
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(SealingError, match="does not open"):
        open_sealed(sealed.data, f"{identifier}:{base64.b64encode(raw).decode()}", keyring)
    with pytest.raises(SealingError, match="does not open"):
        open_sealed(sealed.data, f"{identifier}:not base64!", keyring)


def test_a_missing_key_is_named(profile: CryptoProfile) -> None:
    sealed = sealer(ring(profile)).seal(reported())
    other = ring(profile)
    with pytest.raises(SealingError, match=f"which this gateway does not hold.*{other.current}"):
        open_sealed(sealed.data, sealed.sealed, other)
    with pytest.raises(SealingError, match="holds no sealing keys"):
        open_sealed(sealed.data, sealed.sealed, None)


def test_rotation_seals_with_the_new_key_and_still_opens_the_old(profile: CryptoProfile) -> None:
    old_ring = ring(profile)
    event = reported()
    before = sealer(old_ring).seal(event)
    new_ring = old_ring.rotated(secrets.token_bytes(profile.aead.key_bytes), "later")
    assert new_ring.current != old_ring.current
    after = sealer(new_ring).seal(event)
    assert after.sealed is not None and after.sealed.startswith(new_ring.current + ":")
    assert open_sealed(before.data, before.sealed, new_ring).incident.reporter.phone == PHONE
    # The digest key does not rotate: a retry across a rotation is still a retry.
    assert after.content_digest == before.content_digest
    retired = new_ring.retired(old_ring.current)
    with pytest.raises(SealingError, match=old_ring.current):
        open_sealed(before.data, before.sealed, retired)
    with pytest.raises(SealingError, match="rotate before retiring"):
        new_ring.retired(new_ring.current)
    assert f"seals with {new_ring.current}; opens also {old_ring.current}" in new_ring.describe()


def test_a_ring_is_written_and_read_back(profile: CryptoProfile) -> None:
    keyring = ring(profile).rotated(secrets.token_bytes(profile.aead.key_bytes), "later")
    assert parse_keyring(render_keyring(keyring), "f", profile) == keyring


def test_a_ring_of_the_other_profile_is_refused() -> None:
    text = render_keyring(ring(NATIONAL))
    with pytest.raises(SealingError, match=r"keys are for the national profile.*international"):
        parse_keyring(text, "keys.json", INTERNATIONAL)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "expected a JSON object"),
        (lambda d: d.update(current="00000000"), "current key '00000000' is not in the ring"),
        (lambda d: d["keys"][0].update(id="0000000g"), "8 hex digits"),
        (
            lambda d: (d["keys"][0].update(id="00000000"), d.update(current="00000000")),
            "the id is not the key's",
        ),
        (lambda d: d["keys"][0].update(key="AAAA"), "takes 32-byte keys, got 3"),
        (lambda d: d["keys"][0].update(key="*not base64*"), r"not a sealing key ring \("),
        (lambda d: d.update(digest_key="AAAA"), "digest key is 32 bytes"),
        (lambda d: d.update(profile="other"), "profile: one of"),
    ],
)
def test_a_bad_ring_says_what_is_wrong_and_shows_no_key(change, message) -> None:  # type: ignore[no-untyped-def]
    keyring = ring(INTERNATIONAL)
    document = json.loads(render_keyring(keyring))
    if document["keys"][0]["id"] == "00000000":  # pragma: no cover - one chance in 2**32
        pytest.skip("the random key's id happens to be 00000000")
    change(document)
    with pytest.raises(SealingError, match=message) as raised:
        parse_keyring(json.dumps(document), "keys.json", INTERNATIONAL)
    assert str(raised.value).startswith("keys.json: ")
    for secret in (keyring.keys[keyring.current], keyring.digest_key):
        assert base64.b64encode(secret).decode() not in str(raised.value)


def test_key_ids_follow_the_profile_hash() -> None:
    key = bytes(range(32))
    assert key_id(INTERNATIONAL, key) != key_id(NATIONAL, key)


def allow(_: event_pb2.Event) -> Decision:
    return Decision(True, ("r1",), "ok", (), "v1")


def test_admission_seals_and_refuses_what_no_longer_fits_once_sealed() -> None:
    """The sealed part is base64 beside the stored event: an event under the limit may not fit
    once sealed, and is refused naming the limit (never cut short)."""
    keyring = ring(INTERNATIONAL)
    event = reported()
    event.incident.reporter.name = "x" * 64
    received = envelope.timestamp(datetime(2026, 12, 7, tzinfo=UTC))
    roomy = pipeline(Validator(), allow, max_event_bytes=1 << 20, sealer=sealer(keyring))
    admitted = roomy.run(Principal("fire"), event, received)
    assert isinstance(admitted, Admitted)
    assert NAME.encode() not in admitted.data and "x" * 64 not in admitted.data.decode("latin-1")
    opened = open_sealed(admitted.data, admitted.headers[SEALED_HEADER], keyring)
    assert opened == admitted.event  # the admitted event itself stays whole
    limit = event.ByteSize() + 64
    tight = pipeline(Validator(), allow, max_event_bytes=limit, sealer=sealer(keyring))
    refused = tight.run(Principal("fire"), event, received)
    assert isinstance(refused, Refused) and refused.kind is RefusalKind.INVALID
    assert "once its personal fields are sealed" in refused.message
    assert f"the limit is {limit}" in refused.message
    # Without a sealer the same event fits.
    plain = pipeline(Validator(), allow, max_event_bytes=limit)
    assert isinstance(plain.run(Principal("fire"), event, received), Admitted)


def test_the_content_digest_follows_the_profile() -> None:
    """No SHA-256 under the national profile: an event without personal fields is digested
    with SM3 (and with a sealed part, HMAC-SM3 under the ring's digest key)."""
    event = reported()
    event.incident.reporter.Clear()
    received = envelope.timestamp(datetime(2026, 12, 7, tzinfo=UTC))
    national = pipeline(Validator(), allow, max_event_bytes=1 << 20, hashing=NATIONAL.hash)
    admitted = national.run(Principal("fire"), event, received)
    assert isinstance(admitted, Admitted)
    content = envelope.content_bytes(admitted.event)
    assert admitted.headers[envelope.CONTENT_DIGEST_HEADER] == sm3(content).hex()
    sealed = sealer(ring(NATIONAL)).seal(admitted.event)
    assert sealed.content_digest == sm3(content)
