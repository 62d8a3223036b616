"""C2SP checkpoints and Ed25519 signed notes: public vectors, strict parsing, and the verifier
rules (unknown keys ignored, a bad known signature rejects, one trusted signature required)."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.merkle import EMPTY_ROOT
from gateway.audit.note import (
    MAX_TREE_SIZE,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    open_note,
    sign_note,
)

# Vector 1: golang.org/x/mod/sumdb/note; Vector 2: the c2sp.org/signed-note example.
VKEY_1 = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY_1 = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT_1 = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"  # fmt: skip
LINE_1 = "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"  # fmt: skip
NOTE_1 = TEXT_1 + "\n" + LINE_1
VKEY_2 = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
TEXT_2 = "This is an example message.\n"
NOTE_2 = (
    TEXT_2 + "\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

ROOT = bytes(range(224, 256))  # its base64 has both "+" and "/"
CHECKPOINT = f"dutylink.example/audit/v1\n42\n{base64.b64encode(ROOT).decode()}\n"


def signer(name: str, seed: int) -> Signer:
    return Signer(name, bytes([seed]) * 32)


# --- Signed notes: public vectors ---------------------------------------------------------


def test_vector_1_note_verifies_with_its_public_key() -> None:
    assert open_note(NOTE_1, [Verifier.from_key_string(VKEY_1)]) == (TEXT_1, ["PeterNeumann"])


def test_resigning_vector_1_reproduces_its_signature_line_byte_for_byte() -> None:
    note = sign_note(TEXT_1, [Signer.from_key_string(SKEY_1)])
    assert note.encode() == NOTE_1.encode()


def test_key_strings_round_trip_and_the_signer_derives_the_published_verifier_key() -> None:
    secret = Signer.from_key_string(SKEY_1)
    assert secret.key_string() == SKEY_1
    assert secret.verifier().key_string() == VKEY_1
    assert Verifier.from_key_string(VKEY_1).key_string() == VKEY_1
    assert secret.key_id == Verifier.from_key_string(VKEY_1).key_id == bytes.fromhex("c74f20a3")


def test_a_signer_never_shows_its_seed() -> None:
    assert repr(Signer.from_key_string(SKEY_1)) == "Signer('PeterNeumann', key id c74f20a3)"


def test_vector_2_verifies_with_the_spec_example_key() -> None:
    assert open_note(NOTE_2, [Verifier.from_key_string(VKEY_2)]) == (TEXT_2, ["example.com/foo"])


def test_notes_given_as_bytes_are_decoded_as_utf8_and_verified() -> None:
    assert open_note(NOTE_1.encode(), [Verifier.from_key_string(VKEY_1)])[0] == TEXT_1


# --- Signed notes: the verifier rules -----------------------------------------------------


def test_an_ascii_hyphen_instead_of_the_em_dash_is_not_a_signature_line() -> None:
    with pytest.raises(NoteError, match=r"signature line 1 .* does not start with an em dash"):
        open_note(NOTE_1.replace("\u2014", "-"), [Verifier.from_key_string(VKEY_1)])


def test_a_corrupted_signature_by_a_trusted_key_rejects_the_note() -> None:
    raw = bytearray(base64.b64decode(LINE_1.split()[-1]))
    raw[10] ^= 1
    note = TEXT_1 + "\n\u2014 PeterNeumann " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(NoteError, match="signature by trusted key PeterNeumann\\+c74f20a3 does not verify"):  # fmt: skip
        open_note(note, [Verifier.from_key_string(VKEY_1)])


def test_a_bad_trusted_signature_rejects_the_note_even_beside_a_good_one() -> None:
    other = signer("dutylink.example/witness", 7)
    forged = sign_note("something else\n", [other]).splitlines(keepends=True)[-1]
    note = sign_note(TEXT_1, [Signer.from_key_string(SKEY_1)]) + forged
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note, [Verifier.from_key_string(VKEY_1), other.verifier()])


def test_a_same_named_key_with_another_id_is_ignored_so_nothing_trusted_signed() -> None:
    impostor = signer("PeterNeumann", 1).verifier()
    assert impostor.key_id != bytes.fromhex("c74f20a3")
    with pytest.raises(NoteError, match=r"no signature by a trusted key \(trusted: PeterNeumann\+"):
        open_note(NOTE_1, [impostor])


def test_signatures_by_unknown_keys_are_ignored_beside_a_trusted_one() -> None:
    log, witness = Signer.from_key_string(SKEY_1), signer("dutylink.example/witness", 9)
    note = sign_note(TEXT_1, [witness, log])
    assert open_note(note, [log.verifier()]) == (TEXT_1, ["PeterNeumann"])
    both = open_note(note, [log.verifier(), witness.verifier()])
    assert both == (TEXT_1, ["dutylink.example/witness", "PeterNeumann"])


def test_a_note_with_no_verifiers_is_rejected() -> None:
    with pytest.raises(NoteError, match=r"trusted: none"):
        open_note(NOTE_1, [])


def test_two_verifiers_with_the_same_name_and_key_id_are_refused_as_ambiguous() -> None:
    key = Verifier.from_key_string(VKEY_1)
    with pytest.raises(NoteError, match="share name and key id"):
        open_note(NOTE_1, [key, key])


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        (NOTE_1.replace("\n", "\r\n"), "control character U\\+000D"),
        (NOTE_1.replace("cryptography", "crypto\tgraphy"), "control character U\\+0009"),
        (NOTE_1.replace("cryptography", "crypto\x00graphy"), "control character U\\+0000"),
        (NOTE_1.replace("\n\n", "\n"), "no blank line"),
        (TEXT_1 + "\n", "no signature lines"),
        (NOTE_1[:-1], "does not end with a newline"),
        (NOTE_1.replace("PeterNeumann ", "PeterNeumann"), "no space between key name"),
        (NOTE_1.replace("\u2014 PeterNeumann", "\u2014  PeterNeumann"), "must be non-empty"),
        (NOTE_1.replace("\u2014 PeterNeumann", "\u2014 Peter+Neumann"), "without spaces or '\\+'"),
        (NOTE_1.replace("AM=\n", "AM\n"), "not standard padded base64"),
        (NOTE_1.replace("AM=\n", "AN=\n"), "not canonical base64"),
        (TEXT_1 + "\n\u2014 PeterNeumann AAAA\n", "3 bytes, expected a key id"),
        ("text\ud800\n" + "\n" + LINE_1, "not valid UTF-8"),
    ],
)
def test_malformed_notes_are_rejected_with_the_reason(note: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        open_note(note, [Verifier.from_key_string(VKEY_1)])


def test_invalid_utf8_bytes_are_rejected() -> None:
    with pytest.raises(NoteError, match="not valid UTF-8 \\(byte 3\\)"):
        open_note(b"If \xff" + NOTE_1.encode()[4:], [Verifier.from_key_string(VKEY_1)])


def test_the_text_ends_at_the_last_blank_line_so_texts_may_contain_blank_lines() -> None:
    log = Signer.from_key_string(SKEY_1)
    text = "first paragraph\n\nsecond paragraph\n\n"
    assert open_note(sign_note(text, [log]), [log.verifier()]) == (text, ["PeterNeumann"])


def test_notes_over_the_size_or_signature_limits_are_rejected() -> None:
    log = Signer.from_key_string(SKEY_1)
    with pytest.raises(NoteError, match="larger than the limit of 100 bytes"):
        open_note(NOTE_1, [log.verifier()], max_size=100)
    wide = "\u4e00" * 50 + NOTE_1[50:]  # as many characters as NOTE_1, 100 more UTF-8 bytes
    with pytest.raises(NoteError, match=f"larger than the limit of {len(NOTE_1)} bytes"):
        open_note(wide, [log.verifier()], max_size=len(NOTE_1))
    many = sign_note(TEXT_1, [log] * 17)
    with pytest.raises(NoteError, match="17 signature lines, more than the limit of 16"):
        open_note(many, [log.verifier()], max_signatures=16)
    assert open_note(many, [log.verifier()]) == (TEXT_1, ["PeterNeumann"])


def test_signing_refuses_text_that_could_not_be_opened() -> None:
    log = Signer.from_key_string(SKEY_1)
    with pytest.raises(NoteError, match="end with a newline"):
        sign_note("no newline", [log])
    with pytest.raises(NoteError, match="control character"):
        sign_note("carriage\r\n", [log])
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note(TEXT_1, [])


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (
            VKEY_1.replace("c74f20a3", "c74f20a4"),
            "key id c74f20a4 does not match computed c74f20a3",
        ),
        (VKEY_1.replace("c74f20a3", "C74F20A3"), "not 8 lowercase hex digits"),
        (VKEY_1.replace("+ARpc", "+AhpX"), "neither an Ed25519 key .* nor an SM2 key"),
        (VKEY_1.replace("PeterNeumann", "Peter Neumann"), "without spaces"),
        ("PeterNeumann+c74f20a3", "name\\+keyid\\+base64"),
        (SKEY_1, "key id 'KEY' is not 8 lowercase hex digits"),
    ],
)
def test_malformed_verifier_key_strings_are_rejected(key: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        Verifier.from_key_string(key)


def test_signer_key_strings_need_the_private_prefix_and_a_matching_id() -> None:
    with pytest.raises(NoteError, match="must start with 'PRIVATE\\+KEY\\+'"):
        Signer.from_key_string(VKEY_1)
    with pytest.raises(NoteError, match="does not match computed c74f20a3"):
        Signer.from_key_string(SKEY_1.replace("c74f20a3", "00000000"))


# --- Checkpoints --------------------------------------------------------------------------


def test_a_checkpoint_parses_and_formats_back_to_the_same_text() -> None:
    parsed = Checkpoint.parse(CHECKPOINT)
    assert parsed == Checkpoint("dutylink.example/audit/v1", 42, ROOT)
    assert parsed.to_text() == CHECKPOINT


def test_extension_lines_are_kept_in_order_and_round_trip() -> None:
    text = CHECKPOINT + "Timestamp: 1700000000\nsecond extension\n"
    parsed = Checkpoint.parse(text)
    assert parsed.extensions == ("Timestamp: 1700000000", "second extension")
    assert parsed.to_text() == text


def test_the_empty_tree_checkpoint_carries_the_empty_root() -> None:
    empty = Checkpoint("dutylink.example/audit/v1", 0, EMPTY_ROOT)
    assert Checkpoint.parse(empty.to_text()) == empty


def test_a_signed_checkpoint_opens_and_parses_end_to_end() -> None:
    log = signer("dutylink.example/audit/v1", 3)
    text, names = open_note(sign_note(CHECKPOINT, [log]), [log.verifier()])
    assert names == ["dutylink.example/audit/v1"]
    assert Checkpoint.parse(text).size == 42


ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"origin\n042\n{ROOT_B64}\n", "'042' is not decimal without leading zeros"),
        (f"origin\n-1\n{ROOT_B64}\n", "'-1' is not decimal"),
        (f"origin\n+1\n{ROOT_B64}\n", "'\\+1' is not decimal"),
        (f"origin\n1_000\n{ROOT_B64}\n", "'1_000' is not decimal"),
        (f"origin\n\u0664\u0662\n{ROOT_B64}\n", "is not decimal"),
        (f"origin\n{2**64}\n{ROOT_B64}\n", "outside 0..2\\*\\*64-1"),
        (f"origin\n{'9' * 5000}\n{ROOT_B64}\n", "is not decimal"),
        (f"origin\n1\n{ROOT_B64.rstrip('=')}\n", "not standard padded base64"),
        (f"origin\n1\n{ROOT_B64.replace('+', '-').replace('/', '_')}\n", "not standard padded"),
        (f"origin\n1\n{ROOT_B64[:-2]}9=\n", "not canonical base64"),
        (f"origin\n1\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes, expected 32"),
        (f"origin\n1\n{base64.b64encode(ROOT + b'!').decode()}\n", "33 bytes, expected 32"),
        (f"\n1\n{ROOT_B64}\n", "origin is empty"),
        (f"origin\n1\n{ROOT_B64}", "does not end with a newline"),
        (f"origin\r\n1\n{ROOT_B64}\n", "control character U\\+000D"),
        ("origin\n1\n", "2 lines, expected origin, size and root hash"),
        (f"origin\n1\n{ROOT_B64}\n\n", "extension line is empty"),
    ],
)
def test_malformed_checkpoints_are_rejected_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        Checkpoint.parse(text)


def test_a_checkpoint_cannot_be_built_with_values_it_could_not_format() -> None:
    with pytest.raises(NoteError, match="origin 'a\\\\nb' contains a newline"):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(NoteError, match=r"outside 0\.\.2"):
        Checkpoint("origin", -1, ROOT)
    with pytest.raises(NoteError, match="16 bytes, expected 32"):
        Checkpoint("origin", 1, ROOT[:16])


# --- Properties ---------------------------------------------------------------------------

# A line: any Unicode text without surrogates, newlines or the control characters a note forbids.
LINE_CHARS = st.characters(
    exclude_categories=["Cs"], exclude_characters=[chr(c) for c in range(0x20)]
)
lines = st.text(LINE_CHARS, min_size=1, max_size=40)
checkpoints = st.builds(
    Checkpoint,
    origin=lines,
    size=st.integers(0, MAX_TREE_SIZE),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=st.lists(lines, max_size=3).map(tuple),
)


@settings(max_examples=200)
@given(checkpoints)
def test_any_checkpoint_survives_formatting_and_parsing(checkpoint: Checkpoint) -> None:
    assert Checkpoint.parse(checkpoint.to_text()) == checkpoint


@settings(max_examples=200)
@given(st.lists(st.text(LINE_CHARS, max_size=30), min_size=1, max_size=5))
def test_any_valid_text_signs_and_opens_to_itself(text_lines: list[str]) -> None:
    log = Signer.from_key_string(SKEY_1)
    text = "".join(f"{line}\n" for line in text_lines)
    assert open_note(sign_note(text, [log]), [log.verifier()]) == (text, ["PeterNeumann"])


@settings(max_examples=300)
@given(position=st.integers(0, len(NOTE_1.encode()) - 1), value=st.integers(0, 255))
def test_any_changed_byte_in_a_signed_note_gets_it_rejected(position: int, value: int) -> None:
    changed = bytearray(NOTE_1.encode())
    if changed[position] == value:
        return
    changed[position] = value
    with pytest.raises(NoteError):
        open_note(bytes(changed), [Verifier.from_key_string(VKEY_1)])


# Note-shaped noise: pieces of signature lines, blank lines and base64 in any order.
pieces = st.sampled_from(["\n", "\n\n", "\u2014 ", " ", "+", "=", "PeterNeumann", "x08go/"])
note_like = st.lists(pieces | st.text(LINE_CHARS, max_size=8), max_size=12).map("".join)


@settings(max_examples=300)
@given(st.text() | st.binary() | note_like)
def test_arbitrary_input_raises_nothing_but_note_error(data: str | bytes) -> None:
    text = data if isinstance(data, str) else data.decode("latin-1")
    verifiers = [Verifier.from_key_string(VKEY_1)]
    for attempt in (
        lambda: open_note(data, verifiers),
        lambda: open_note(NOTE_1 + text, verifiers),
        lambda: Checkpoint.parse(text),
        lambda: Verifier.from_key_string(text),
        lambda: Signer.from_key_string("PRIVATE+KEY+" + text),
    ):
        with contextlib.suppress(NoteError):
            attempt()
