"""The deployment's cryptographic profile: which algorithms hash, sign and encrypt.

- `international` (the default): SHA-256 and HMAC-SHA-256, Ed25519 (RFC 8032), AES-256-GCM.
- `national` (商用密码, for assessment under GB/T 39786-2021): SM3 (GB/T 32905-2016) and
  HMAC-SM3, SM2 signatures (GB/T 32918.2-2016) over SM3 with the signer's distinguishing
  identifier (Z_A; the default ID "1234567812345678" of GB/T 35276-2017), SM4-GCM (GB/T
  32907-2016, GCM as in RFC 8998).

SM3 and SM4 come from `cryptography` (OpenSSL's implementations). `cryptography` has no SM2, so
SM2 comes from gmssl-pyx, a binding that links GmSSL (the reference open-source implementation
of the national algorithms) statically: it is released for current Pythons, has no dependency
of its own, and verifies the GB/T 32918 examples (tests/test_crypto_profile.py).

Pure: bytes in, bytes out; keys are made and read elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import gmssl_pyx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.core.settings import CryptoProfileName

# The distinguishing identifier of an SM2 signer when none other is agreed (GB/T 35276-2017).
SM2_DEFAULT_ID = b"1234567812345678"
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16


class CryptoError(ValueError):
    """A key, signature or ciphertext is malformed, or does not verify or decrypt."""


@dataclass(frozen=True)
class HashSuite:
    """A 32-byte hash and its HMAC."""

    name: str
    digest: Callable[[bytes], bytes]
    mac: Callable[[bytes, bytes], bytes]  # (key, message)


def _sha256_hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def sm3(data: bytes) -> bytes:
    hasher = hashes.Hash(hashes.SM3())
    hasher.update(data)
    return hasher.finalize()


def _sm3_hmac(key: bytes, message: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(message)
    return mac.finalize()


SHA256 = HashSuite("SHA-256", lambda data: hashlib.sha256(data).digest(), _sha256_hmac)
SM3 = HashSuite("SM3", sm3, _sm3_hmac)


class SignatureScheme(Protocol):
    """Raw keys in and out: a private key's bytes, a public key's bytes."""

    name: str

    def generate(self) -> tuple[bytes, bytes]:
        """A new (private, public) key pair."""
        ...

    def public_key(self, private: bytes) -> bytes: ...

    def sign(self, private: bytes, message: bytes) -> bytes: ...

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool: ...


class Ed25519Scheme:
    """RFC 8032 Ed25519: 32-byte seeds and public keys, 64-byte deterministic signatures."""

    name = "Ed25519"

    def generate(self) -> tuple[bytes, bytes]:
        private = Ed25519PrivateKey.generate().private_bytes_raw()
        return private, self.public_key(private)

    def public_key(self, private: bytes) -> bytes:
        return self._private(private).public_key().public_bytes_raw()

    def sign(self, private: bytes, message: bytes) -> bytes:
        return self._private(private).sign(message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except InvalidSignature:
            return False
        except ValueError as error:
            raise CryptoError(f"not an Ed25519 public key: {error}") from None
        return True

    @staticmethod
    def _private(private: bytes) -> Ed25519PrivateKey:
        try:
            return Ed25519PrivateKey.from_private_bytes(private)
        except ValueError as error:
            raise CryptoError(f"not an Ed25519 private key: {error}") from None


class Sm2Scheme:
    """GB/T 32918.2 SM2 signatures over SM3, with the signer's distinguishing identifier in Z_A.
    Public keys are 64 bytes (x || y); a private key is kept as d || x || y (96 bytes), because
    GmSSL signs with the pair; signatures are DER (a SEQUENCE of r and s). Randomised: signing a
    message twice gives two different valid signatures."""

    name = "SM2"

    def __init__(self, signer_id: bytes = SM2_DEFAULT_ID) -> None:
        self.signer_id = signer_id

    def generate(self) -> tuple[bytes, bytes]:
        public, private = gmssl_pyx.sm2_key_generate()
        return private + public, public

    def public_key(self, private: bytes) -> bytes:
        self._check_private(private)
        return private[32:]

    def sign(self, private: bytes, message: bytes) -> bytes:
        self._check_private(private)
        try:
            signature: bytes = gmssl_pyx.sm2_sign(
                private[:32], private[32:], message, signer_id=self.signer_id
            )
        except gmssl_pyx.InvalidValueError as error:
            raise CryptoError(f"not an SM2 key pair: {error}") from None
        return signature

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        if len(public) != 64:
            raise CryptoError(f"an SM2 public key is 64 bytes (x || y), got {len(public)}")
        try:
            return bool(gmssl_pyx.sm2_verify(public, message, signature, signer_id=self.signer_id))
        except gmssl_pyx.InvalidValueError:
            return False  # a malformed signature is a signature that does not verify

    @staticmethod
    def _check_private(private: bytes) -> None:
        if len(private) != 96:
            raise CryptoError(f"an SM2 private key is kept as d || x || y (96 bytes), got {len(private)}")  # fmt: skip


@dataclass(frozen=True)
class Aead:
    """Authenticated encryption with a 12-byte nonce and a 16-byte tag appended."""

    name: str
    key_bytes: int

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
        self._check(key, nonce)
        if self.name == "AES-256-GCM":
            return AESGCM(key).encrypt(nonce, plaintext, associated)
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(associated)
        return encryptor.update(plaintext) + encryptor.finalize() + encryptor.tag

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
        self._check(key, nonce)
        if len(ciphertext) < GCM_TAG_BYTES:
            raise CryptoError(f"{self.name}: the ciphertext is shorter than its tag")
        try:
            if self.name == "AES-256-GCM":
                return AESGCM(key).decrypt(nonce, ciphertext, associated)
            body, tag = ciphertext[:-GCM_TAG_BYTES], ciphertext[-GCM_TAG_BYTES:]
            decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
            decryptor.authenticate_additional_data(associated)
            return decryptor.update(body) + decryptor.finalize()
        except InvalidTag:
            raise CryptoError(f"{self.name}: wrong key, or the data was changed") from None

    def _check(self, key: bytes, nonce: bytes) -> None:
        if len(key) != self.key_bytes:
            raise CryptoError(f"{self.name} takes a {self.key_bytes}-byte key, got {len(key)}")
        if len(nonce) != GCM_NONCE_BYTES:
            raise CryptoError(f"{self.name} takes a {GCM_NONCE_BYTES}-byte nonce, got {len(nonce)}")


AES_256_GCM = Aead("AES-256-GCM", 32)
SM4_GCM = Aead("SM4-GCM", 16)


@dataclass(frozen=True)
class CryptoProfile:
    """One deployment's algorithms, fixed when its audit log starts and recorded in it."""

    name: CryptoProfileName
    hash: HashSuite
    signature: SignatureScheme
    aead: Aead


INTERNATIONAL = CryptoProfile("international", SHA256, Ed25519Scheme(), AES_256_GCM)
NATIONAL = CryptoProfile("national", SM3, Sm2Scheme(), SM4_GCM)
PROFILES: dict[str, CryptoProfile] = {p.name: p for p in (INTERNATIONAL, NATIONAL)}


def crypto_profile(name: str) -> CryptoProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise CryptoError(f"no crypto profile {name!r} (one of {', '.join(PROFILES)})") from None
