"""Where the 64 report-data bytes sit in the evidence a TEE returns, to check it bound ours.

A collector checks the evidence it got carries the report data it asked for before handing it on:
a concurrent writer to the same interface (another thread, another process in the same VM) would
otherwise make the engine send evidence for someone else's request. This is a self-check of the
collection, not verification (the CAS verifies). Layouts (docs/evidence-intel.md, evidence-amd-tpm.md):

  SGX quote v3/v4   header 48 bytes, SGX report body 384 bytes: REPORTDATA at body + 320
  TDX quote v4      header 48 bytes, TD report body: REPORTDATA at body + 520
  quote v5          header 48, body descriptor (type UINT16, size UINT32), body at 54
  SNP report        REPORT_DATA at 0x50 of the 0x4A0-byte attestation report

Quote integers are little-endian. Engine-safe: standard library only, Python 3.9.
"""

from __future__ import annotations

import struct

from citadel.attest.collect.errors import CollectionError
from citadel.crypto import digests_equal

REPORT_DATA_SIZE = 64
QUOTE_HEADER = struct.Struct("<HHI")  # version, attestation key type, TEE type (first 8 of 48 bytes)
QUOTE_HEADER_SIZE = 48
BODY_DESCRIPTOR = struct.Struct("<HI")  # v5: body type, body size
TEE_SGX, TEE_TDX = 0x00000000, 0x00000081
SGX_REPORT_DATA_OFFSET = 320  # in the SGX report body
TD_REPORT_DATA_OFFSET = 520  # in the TD report body (1.0 and 1.5)
V5_BODY_TYPES = {1: TEE_SGX, 2: TEE_TDX, 3: TEE_TDX}
SNP_REPORT_SIZE = 0x4A0
SNP_REPORT_DATA_OFFSET = 0x50


def _fail(kind: str, detail: str) -> CollectionError:
    return CollectionError(f"the {kind} evidence returned by the TEE is malformed: {detail}",
                           "check the TEE's driver and quoting service (docs/evidence-collection.md)")


def quote_report_data(quote: bytes, kind: str) -> bytes:
    """REPORTDATA of an SGX (`kind`="sgx") or TDX ("tdx") DCAP quote of version 3, 4 or 5."""
    if len(quote) < QUOTE_HEADER_SIZE + BODY_DESCRIPTOR.size:
        raise _fail(kind, f"a quote of {len(quote)} bytes is shorter than its header")
    version, _key_type, tee = QUOTE_HEADER.unpack_from(quote)
    body = QUOTE_HEADER_SIZE
    if version == 3:
        tee = TEE_SGX  # v3 has no TEE type (the field is reserved)
    elif version == 5:
        body_type = BODY_DESCRIPTOR.unpack_from(quote, QUOTE_HEADER_SIZE)[0]
        if V5_BODY_TYPES.get(body_type) != tee:
            raise _fail(kind, f"body type {body_type} does not match TEE type {tee:#x}")
        body += BODY_DESCRIPTOR.size
    elif version != 4:
        raise _fail(kind, f"quote version {version} is not 3, 4 or 5")
    wanted = TEE_SGX if kind == "sgx" else TEE_TDX
    if tee != wanted:
        raise _fail(kind, f"the quote's TEE type is {tee:#x}, not {wanted:#x}")
    offset = body + (SGX_REPORT_DATA_OFFSET if tee == TEE_SGX else TD_REPORT_DATA_OFFSET)
    if len(quote) < offset + REPORT_DATA_SIZE:
        raise _fail(kind, "the quote ends inside its report body")
    return quote[offset : offset + REPORT_DATA_SIZE]


def snp_report_data(report: bytes) -> bytes:
    """REPORT_DATA of an SEV-SNP attestation report."""
    if len(report) != SNP_REPORT_SIZE:
        raise _fail("snp", f"an attestation report of {len(report)} bytes, not {SNP_REPORT_SIZE}")
    return report[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + REPORT_DATA_SIZE]


def evidence_report_data(kind: str, evidence: bytes) -> bytes:
    return snp_report_data(evidence) if kind == "snp" else quote_report_data(evidence, kind)


def check_binds(kind: str, evidence: bytes, report_data: bytes) -> None:
    """Raise unless `evidence` carries `report_data` (zero-padded to 64 bytes)."""
    padded = report_data + bytes(REPORT_DATA_SIZE - len(report_data))
    if not digests_equal(evidence_report_data(kind, evidence), padded):
        raise CollectionError(
            f"the {kind} evidence carries other report data than Citadel wrote (a concurrent writer?)",
            "make sure no other process in this TEE requests evidence at the same time, and retry",
        )
