"""Collect Intel TDX and AMD SEV-SNP evidence through the kernel's configfs-tsm report interface.

Protocol (Linux Documentation/ABI/testing/configfs-tsm; docs/evidence-collection.md section 3):

1. `mkdir /sys/kernel/config/tsm/report/<name>`: a report entry of our own (one per request, so no
   other process writes into it unless it goes looking for it); the kernel fills it with attributes;
2. read `provider` (`tdx_guest` or `sev_guest`) and `generation` (a decimal counter the kernel
   increments on every write to the entry);
3. write the 64 report-data bytes to `inblob`, read `outblob` (TDX: a quote; SEV-SNP: the
   attestation report) and `auxblob` when present (SEV-SNP: the certificate table the host supplied);
4. read `generation` again: exactly one more than in step 2, or another writer slipped in between
   and outblob may answer its inblob, so steps 2-4 are repeated (a few times at most);
5. `rmdir` the entry.

`Configfs` holds the two directory operations, because in configfs `mkdir` makes the kernel create
the attributes and `rmdir` removes them. Only a TDX or SEV-SNP guest tests this for real: a directory
tree standing in for configfs only tests the file protocol. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import uuid
from dataclasses import dataclass
from typing import Dict, Optional

from citadel.attest.collect.errors import CollectionError
from citadel.attest.collect.files import read_blob, read_text, under, write_blob
from citadel.attest.collect.reportdata import REPORT_DATA_SIZE, check_binds

REPORT_DIR = "/sys/kernel/config/tsm/report"
PROVIDERS: Dict[str, str] = {"tdx": "tdx_guest", "snp": "sev_guest"}
KINDS_BY_PROVIDER: Dict[str, str] = {provider: kind for kind, provider in PROVIDERS.items()}
MAX_ATTEMPTS = 3
_REMEDY = "run in a TDX or SEV-SNP guest whose kernel has configfs-tsm (Linux 6.7+) with configfs mounted"


class Configfs:
    """mkdir/rmdir of a report entry; the kernel creates and removes its attributes."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)


@dataclass(frozen=True)
class TsmReport:
    kind: str  # tdx or snp
    provider: str
    outblob: bytes  # TDX quote, or SEV-SNP attestation report
    auxblob: Optional[bytes]  # SEV-SNP certificate table, when the host supplies one
    generation: int

    def collateral(self) -> Dict[str, bytes]:
        """Verification collateral carried along (SEV-SNP: {"vcek"|"vlek", "ask", "ark"} DER); may be empty."""
        return snp_certificates(self.auxblob) if self.kind == "snp" and self.auxblob else {}


def _generation(entry: str) -> int:
    text = read_text(f"{entry}/generation", _REMEDY)
    if not text.isdigit():
        raise CollectionError(f"{entry}/generation holds {text[:20]!r}, not a number", _REMEDY)
    return int(text)


def request_report(entry: str, report_data: bytes, *, kind: Optional[str] = None) -> TsmReport:
    """Steps 2-4 on an existing entry; `kind` (tdx/snp) requires that provider."""
    if not 0 < len(report_data) <= REPORT_DATA_SIZE:
        raise ValueError(f"report data must be 1..{REPORT_DATA_SIZE} bytes")
    provider = read_text(f"{entry}/provider", _REMEDY)
    found = KINDS_BY_PROVIDER.get(provider)
    if found is None:
        raise CollectionError(f"configfs-tsm provider {provider!r} is not tdx_guest or sev_guest", _REMEDY)
    if kind is not None and found != kind:
        raise CollectionError(f"this guest's configfs-tsm provider is {provider}, not {PROVIDERS[kind]}",
                              f"collect {found} evidence here (CITADEL_TEE), or run in a {kind} guest")
    padded = report_data + bytes(REPORT_DATA_SIZE - len(report_data))
    for _attempt in range(MAX_ATTEMPTS):
        before = _generation(entry)
        write_blob(f"{entry}/inblob", padded, _REMEDY)
        outblob = read_blob(f"{entry}/outblob", "check the TEE's quoting service (TDX: the host's QGS)")
        auxblob = read_blob(f"{entry}/auxblob", _REMEDY) if os.path.exists(f"{entry}/auxblob") else None
        after = _generation(entry)
        if after == before + 1:
            if not outblob:
                raise CollectionError(f"{provider} returned an empty report", "check the TEE's quoting service")
            check_binds(found, outblob, report_data)
            return TsmReport(found, provider, outblob, auxblob or None, after)
    raise CollectionError(
        f"another writer kept changing the configfs-tsm entry {entry} ({MAX_ATTEMPTS} attempts)",
        "find the process that writes into Citadel's report entries and stop it",
    )


def collect_tsm(report_data: bytes, *, kind: Optional[str] = None, root: str = "/",
                configfs: Optional[Configfs] = None) -> TsmReport:
    """Steps 1-5: a fresh entry, the report, the entry removed (best effort) whatever happened."""
    fs = configfs or Configfs()
    reports = under(root, REPORT_DIR)
    if not os.path.isdir(reports):
        raise CollectionError(f"{reports} does not exist", _REMEDY + " (mount -t configfs none /sys/kernel/config)")
    entry = os.path.join(reports, f"citadel-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        fs.mkdir(entry)
    except OSError as exc:
        raise CollectionError(f"cannot create the report entry {entry}: {exc.strerror or exc}",
                              "run the engine as root (configfs-tsm entries need CAP_SYS_ADMIN)") from None
    try:
        return request_report(entry, report_data, kind=kind)
    finally:
        # a leftover entry holds no secret (report data is public); the kernel frees it at reboot
        with contextlib.suppress(OSError):
            fs.rmdir(entry)


# -- SEV-SNP certificate table (GHCB spec, "SNP Extended Guest Request") ----------------------------
CERT_ENTRY = struct.Struct("<16sII")  # GUID, offset (from the table start), length
SNP_CERT_GUIDS: Dict[str, str] = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark",
}
MAX_CERT_ENTRIES = 64


def _guid_name(raw: bytes) -> Optional[str]:
    # AMD's tools write the GUID in RFC 4122 byte order; accept the mixed-endian form too
    return SNP_CERT_GUIDS.get(str(uuid.UUID(bytes=raw))) or SNP_CERT_GUIDS.get(str(uuid.UUID(bytes_le=raw)))


def snp_certificates(table: bytes) -> Dict[str, bytes]:
    """The known certificates of an SEV-SNP certificate table, by name; unknown GUIDs are skipped."""
    certs: Dict[str, bytes] = {}
    for index in range(MAX_CERT_ENTRIES):
        start = index * CERT_ENTRY.size
        if start + CERT_ENTRY.size > len(table):
            raise CollectionError("the SEV-SNP certificate table has no terminating entry",
                                  "ask the host's operator to install a valid certificate table")
        guid, offset, length = CERT_ENTRY.unpack_from(table, start)
        if guid == bytes(16):
            return certs
        if offset + length > len(table) or length == 0:
            raise CollectionError(f"SEV-SNP certificate table entry {index} points outside the table",
                                  "ask the host's operator to install a valid certificate table")
        name = _guid_name(guid)
        if name is not None:
            certs[name] = table[offset : offset + length]
    raise CollectionError(f"the SEV-SNP certificate table has more than {MAX_CERT_ENTRIES} entries",
                          "ask the host's operator to install a valid certificate table")
