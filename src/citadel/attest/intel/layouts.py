"""Byte layouts of Intel DCAP quotes (SGX v3/v4/v5, TDX v4/v5), declared once as named structures.

Sources: Intel SGX ECDSA Quote Library API (appendix "Quote Format", v3), Intel TDX DCAP Quoting
Library API (appendix "Quote Format", v4 and v5). All integers are little-endian. docs/evidence-intel.md
lists every field with its offset. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Tuple

# --- constants -------------------------------------------------------------------------------------

ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
#: QE vendor id of Intel's quoting enclaves (939A7233-F79C-4CA9-940A-0DB3957F0607)
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# v5 body descriptor types
BODY_TYPE_SGX = 1
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3

# certification data types
CERT_TYPE_PCK_CHAIN = 5  # PEM: PCK leaf, PCK platform/processor CA, root
CERT_TYPE_QE_REPORT = 6  # QE report certification data (TDX and v4+ SGX), wraps a type-5 entry

SGX_FLAG_DEBUG = 0x2  # bit 1 of ATTRIBUTES.FLAGS
TD_ATTR_DEBUG = 0x1  # bit 0 of TDATTRIBUTES

# --- structures ------------------------------------------------------------------------------------

HEADER = struct.Struct("<HHIHH16s20s")  # 48 bytes
SGX_REPORT_BODY = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")  # 384 bytes
TD10_REPORT_BODY = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")  # 584 bytes
TD15_EXTRA = struct.Struct("<16s48s")  # appended to a TD 1.0 body in a TD 1.5 body: 64 bytes
BODY_DESCRIPTOR = struct.Struct("<HI")  # v5: body type, body size
U32 = struct.Struct("<I")
U16 = struct.Struct("<H")
CERT_DATA_HEADER = struct.Struct("<HI")  # certification data type, size
ECDSA_SIG_AND_KEY = struct.Struct("<64s64s")  # r||s over the quote, attestation key x||y
ECDSA_SIG = struct.Struct("<64s")

TD15_REPORT_BODY_SIZE = TD10_REPORT_BODY.size + TD15_EXTRA.size  # 648

assert HEADER.size == 48
assert SGX_REPORT_BODY.size == 384
assert TD10_REPORT_BODY.size == 584
assert TD15_REPORT_BODY_SIZE == 648


@dataclass(frozen=True)
class QuoteHeader:
    """The first 48 bytes of every quote."""

    version: int
    att_key_type: int
    tee_type: int  # reserved (0) in v3, where the quote is always SGX
    qe_svn: int  # reserved in v4/v5
    pce_svn: int  # reserved in v4/v5
    qe_vendor_id: bytes
    user_data: bytes  # first 16 bytes: QE identifier

    @classmethod
    def unpack(cls, data: bytes) -> QuoteHeader:
        return cls(*HEADER.unpack(data))


@dataclass(frozen=True)
class SgxReportBody:
    """An SGX REPORTBODY (enclave report): the quote body of SGX quotes and the QE report."""

    cpusvn: bytes
    miscselect: int
    reserved1: bytes
    isv_ext_prod_id: bytes
    attributes: bytes  # FLAGS (u64) then XFRM (u64)
    mrenclave: bytes
    reserved2: bytes
    mrsigner: bytes
    reserved3: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    reserved4: bytes
    isv_family_id: bytes
    report_data: bytes

    @classmethod
    def unpack(cls, data: bytes) -> SgxReportBody:
        return cls(*SGX_REPORT_BODY.unpack(data))

    @property
    def flags(self) -> int:
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def debug(self) -> bool:
        return bool(self.flags & SGX_FLAG_DEBUG)

    @property
    def miscselect_bytes(self) -> bytes:
        return U32.pack(self.miscselect)


@dataclass(frozen=True)
class TdReportBody:
    """A TD report body: TD 1.0 (584 bytes, quote v4 and v5 type 2) or TD 1.5 (648 bytes, v5 type 3)."""

    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes = b""  # TD 1.5 only
    mrservicetd: bytes = b""  # TD 1.5 only

    @classmethod
    def unpack(cls, data: bytes) -> TdReportBody:
        fields: Tuple[bytes, ...] = TD10_REPORT_BODY.unpack_from(data, 0)
        if len(data) == TD15_REPORT_BODY_SIZE:
            fields = fields + TD15_EXTRA.unpack_from(data, TD10_REPORT_BODY.size)
        return cls(*fields)

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTR_DEBUG)
