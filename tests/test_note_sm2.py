"""Signed notes with SM2 keys (the national crypto profile): key strings, key ids over SM3,
notes that verify, and every way one must not."""

from __future__ import annotations

import base64

import pytest

from gateway.audit.note import (
    ED25519,
    SM2,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    key_type_of,
    open_note,
    sign_note,
)
from gateway.core.crypto import INTERNATIONAL, NATIONAL, sm3

NAME = "dutylink/audit/gw-1"
TEXT = Checkpoint("dutylink/audit/gw-1", 3, bytes(range(32))).to_text()


def test_an_sm2_key_round_trips_through_its_strings_with_an_sm3_key_id() -> None:
    signer = Signer.generate(NAME, SM2)
    verifier = signer.verifier()
    assert verifier.key_type is SM2 and verifier.profile is NATIONAL
    expected_id = sm3(NAME.encode() + b"\n" + b"\xffdutylink.sm2-sm3" + verifier.public_key)[:4]
    assert verifier.key_id == expected_id
    again = Signer.from_key_string(signer.key_string())
    assert again.key_id == signer.key_id and again.verifier().public_key == verifier.public_key
    parsed = Verifier.from_key_string(verifier.key_string())
    assert parsed.key_string() == verifier.key_string() and parsed.key_type is SM2
    raw = base64.b64decode(verifier.key_string().split("+", 2)[2])
    assert raw[:17] == b"\xffdutylink.sm2-sm3" and len(raw) == 17 + 64
    assert "PRIVATE" not in repr(signer) and signer.key_string() not in repr(signer)


def test_an_sm2_signed_note_opens_with_its_key_and_each_signature_differs() -> None:
    signer = Signer.generate(NAME, SM2)
    first, second = sign_note(TEXT, [signer]), sign_note(TEXT, [signer])
    assert first != second, "SM2 signatures are randomised"
    for note in (first, second):
        assert open_note(note, [signer.verifier()]) == (TEXT, [NAME])


def test_a_changed_text_a_stranger_key_or_the_other_profiles_key_does_not_open_it() -> None:
    signer = Signer.generate(NAME, SM2)
    note = sign_note(TEXT, [signer])
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note.replace("\n3\n", "\n4\n", 1), [signer.verifier()])
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(note, [Signer.generate(NAME, SM2).verifier()])
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(note, [Signer.generate(NAME).verifier()])  # an Ed25519 key of the same name


def test_a_note_signed_with_both_profiles_opens_with_either_key() -> None:
    national, international = Signer.generate(NAME, SM2), Signer.generate(NAME, ED25519)
    note = sign_note(TEXT, [national, international])
    assert open_note(note, [national.verifier()]) == (TEXT, [NAME])
    assert open_note(note, [international.verifier()]) == (TEXT, [NAME])


def test_malformed_sm2_keys_are_refused() -> None:
    verifier = Signer.generate(NAME, SM2).verifier()
    name, key_id, encoded = verifier.key_string().split("+", 2)
    raw = base64.b64decode(encoded)
    short = base64.b64encode(raw[:-1]).decode()
    with pytest.raises(NoteError, match="nor an SM2 key"):
        Verifier.from_key_string(f"{name}+{key_id}+{short}")
    with pytest.raises(NoteError, match="does not match computed"):
        Verifier.from_key_string(f"other+{key_id}+{encoded}")
    with pytest.raises(NoteError, match="an SM2 public key is 64 bytes"):
        Verifier(NAME, bytes(32), SM2)
    with pytest.raises(NoteError, match="an SM2 private key is 96 bytes"):
        Signer(NAME, bytes(32), SM2)


def test_each_profile_has_its_key_type() -> None:
    assert key_type_of(NATIONAL) is SM2 and key_type_of(INTERNATIONAL) is ED25519
