"""AMD SEV-SNP ATTESTATION_REPORT layout (ABI spec 56860, report versions 2 to 5).

The report is 0x4A0 bytes, little-endian. Bytes 0x000..0x29F are signed; the signature
(ECDSA P-384 over SHA-384, r and s as 72-byte little-endian integers) sits at 0x2A0. The layout
is declared once, as a table of named fields, so offsets are computed, not scattered.

TCB_VERSION (8 bytes) has two layouts: Milan and Genoa put the boot loader SPL in byte 0, TEE in
byte 1, SNP in byte 6 and microcode in byte 7; Turin puts FMC in byte 0, boot loader in byte 1,
TEE in byte 2, SNP in byte 3 and microcode in byte 7. Which one applies depends on the product,
which a v3+ report names through its CPUID family/model bytes (0x188..0x18A).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from citadel.errors import VerificationError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_RESERVED = slice(0x330, REPORT_SIZE)  # unsigned: must be zero, or the report is malleable
SUPPORTED_VERSIONS = (2, 3, 4, 5)  # 3 adds CPUID fields; 5 adds the mitigation vectors
SIG_ALGO_ECDSA_P384_SHA384 = 1
SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1
SIGNING_KEY_NONE = 7
PRODUCTS = ("Milan", "Genoa", "Turin")

# (name, struct format) in report order; "x" entries are reserved bytes (must be zero, not checked:
# the signature covers them).
REPORT_FIELDS: List[Tuple[str, str]] = [
    ("version", "I"),  # 0x000
    ("guest_svn", "I"),  # 0x004
    ("policy", "Q"),  # 0x008
    ("family_id", "16s"),  # 0x010
    ("image_id", "16s"),  # 0x020
    ("vmpl", "I"),  # 0x030
    ("signature_algo", "I"),  # 0x034
    ("current_tcb", "8s"),  # 0x038
    ("platform_info", "Q"),  # 0x040
    ("key_info", "I"),  # 0x048: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 2-4 SIGNING_KEY
    ("", "4x"),  # 0x04C
    ("report_data", "64s"),  # 0x050
    ("measurement", "48s"),  # 0x090
    ("host_data", "32s"),  # 0x0C0
    ("id_key_digest", "48s"),  # 0x0E0
    ("author_key_digest", "48s"),  # 0x110
    ("report_id", "32s"),  # 0x140
    ("report_id_ma", "32s"),  # 0x160
    ("reported_tcb", "8s"),  # 0x180
    ("cpuid_fam_id", "B"),  # 0x188 (v3+; zero in v2)
    ("cpuid_mod_id", "B"),  # 0x189 (v3+)
    ("cpuid_step", "B"),  # 0x18A (v3+)
    ("", "21x"),  # 0x18B
    ("chip_id", "64s"),  # 0x1A0
    ("committed_tcb", "8s"),  # 0x1E0
    ("current_build", "B"),  # 0x1E8
    ("current_minor", "B"),  # 0x1E9
    ("current_major", "B"),  # 0x1EA
    ("", "x"),  # 0x1EB
    ("committed_build", "B"),  # 0x1EC
    ("committed_minor", "B"),  # 0x1ED
    ("committed_major", "B"),  # 0x1EE
    ("", "x"),  # 0x1EF
    ("launch_tcb", "8s"),  # 0x1F0
    ("launch_mit_vector", "Q"),  # 0x1F8 (v5)
    ("current_mit_vector", "Q"),  # 0x200 (v5)
    ("", "152x"),  # 0x208
    ("signature_r", "72s"),  # 0x2A0
    ("signature_s", "72s"),  # 0x2E8
    ("", "368x"),  # 0x330 .. 0x4A0
]

REPORT_STRUCT = struct.Struct("<" + "".join(fmt for _, fmt in REPORT_FIELDS))
_NAMES = [name for name, fmt in REPORT_FIELDS if not fmt.endswith("x")]
assert REPORT_STRUCT.size == REPORT_SIZE


def field_offsets() -> Dict[str, int]:
    """Offset of every named field (for docs and tests)."""
    offsets: Dict[str, int] = {}
    position = 0
    for name, fmt in REPORT_FIELDS:
        if name:
            offsets[name] = position
        position += struct.calcsize("<" + fmt)
    return offsets


# Guest policy bits (ABI 56860, GUEST_POLICY); bits 0-15 are the minimum ABI minor/major.
POLICY_BITS = {
    16: "SMT",
    17: "RESERVED_MBO",
    18: "MIGRATE_MA",
    19: "DEBUG",
    20: "SINGLE_SOCKET",
    21: "CXL_ALLOW",
    22: "MEM_AES_256_XTS",
    23: "RAPL_DIS",
    24: "CIPHERTEXT_HIDING",
    25: "PAGE_SWAP_DISABLE",
}
POLICY_DEBUG_BIT = 19

# PLATFORM_INFO bits.
PLATFORM_INFO_BITS = {
    0: "SMT_EN",
    1: "TSME_EN",
    2: "ECC_EN",
    3: "RAPL_DIS",
    4: "CIPHERTEXT_HIDING_EN",
    5: "ALIAS_CHECK_COMPLETE",
}


def bit_names(value: int, table: Dict[int, str]) -> List[str]:
    return [name for bit, name in sorted(table.items()) if value >> bit & 1]


@dataclass(frozen=True)
class TcbVersion:
    """The security patch levels of one TCB_VERSION, decoded for a product."""

    raw: bytes
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: Optional[int] = None  # Turin only

    @classmethod
    def decode(cls, raw: bytes, product: str) -> TcbVersion:
        if product == "Turin":
            return cls(raw, bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(raw, bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def as_dict(self) -> Dict[str, int]:
        parts = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        if self.fmc is not None:
            parts = {"fmc": self.fmc, **parts}
        return parts

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items())


def encode_tcb(product: str, spl: Dict[str, int]) -> bytes:
    """TCB_VERSION bytes from the VCEK's security patch levels (blSPL, teeSPL, ..., spl4..spl7)."""
    g = spl.get
    if product == "Turin":
        order = [g("fmc", 0), g("bl", 0), g("tee", 0), g("snp", 0), g("spl5", 0), g("spl6", 0), g("spl7", 0)]
    else:
        order = [g("bl", 0), g("tee", 0), g("spl4", 0), g("spl5", 0), g("spl6", 0), g("spl7", 0), g("snp", 0)]
    return bytes(order + [g("ucode", 0)])


