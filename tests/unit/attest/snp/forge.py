"""A throw-away AMD-shaped PKI and report signer, for evidence no real chip produced.

Certificates copy AMD's names, extensions and RSA-PSS parameters, so the only thing that differs
from a genuine chain is the keys; tests use that to show a forgery fails for the right reason.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Dict, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from citadel.attest.snp.certs import KDS_OID
from citadel.attest.snp.layouts import REPORT_FIELDS, SIGNED_SIZE, field_offsets

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
NOT_AFTER = dt.datetime(2045, 1, 1, tzinfo=dt.timezone.utc)
OFFSETS = field_offsets()
FORMATS = {name: fmt for name, fmt in REPORT_FIELDS if name}


def amd_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca(subject: str, issuer: str, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(amd_name(subject))
        .issuer_name(amd_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signer, hashes.SHA384(), rsa_padding=PSS)
    )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class FakeAmd:
    """ARK -> ASK (or ASVK) for one product, with keys we hold."""

    product: str
    vlek: bool = False

    def __post_init__(self) -> None:
        self.ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ask_cn = f"SEV-VLEK-{self.product}" if self.vlek else f"SEV-{self.product}"
        self.ark = _ca(f"ARK-{self.product}", f"ARK-{self.product}", self.ark_key, self.ark_key)
        self.ask = _ca(ask_cn, f"ARK-{self.product}", self.ask_key, self.ark_key)

    @property
    def bundle(self) -> bytes:
        return pem(self.ask, self.ark)

    @property
    def bundle_key(self) -> str:
        return self.product.lower() + ("_vlek" if self.vlek else "")

    def leaf(
        self,
        key: ec.EllipticCurvePrivateKey,
        spl: Dict[str, int],
        *,
        hwid: Optional[bytes] = None,
        csp_id: Optional[str] = None,
        product_name: Optional[str] = None,
        not_before: dt.datetime = NOT_BEFORE,
        not_after: dt.datetime = NOT_AFTER,
    ) -> x509.Certificate:
        """A VCEK (hwid) or VLEK (csp_id) with KDS extensions, signed by this ASK."""
        ext = {"bl": 1, "tee": 2, "spl4": 4, "spl5": 5, "spl6": 6, "spl7": 7, "snp": 3, "ucode": 8, "fmc": 9}
        builder = (
            x509.CertificateBuilder()
            .subject_name(amd_name("SEV-VLEK" if csp_id else "SEV-VCEK"))
            .issuer_name(self.ask.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        name = (product_name or f"{self.product}-B0").encode()
        items = [(".1", b"\x02\x01\x00"), (".2", b"\x16" + bytes([len(name)]) + name)]
        for short, level in spl.items():
            encoded = b"\x02\x01" + bytes([level]) if level < 128 else b"\x02\x02\x00" + bytes([level])
            items.append((f".3.{ext[short]}", encoded))
        if hwid is not None:
            items.append((".4", hwid))
        if csp_id is not None:
            items.append((".5", b"\x16" + bytes([len(csp_id)]) + csp_id.encode()))
        for suffix, value in items:
            oid = x509.ObjectIdentifier(KDS_OID + suffix)
            builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
        return builder.sign(self.ask_key, hashes.SHA384(), rsa_padding=PSS)


def set_field(report: bytes, name: str, value: object) -> bytes:
    """Overwrite one named field of a report (no re-signing)."""
    fmt = "<" + FORMATS[name]
    packed = struct.pack(fmt, value)
    start = OFFSETS[name]
    return report[:start] + packed + report[start + len(packed) :]


def sign_report(report: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign bytes 0..0x29F with ECDSA P-384 SHA-384; r and s as 72-byte little-endian integers."""
    r, s = decode_dss_signature(key.sign(report[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384())))
    signed = set_field(report, "signature_r", r.to_bytes(72, "little"))
    return set_field(signed, "signature_s", s.to_bytes(72, "little"))


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]
