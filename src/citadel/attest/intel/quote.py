"""Parse an Intel DCAP quote (SGX v3/v4/v5, TDX v4/v5) into named parts, checking only its structure.

Parsing never verifies a signature; `citadel.attest.intel.verify` does that. Any malformed input,
including random or truncated bytes, raises `VerificationError` with a `quote.*` check name.
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Tuple, Union

from citadel.attest.intel import layouts as L
from citadel.errors import VerificationError

ReportBody = Union[L.SgxReportBody, L.TdReportBody]


@dataclass(frozen=True)
class Quote:
    """A structurally valid quote, its parts named as in Intel's specifications."""

    header: L.QuoteHeader
    body_type: int  # layouts.BODY_TYPE_* (derived from the header for v3/v4)
    body: ReportBody
    signed_data: bytes  # what the attestation key signed: header (+ v5 body descriptor) + body
    signature: bytes  # 64 bytes, r||s big-endian
    attestation_key: bytes  # 64 bytes, P-256 x||y
    qe_report_raw: bytes  # 384 bytes, signed by the PCK key
    qe_report: L.SgxReportBody
    qe_report_signature: bytes  # 64 bytes, r||s
    qe_auth_data: bytes
    outer_cert_type: int  # 5 (v3) or 6 (v4/v5)
    pck_chain_pem: bytes  # the type-5 certification data: PEM certificates, leaf first
    padding: int  # zero bytes tolerated after the signature data

    @property
    def is_tdx(self) -> bool:
        return isinstance(self.body, L.TdReportBody)