def product_from_cpuid(family: int, model: int) -> Optional[str]:
    """AMD product line of a v3+ report's CPUID_FAM_ID/CPUID_MOD_ID, or None if unknown."""
    if family == 0x19 and model <= 0x0F:
        return "Milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "Genoa"
    if family == 0x1A and model <= 0x1F:
        return "Turin"
    return None


@dataclass(frozen=True)
class SnpReport:
    """A parsed (not yet verified) attestation report."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: bytes
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    chip_id: bytes
    committed_tcb: bytes
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: bytes
    launch_mit_vector: int
    current_mit_vector: int
    signature_r: bytes
    signature_s: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def debug(self) -> bool:
        return bool(self.policy >> POLICY_DEBUG_BIT & 1)

    @property
    def author_key_en(self) -> bool:
        return bool(self.key_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.key_info >> 1 & 1)

    @property
    def signing_key(self) -> int:
        return self.key_info >> 2 & 0b111

    @property
    def has_cpuid(self) -> bool:
        return self.version >= 3

    @property
    def cpuid_product(self) -> Optional[str]:
        """The product a v3+ report names; None for v2 (the VCEK must tell)."""
        if not self.has_cpuid:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    @property
    def chip_id_masked(self) -> bool:
        return self.chip_id == bytes(64)


def parse_report(data: bytes) -> SnpReport:
    """Parse a report's layout; raises VerificationError('snp.parse'/'snp.version')."""
    if not isinstance(data, (bytes, bytearray)):
        raise VerificationError("snp.parse", "evidence is not bytes")
    if len(data) != REPORT_SIZE:
        raise VerificationError(
            "snp.parse",
            f"an SEV-SNP report is {REPORT_SIZE} bytes, this evidence has {len(data)}",
            "pass the raw report (e.g. /sys/kernel/config/tsm/report/*/outblob or snpguest's report.bin)",
        )
    if any(data[SIGNATURE_RESERVED]):
        raise VerificationError("snp.parse", "the reserved bytes after the signature (0x330..0x49F) are not zero")
    values = dict(zip(_NAMES, REPORT_STRUCT.unpack(bytes(data))))
    report = SnpReport(raw=bytes(data), **values)
    if report.version not in SUPPORTED_VERSIONS:
        raise VerificationError(
            "snp.version",
            f"report version {report.version} is not supported (supported: {SUPPORTED_VERSIONS})",
        )
    return report
