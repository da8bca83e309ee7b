"""Synthetic Intel quotes and collateral, signed by a throw-away PKI made in the test.

Real vectors (../shared/vectors) prove the verifier against Intel's hardware; these prove the paths
no vector reaches: quote v5 and SGX v4, every TCB status, revocation, expired TCB info, TDX module
identities. The byte layouts are written out here field by field, independently of
citadel.attest.intel.layouts, so a layout mistake there cannot hide behind the same mistake here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SGX_OID = "1.2.840.113741.1.13.1"
INTEL_VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
NOT_AFTER = dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc)
AT = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)  # inside every synthetic validity window
QE_MRSIGNER = bytes(range(32))
FMSPC = bytes.fromhex("00906ed50000")


# --- DER ---------------------------------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(value)) + value


def der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = b""
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.insert(0, 0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(chunk)
    return tlv(0x06, body)


def der_int(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def sgx_extension(components: Sequence[int], pcesvn: int, fmspc: bytes, pceid: bytes = b"\0\0") -> bytes:
    tcb = [seq(der_oid(f"{SGX_OID}.2.{i + 1}"), der_int(svn)) for i, svn in enumerate(components)]
    tcb.append(seq(der_oid(f"{SGX_OID}.2.17"), der_int(pcesvn)))
    tcb.append(seq(der_oid(f"{SGX_OID}.2.18"), tlv(0x04, bytes(components))))
    return seq(
        seq(der_oid(f"{SGX_OID}.1"), tlv(0x04, b"\x11" * 16)),
        seq(der_oid(f"{SGX_OID}.2"), seq(*tcb)),
        seq(der_oid(f"{SGX_OID}.3"), tlv(0x04, pceid)),
        seq(der_oid(f"{SGX_OID}.4"), tlv(0x04, fmspc)),
        seq(der_oid(f"{SGX_OID}.5"), tlv(0x0A, b"\x00")),
    )


# --- PKI ---------------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
        ]
    )


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Optional[x509.Certificate],
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    extension: Optional[bytes] = None,
    not_after: dt.datetime = NOT_AFTER,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_OID), extension), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Pki:
    """Root -> PCK Platform CA -> PCK leaf, and root -> TCB signing."""

    components: Sequence[int] = (5, 5, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
    pcesvn: int = 11
    fmspc: bytes = FMSPC
    root_name: str = "Test SGX Root CA"
    extension: Optional[bytes] = None  # override the leaf's SGX extension (malformed-extension tests)
    root_key: ec.EllipticCurvePrivateKey = field(default_factory=_key)
    ca_key: ec.EllipticCurvePrivateKey = field(default_factory=_key)
    leaf_key: ec.EllipticCurvePrivateKey = field(default_factory=_key)
    tcb_key: ec.EllipticCurvePrivateKey = field(default_factory=_key)

    def __post_init__(self) -> None:
        self.root = make_cert(self.root_name, self.root_key, None, self.root_key, ca=True)
        self.ca = make_cert("Test SGX PCK Platform CA", self.ca_key, self.root, self.root_key, ca=True)
        ext = self.extension or sgx_extension(self.components, self.pcesvn, self.fmspc)
        self.leaf = make_cert(
            "Test SGX PCK Certificate", self.leaf_key, self.ca, self.ca_key, ca=False, extension=ext
        )
        self.tcb = make_cert("Test SGX TCB Signing", self.tcb_key, self.root, self.root_key, ca=False)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self, *certs: x509.Certificate) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def raw_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --- quote -------------------------------------------------------------------------------------------


def sgx_report(
    *,
    report_data: bytes = b"",
    attributes: bytes = b"\x05" + bytes(7) + b"\xe7" + bytes(7),
    mrenclave: bytes = b"\xaa" * 32,
    mrsigner: bytes = b"\xbb" * 32,
    isvprodid: int = 7,
    isvsvn: int = 3,
) -> bytes:
    """An SGX REPORTBODY, field by field (384 bytes)."""
    out = (
        b"\x01" * 16  # cpusvn
        + struct.pack("<I", 0)  # miscselect
        + bytes(12)
        + bytes(16)  # isvextprodid
        + attributes
        + mrenclave
        + bytes(32)
        + mrsigner
        + bytes(32)
        + bytes(64)  # configid
        + struct.pack("<HHH", isvprodid, isvsvn, 0)
        + bytes(42)
        + bytes(16)  # isvfamilyid
        + report_data.ljust(64, b"\0")
    )
    assert len(out) == 384
    return out


def td_report(
    *,
    report_data: bytes = b"",
    tee_tcb_svn: bytes = bytes([3, 0, 2]) + bytes(13),
    mrsignerseam: bytes = bytes(48),
    td_attributes: bytes = bytes(8),
    td15: bool = False,
) -> bytes:
    """A TD report body, field by field (584 bytes; 648 with the TD 1.5 fields)."""
    out = (
        tee_tcb_svn
        + b"\x5e" * 48  # mrseam
        + mrsignerseam
        + bytes(8)  # seam attributes
        + td_attributes
        + b"\xe7\x02\x06"
        + bytes(5)  # xfam
        + b"\x01" * 48  # mrtd
        + b"\x02" * 48  # mrconfigid
        + b"\x03" * 48  # mrowner
        + b"\x04" * 48  # mrownerconfig
        + b"\x10" * 48
        + b"\x11" * 48
        + b"\x12" * 48
        + b"\x13" * 48  # rtmr0..3
        + report_data.ljust(64, b"\0")
    )
    if td15:
        out += b"\x07" * 16 + b"\x08" * 48  # tee_tcb_svn2, mrservicetd
    assert len(out) == (648 if td15 else 584)
    return out


def make_quote(
    pki: Pki,
    *,
    version: int = 3,
    tdx: bool = False,
    body: Optional[bytes] = None,
    body_type: Optional[int] = None,
    qe_isvsvn: int = 8,
    qe_mrsigner: bytes = QE_MRSIGNER,
    qe_attributes: bytes = b"\x15" + bytes(7) + b"\xe7" + bytes(7),
    chain: Optional[bytes] = None,
    padding: bytes = b"",
) -> bytes:
    """A complete, correctly signed quote of the given version and TEE."""
    if body is None:
        body = td_report(report_data=b"td") if tdx else sgx_report(report_data=b"enclave")
    att_key = _key()
    nums = att_key.public_key().public_numbers()
    att_raw = nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
    auth = bytes(range(32))
    qe_report = sgx_report(
        report_data=hashlib.sha256(att_raw + auth).digest(),
        attributes=qe_attributes,
        mrsigner=qe_mrsigner,
        isvprodid=2 if tdx else 1,
        isvsvn=qe_isvsvn,
    )
    header = struct.pack(
        "<HHIHH", version, 2, 0x81 if tdx else 0, 10 if version == 3 else 0, 11 if version == 3 else 0
    )
    header += INTEL_VENDOR + bytes(20)
    if version == 5:
        if body_type is None:
            body_type = (3 if len(body) == 648 else 2) if tdx else 1
        header += struct.pack("<HI", body_type, len(body))
    signed = header + body
    pem = chain if chain is not None else pki.chain_pem(pki.leaf, pki.ca, pki.root)
    qe_part = qe_report + raw_sign(pki.leaf_key, qe_report) + struct.pack("<H", len(auth)) + auth
    qe_part += struct.pack("<HI", 5, len(pem)) + pem
    cert_part = qe_part if version == 3 else struct.pack("<HI", 6, len(qe_part)) + qe_part
    sig_data = raw_sign(att_key, signed) + att_raw + cert_part
    return signed + struct.pack("<I", len(sig_data)) + sig_data + padding


# --- collateral --------------------------------------------------------------------------------------


def _svns(values: Sequence[int]) -> List[Dict[str, int]]:
    return [{"svn": v} for v in values]


def tcb_level(
    components: Sequence[int],
    pcesvn: int,
    status: str,
    advisories: Sequence[str] = (),
    tdx: Sequence[int] = (),
) -> Dict[str, Any]:
    level: Dict[str, Any] = {"tcb": {"sgxtcbcomponents": _svns(components), "pcesvn": pcesvn}}
    if tdx:
        level["tcb"]["tdxtcbcomponents"] = _svns(tdx)
    level.update(tcbDate="2024-03-13T00:00:00Z", tcbStatus=status)
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def _time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_collateral(
    pki: Pki,
    *,
    tdx: bool = False,
    levels: Optional[List[Dict[str, Any]]] = None,
    qe_levels: Optional[List[Dict[str, Any]]] = None,
    module_identities: Optional[List[Dict[str, Any]]] = None,
    fmspc: Optional[bytes] = None,
    issue: dt.datetime = dt.datetime(2030, 5, 20, tzinfo=dt.timezone.utc),
    next_update: dt.datetime = dt.datetime(2030, 6, 20, tzinfo=dt.timezone.utc),
    revoked: Sequence[x509.Certificate] = (),
    tcb_info_overrides: Optional[Dict[str, Any]] = None,
    qe_identity_overrides: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Canonical collateral for `pki`, signed by its TCB signing key and CAs."""
    if levels is None:
        tdx_svns = (0, 0, 2) + (0,) * 13 if tdx else ()
        levels = [tcb_level(pki.components, pki.pcesvn, "UpToDate", tdx=tdx_svns)]
    tcb_info: Dict[str, Any] = {
        "id": "TDX" if tdx else "SGX",
        "version": 3,
        "issueDate": _time(issue),
        "nextUpdate": _time(next_update),
        "fmspc": (fmspc or pki.fmspc).hex().upper(),
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
    }
    if tdx:
        tcb_info["tdxModule"] = {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8}
        tcb_info["tdxModuleIdentities"] = module_identities or []
    tcb_info["tcbLevels"] = levels
    tcb_info.update(tcb_info_overrides or {})
    qe_identity = {
        "id": "TD_QE" if tdx else "QE",
        "version": 2,
        "issueDate": _time(issue),
        "nextUpdate": _time(next_update),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": QE_MRSIGNER.hex().upper(),
        "isvprodid": 2 if tdx else 1,
        "tcbLevels": qe_levels
        or [
            {"tcb": {"isvsvn": 8}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
            {
                "tcb": {"isvsvn": 6},
                "tcbDate": "2021-11-10T00:00:00Z",
                "tcbStatus": "OutOfDate",
                "advisoryIDs": ["INTEL-SA-00615"],
            },
        ],
    }
    qe_identity.update(qe_identity_overrides or {})
    tcb_text = json.dumps(tcb_info, separators=(",", ":"))
    qe_text = json.dumps(qe_identity, separators=(",", ":"))
    chain = pki.chain_pem(pki.tcb, pki.root).decode()
    return {
        "tcb_info": tcb_text,
        "tcb_info_signature": raw_sign(pki.tcb_key, tcb_text.encode()).hex(),
        "tcb_info_issuer_chain": chain,
        "qe_identity": qe_text,
        "qe_identity_signature": raw_sign(pki.tcb_key, qe_text.encode()).hex(),
        "qe_identity_issuer_chain": chain,
        "pck_crl": make_crl(pki.ca, pki.ca_key, revoked, issue, next_update).hex(),
        "root_ca_crl": make_crl(pki.root, pki.root_key, revoked, issue, next_update).hex(),
    }


def make_crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[x509.Certificate],
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    for cert in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(this_update)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
