"""The crypto profiles' algorithms against the standards' own examples (known answers), and
their behaviour on damaged input: SM3 (GB/T 32905-2016 Annex A), SM4 (GB/T 32907-2016 Annex
A; SM4-GCM as RFC 8998 Appendix A.1), SM2 signatures (GB/T 32918 / GM/T 0003.5 example on the
recommended curve), Ed25519 (RFC 8032 §7.1)."""

from __future__ import annotations

import os

import gmssl_pyx
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.core.crypto import (
    AES_256_GCM,
    INTERNATIONAL,
    NATIONAL,
    SM3,
    SM4_GCM,
    CryptoError,
    CryptoProfile,
    Sm2Scheme,
    crypto_profile,
    sm3,
)

# GB/T 32905-2016 Annex A.
SM3_EXAMPLES = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]
# GB/T 32907-2016 Annex A, example 1: one block, key = plaintext.
SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_CIPHERTEXT = bytes.fromhex("681edf34d206965e86b3e94f536e4246")
# RFC 8998 Appendix A.1 (SM4-GCM).
GCM_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
GCM_NONCE = bytes.fromhex("00001234567800000000ABCD")
GCM_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
GCM_PLAINTEXT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
GCM_SEALED = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    "83DE3541E4C2B58177E065A9BF7B62EC"  # the tag
)
# GM/T 0003.5-2012 (GB/T 32918.5) signature example on the recommended curve, ID 1234567812345678.
SM2_PUBLIC = bytes.fromhex(
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
SM2_R = bytes.fromhex("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3")
SM2_S = bytes.fromhex("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA")
SM2_MESSAGE = b"message digest"
# RFC 8032 §7.1, TEST 2.
ED25519_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
ED25519_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
ED25519_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def der_signature(r: bytes, s: bytes) -> bytes:
    def integer(value: bytes) -> bytes:
        value = value.lstrip(b"\0")
        if value[0] & 0x80:
            value = b"\0" + value
        return b"\x02" + bytes([len(value)]) + value

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


@pytest.mark.parametrize(("message", "digest"), SM3_EXAMPLES)
def test_sm3_gives_the_standards_digests(message: bytes, digest: str) -> None:
    assert sm3(message).hex() == digest
    assert SM3.digest(message).hex() == digest


def test_sm3_of_openssl_and_of_gmssl_agree_on_any_input() -> None:
    for size in (0, 1, 55, 56, 63, 64, 65, 1000):
        data = os.urandom(size)
        assert sm3(data) == gmssl_pyx.sm3_hash(data)


def test_hmac_sm3_is_rfc_2104_over_sm3() -> None:
    """HMAC built by hand from SM3 (64-byte blocks) against the library's HMAC-SM3."""
    for key in (b"k", os.urandom(64), os.urandom(100)):
        message = os.urandom(77)
        block = (sm3(key) if len(key) > 64 else key).ljust(64, b"\0")
        inner = sm3(bytes(b ^ 0x36 for b in block) + message)
        assert SM3.mac(key, message) == sm3(bytes(b ^ 0x5C for b in block) + inner)


def test_sm4_gives_the_standards_ciphertext() -> None:
    encryptor = Cipher(algorithms.SM4(SM4_KEY), modes.ECB()).encryptor()
    assert encryptor.update(SM4_KEY) + encryptor.finalize() == SM4_CIPHERTEXT


def test_sm4_gcm_gives_rfc_8998s_ciphertext_and_tag_and_opens_it() -> None:
    assert SM4_GCM.encrypt(GCM_KEY, GCM_NONCE, GCM_PLAINTEXT, GCM_AAD) == GCM_SEALED
    assert SM4_GCM.decrypt(GCM_KEY, GCM_NONCE, GCM_SEALED, GCM_AAD) == GCM_PLAINTEXT


def test_sm2_verifies_the_standards_signature_and_refuses_any_change() -> None:
    scheme = Sm2Scheme()
    signature = der_signature(SM2_R, SM2_S)
    assert scheme.verify(SM2_PUBLIC, SM2_MESSAGE, signature)
    assert not scheme.verify(SM2_PUBLIC, b"message digesT", signature)
    assert not scheme.verify(SM2_PUBLIC, SM2_MESSAGE, der_signature(SM2_R, SM2_R))
    other_id = Sm2Scheme(signer_id=b"ALICE123@YAHOO.COM")
    assert not other_id.verify(SM2_PUBLIC, SM2_MESSAGE, signature), "Z_A binds the signer's id"
    assert not scheme.verify(SM2_PUBLIC, SM2_MESSAGE, b"\x30\x02\x02\x00"), "malformed DER"


def test_ed25519_gives_rfc_8032s_signature() -> None:
    scheme = INTERNATIONAL.signature
    assert scheme.public_key(ED25519_SEED) == ED25519_PUBLIC
    assert scheme.sign(ED25519_SEED, b"\x72") == ED25519_SIGNATURE
    assert scheme.verify(ED25519_PUBLIC, b"\x72", ED25519_SIGNATURE)


@pytest.mark.parametrize("profile", [INTERNATIONAL, NATIONAL], ids=lambda p: p.name)
def test_each_profile_signs_verifies_and_seals_and_refuses_damage(profile: CryptoProfile) -> None:
    private, public = profile.signature.generate()
    assert profile.signature.public_key(private) == public
    signature = profile.signature.sign(private, b"checkpoint")
    assert profile.signature.verify(public, b"checkpoint", signature)
    assert not profile.signature.verify(public, b"checkpoinT", signature)
    _, stranger = profile.signature.generate()
    assert not profile.signature.verify(stranger, b"checkpoint", signature)
    key, nonce = os.urandom(profile.aead.key_bytes), os.urandom(12)
    sealed = profile.aead.encrypt(key, nonce, b"13800000000", b"incident.reporter.phone")
    assert b"13800000000" not in sealed
    assert profile.aead.decrypt(key, nonce, sealed, b"incident.reporter.phone") == b"13800000000"
    for key_, sealed_, associated in [
        (key, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"incident.reporter.phone"),
        (key, sealed, b"incident.reporter.name"),  # moved to another field
        (os.urandom(profile.aead.key_bytes), sealed, b"incident.reporter.phone"),
    ]:
        with pytest.raises(CryptoError, match="wrong key, or the data was changed"):
            profile.aead.decrypt(key_, nonce, sealed_, associated)
    assert len(profile.hash.digest(b"x")) == 32 and len(profile.hash.mac(b"k", b"x")) == 32


def test_keys_and_nonces_of_the_wrong_size_and_unknown_profiles_are_refused() -> None:
    with pytest.raises(CryptoError, match="AES-256-GCM takes a 32-byte key, got 16"):
        AES_256_GCM.encrypt(bytes(16), bytes(12), b"", b"")
    with pytest.raises(CryptoError, match="12-byte nonce"):
        SM4_GCM.encrypt(bytes(16), bytes(8), b"", b"")
    with pytest.raises(CryptoError, match="96 bytes"):
        NATIONAL.signature.sign(bytes(32), b"x")
    with pytest.raises(CryptoError, match="64 bytes"):
        NATIONAL.signature.verify(bytes(65), b"x", b"")
    assert crypto_profile("national") is NATIONAL
    with pytest.raises(CryptoError, match="no crypto profile 'gm'"):
        crypto_profile("gm")
