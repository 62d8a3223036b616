"""SM2 certificates for tests (GB/T 20518: X.509 with SM2 keys, signed SM2-with-SM3), written
out in DER by hand: `cryptography` reads such certificates but cannot make them (it has no SM2).
A TLCP front's agencies hold certificates like these."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.core.crypto import Sm2Scheme

SM2 = Sm2Scheme()
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
SM2_CURVE = "1.2.156.10197.1.301"
SM2_WITH_SM3 = "1.2.156.10197.1.501"


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _sequence(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for number in rest:
        chunk = [number & 0x7F]
        while number := number >> 7:
            chunk.append(0x80 | (number & 0x7F))
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _time(moment: dt.datetime) -> bytes:
    return _tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())


def _extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    flag = _tlv(0x01, b"\xff") if critical else b""
    return _sequence(_oid(oid), flag, _tlv(0x04, value))


@dataclass(frozen=True)
class Sm2Party:
    """A name and its SM2 key pair (private d || x || y, public x || y)."""

    name: x509.Name
    private: bytes
    public: bytes


def party(common_name: str) -> Sm2Party:
    private, public = SM2.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return Sm2Party(name, private, public)


def certificate(
    subject: Sm2Party,
    issuer: Sm2Party,
    *,
    serial: int,
    ca: bool = False,
    uri: str = "",
    not_before: dt.datetime | None = None,
    days: int = 365,
) -> bytes:
    """A DER certificate of `subject`'s key, signed by `issuer` with SM2-with-SM3."""
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    algorithm = _sequence(_oid(SM2_WITH_SM3))
    key_info = _sequence(
        _sequence(_oid(EC_PUBLIC_KEY), _oid(SM2_CURVE)),
        _tlv(0x03, b"\x00\x04" + subject.public),
    )
    extensions = [
        _extension("2.5.29.19", x509.BasicConstraints(ca, None).public_bytes(), critical=True)
    ]
    if uri:
        names = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        extensions += [
            _extension("2.5.29.17", names.public_bytes()),
            _extension("2.5.29.37", usage.public_bytes()),
        ]
    tbs = _sequence(
        _tlv(0xA0, _integer(2)),  # v3
        _integer(serial),
        algorithm,
        issuer.name.public_bytes(),
        _sequence(_time(start), _time(start + dt.timedelta(days=days))),
        subject.name.public_bytes(),
        key_info,
        _tlv(0xA3, _sequence(*extensions)),
    )
    signature = SM2.sign(issuer.private, tbs)
    return _sequence(tbs, algorithm, _tlv(0x03, b"\x00" + signature))