class _Reader:
    """A cursor over untrusted bytes that raises `quote.truncated` instead of reading past the end."""

    def __init__(self, data: bytes, start: int = 0, end: int = -1) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end < 0 else end

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > self.end:
            raise VerificationError("quote.truncated", f"the quote ends inside its {what}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, layout: struct.Struct, what: str) -> Tuple[Any, ...]:
        return layout.unpack(self.take(layout.size, what))

    def remaining(self) -> int:
        return self.end - self.pos


def _check_header(header: L.QuoteHeader) -> None:
    if header.version not in (3, 4, 5):
        raise VerificationError("quote.header", f"unsupported quote version {header.version}")
    if header.att_key_type != L.ATT_KEY_TYPE_ECDSA_P256:
        raise VerificationError(
            "quote.header", f"attestation key type {header.att_key_type} is not ECDSA P-256 (2)"
        )
    allowed = (L.TEE_TYPE_SGX,) if header.version == 3 else (L.TEE_TYPE_SGX, L.TEE_TYPE_TDX)
    if header.tee_type not in allowed:
        raise VerificationError(
            "quote.header", f"TEE type {header.tee_type:#x} is not valid in a v{header.version} quote"
        )
    if header.qe_vendor_id != L.INTEL_QE_VENDOR_ID:
        raise VerificationError(
            "quote.header", f"QE vendor id {header.qe_vendor_id.hex()} is not Intel's quoting enclave"
        )


_BODY_SIZES = {
    L.BODY_TYPE_SGX: L.SGX_REPORT_BODY.size,
    L.BODY_TYPE_TD10: L.TD10_REPORT_BODY.size,
    L.BODY_TYPE_TD15: L.TD15_REPORT_BODY_SIZE,
}


def _body_type(header: L.QuoteHeader, reader: _Reader) -> int:
    """The body type: from the v5 body descriptor, or implied by the TEE type in v3/v4."""
    implied = L.BODY_TYPE_TD10 if header.tee_type == L.TEE_TYPE_TDX else L.BODY_TYPE_SGX
    if header.version < 5:
        return implied
    body_type, body_size = reader.unpack(L.BODY_DESCRIPTOR, "body descriptor")
    if body_type not in _BODY_SIZES:
        raise VerificationError("quote.body", f"unknown v5 body type {body_type}")
    if (body_type == L.BODY_TYPE_SGX) != (header.tee_type == L.TEE_TYPE_SGX):
        raise VerificationError(
            "quote.body", f"body type {body_type} does not match TEE type {header.tee_type:#x}"
        )
    if body_size != _BODY_SIZES[body_type]:
        raise VerificationError(
            "quote.body", f"body type {body_type} must be {_BODY_SIZES[body_type]} bytes, not {body_size}"
        )
    return int(body_type)


def _cert_data(reader: _Reader, what: str) -> Tuple[int, _Reader]:
    """A certification data entry (type, size, data) that must fill the rest of `reader` exactly."""
    cert_type, size = reader.unpack(L.CERT_DATA_HEADER, f"{what} header")
    if size != reader.remaining():
        raise VerificationError(
            "quote.signature_data",
            f"{what} declares {size} bytes but {reader.remaining()} bytes follow it",
        )
    inner = _Reader(reader.data, reader.pos, reader.pos + size)
    reader.pos += size
    return int(cert_type), inner


def _pck_chain(cert_type: int, reader: _Reader, what: str) -> bytes:
    if cert_type != L.CERT_TYPE_PCK_CHAIN:
        raise VerificationError(
            "quote.certification_data",
            f"{what} has type {cert_type}; only a PCK certificate chain (type 5) can be verified offline",
        )
    pem = reader.take(reader.remaining(), what)
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise VerificationError("quote.certification_data", f"{what} holds no PEM certificate")
    return pem


def parse_quote(data: bytes) -> Quote:
    """Split `data` into a `Quote`, or raise `VerificationError` naming the structural defect."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise VerificationError("quote.truncated", "the evidence is not bytes")
    data = bytes(data)
    reader = _Reader(data)
    header = L.QuoteHeader.unpack(reader.take(L.HEADER.size, "header"))
    _check_header(header)
    body_type = _body_type(header, reader)
    body_raw = reader.take(_BODY_SIZES[body_type], "report body")
    body: ReportBody = (
        L.SgxReportBody.unpack(body_raw) if body_type == L.BODY_TYPE_SGX else L.TdReportBody.unpack(body_raw)
    )
    signed_data = data[: reader.pos]
    (sig_len,) = reader.unpack(L.U32, "signature data length")
    sig_start = reader.pos
    reader.take(sig_len, "signature data")
    padding = data[reader.pos :]
    if padding.strip(b"\x00"):
        raise VerificationError(
            "quote.trailing_data", f"{len(padding)} bytes after the signature data are not zero padding"
        )
    sig = _Reader(data, sig_start, sig_start + sig_len)
    signature, attestation_key = sig.unpack(L.ECDSA_SIG_AND_KEY, "quote signature")
    if header.version == 3:
        qe = sig
        outer_type = L.CERT_TYPE_PCK_CHAIN
    else:
        outer_type, qe = _cert_data(sig, "certification data")
        if outer_type != L.CERT_TYPE_QE_REPORT:
            raise VerificationError(
                "quote.certification_data",
                f"v{header.version} certification data has type {outer_type}, expected 6 (QE report)",
            )
    qe_report_raw = qe.take(L.SGX_REPORT_BODY.size, "QE report")
    (qe_report_signature,) = qe.unpack(L.ECDSA_SIG, "QE report signature")
    (auth_len,) = qe.unpack(L.U16, "QE authentication data length")
    qe_auth_data = qe.take(auth_len, "QE authentication data")
    inner_type, chain = _cert_data(qe, "PCK certification data")
    pck_chain_pem = _pck_chain(inner_type, chain, "PCK certification data")
    return Quote(
        header=header,
        body_type=body_type,
        body=body,
        signed_data=signed_data,
        signature=signature,
        attestation_key=attestation_key,
        qe_report_raw=qe_report_raw,
        qe_report=L.SgxReportBody.unpack(qe_report_raw),
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        outer_cert_type=outer_type,
        pck_chain_pem=pck_chain_pem,
        padding=len(padding),
    )
