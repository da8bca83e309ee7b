"""TPM 2.0 structures of a quote (TCG TPM 2.0 Library, Part 2), parsed from untrusted bytes.

All integers are big-endian. A TPM2B is a UINT16 size followed by that many bytes. Every parser
reads its whole input and refuses trailing bytes; every failure is VerificationError('tpm.parse').

TPMS_ATTEST        magic UINT32 (0xFF544347), type UINT16 (0x8018 = quote), qualifiedSigner TPM2B_NAME,
                   extraData TPM2B_DATA, clockInfo TPMS_CLOCK_INFO, firmwareVersion UINT64,
                   attested TPMS_QUOTE_INFO
TPMS_CLOCK_INFO    clock UINT64, resetCount UINT32, restartCount UINT32, safe BYTE
TPMS_QUOTE_INFO    pcrSelect TPML_PCR_SELECTION, pcrDigest TPM2B_DIGEST
TPML_PCR_SELECTION count UINT32, then count x TPMS_PCR_SELECTION
TPMS_PCR_SELECTION hash UINT16 (TPM_ALG_ID), sizeofSelect BYTE, pcrSelect[sizeofSelect] (bit i%8 of byte
                   i//8 selects PCR i)
TPMT_SIGNATURE     sigAlg UINT16, then for RSASSA/RSAPSS: hash UINT16, sig TPM2B; for ECDSA: hash UINT16,
                   signatureR TPM2B, signatureS TPM2B
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Tuple

from citadel.errors import VerificationError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_RSASSA = 0x0014
ALG_RSAPSS = 0x0016
ALG_ECDSA = 0x0018

HASH_NAMES: Dict[int, str] = {
    ALG_SHA1: "sha1",
    ALG_SHA256: "sha256",
    ALG_SHA384: "sha384",
    ALG_SHA512: "sha512",
}
HASH_SIZES: Dict[int, int] = {ALG_SHA1: 20, ALG_SHA256: 32, ALG_SHA384: 48, ALG_SHA512: 64}
SIG_NAMES: Dict[int, str] = {ALG_RSASSA: "rsassa", ALG_RSAPSS: "rsapss", ALG_ECDSA: "ecdsa"}
MAX_PCR_BANKS = 16
MAX_SIZEOF_SELECT = 8

_U8, _U16, _U32, _U64 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


class Reader:
    """A cursor over untrusted bytes; every short read is a VerificationError('tpm.parse')."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, count: int, field: str) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise VerificationError("tpm.parse", f"the {self.what} ends inside {field}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _int(self, layout: struct.Struct, field: str) -> int:
        return int(layout.unpack(self.take(layout.size, field))[0])

    def u8(self, field: str) -> int:
        return self._int(_U8, field)

    def u16(self, field: str) -> int:
        return self._int(_U16, field)

    def u32(self, field: str) -> int:
        return self._int(_U32, field)

    def u64(self, field: str) -> int:
        return self._int(_U64, field)

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.u16(field + ".size"), field)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise VerificationError("tpm.parse", f"the {self.what} has {len(self.data) - self.pos} trailing bytes")


@dataclass(frozen=True)
class PcrSelection:
    """One bank of a TPML_PCR_SELECTION: its hash algorithm and the PCR indices selected."""

    hash_alg: int
    pcrs: Tuple[int, ...]

    @property
    def bank(self) -> str:
        return HASH_NAMES.get(self.hash_alg, f"alg{self.hash_alg:#06x}")


@dataclass(frozen=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class Attest:
    """A TPMS_ATTEST whose attested member is a TPMS_QUOTE_INFO."""

    raw: bytes
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: Tuple[PcrSelection, ...]
    pcr_digest: bytes


@dataclass(frozen=True)
class Signature:
    """A TPMT_SIGNATURE: RSA signatures in `rsa`, ECDSA ones in `ecdsa_r`/`ecdsa_s`."""

    sig_alg: int
    hash_alg: int
    rsa: bytes = b""
    ecdsa_r: bytes = b""
    ecdsa_s: bytes = b""


def read_pcr_selection(reader: Reader) -> Tuple[PcrSelection, ...]:
    count = reader.u32("TPML_PCR_SELECTION.count")
    if count > MAX_PCR_BANKS:
        raise VerificationError("tpm.parse", f"a PCR selection of {count} banks is more than {MAX_PCR_BANKS}")
    banks: List[PcrSelection] = []
    for index in range(count):
        hash_alg = reader.u16(f"pcrSelections[{index}].hash")
        size = reader.u8(f"pcrSelections[{index}].sizeofSelect")
        if size > MAX_SIZEOF_SELECT:
            raise VerificationError("tpm.parse", f"sizeofSelect {size} is more than {MAX_SIZEOF_SELECT}")
        bitmap = reader.take(size, f"pcrSelections[{index}].pcrSelect")
        pcrs = tuple(i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1)
        banks.append(PcrSelection(hash_alg, pcrs))
    return tuple(banks)


def parse_attest(data: bytes) -> Attest:
    """A TPMS_ATTEST of type quote; refuses other types and trailing bytes."""
    reader = Reader(data, "TPMS_ATTEST")
    magic = reader.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise VerificationError("tpm.parse", f"magic {magic:#010x} is not TPM_GENERATED_VALUE (0xff544347)")
    kind = reader.u16("type")
    if kind != TPM_ST_ATTEST_QUOTE:
        raise VerificationError("tpm.parse", f"attestation type {kind:#06x} is not a quote (0x8018)")
    signer = reader.tpm2b("qualifiedSigner")
    extra = reader.tpm2b("extraData")
    clock = ClockInfo(
        clock=reader.u64("clockInfo.clock"),
        reset_count=reader.u32("clockInfo.resetCount"),
        restart_count=reader.u32("clockInfo.restartCount"),
        safe=bool(reader.u8("clockInfo.safe")),
    )
    firmware = reader.u64("firmwareVersion")
    selection = read_pcr_selection(reader)
    digest = reader.tpm2b("pcrDigest")
    reader.end()
    return Attest(bytes(data), signer, extra, clock, firmware, selection, digest)


def parse_signature(data: bytes) -> Signature:
    """A TPMT_SIGNATURE made by RSASSA, RSAPSS or ECDSA."""
    reader = Reader(data, "TPMT_SIGNATURE")
    sig_alg = reader.u16("sigAlg")
    if sig_alg not in SIG_NAMES:
        raise VerificationError("tpm.parse", f"signature algorithm {sig_alg:#06x} is not RSASSA, RSAPSS or ECDSA")
    hash_alg = reader.u16("hash")
    if sig_alg == ALG_ECDSA:
        r = reader.tpm2b("signatureR")
        s = reader.tpm2b("signatureS")
        reader.end()
        return Signature(sig_alg, hash_alg, ecdsa_r=r, ecdsa_s=s)
    sig = reader.tpm2b("sig")
    reader.end()
    return Signature(sig_alg, hash_alg, rsa=sig)
