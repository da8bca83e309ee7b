"""Collect Intel SGX evidence inside Gramine through its /dev/attestation pseudo-files.

Protocol (Gramine's attestation interface, docs/evidence-collection.md section 2):

1. read `/dev/attestation/attestation_type`: `dcap` (or `epid`); `none` means Gramine was started
   without remote attestation (`sgx.remote_attestation = "dcap"` in the manifest turns it on);
2. write the 64 report-data bytes to `/dev/attestation/user_report_data` (one write, then close);
3. read `/dev/attestation/quote`: Gramine asks the quoting enclave for a quote over an SGX report
   whose REPORTDATA is those 64 bytes, and returns the quote (DCAP: version 3).

The report data lives in the enclave, one value per process, so one lock serializes step 2 and 3
between this process's threads; the quote's REPORTDATA is checked afterwards anyway. Only a real
SGX machine running Gramine tests this for real: a directory tree standing in for /dev/attestation
only tests the file protocol. Engine-safe: standard library only, Python 3.9.
"""

from __future__ import annotations

import threading

from citadel.attest.collect.errors import CollectionError
from citadel.attest.collect.files import read_blob, read_text, under, write_blob
from citadel.attest.collect.reportdata import REPORT_DATA_SIZE, check_binds

ATTESTATION_DIR = "/dev/attestation"
_REMEDY = 'run the engine inside Gramine with sgx.remote_attestation = "dcap" in its manifest'
_LOCK = threading.Lock()


def collect_gramine(report_data: bytes, *, root: str = "/") -> bytes:
    """An SGX DCAP quote whose REPORTDATA is `report_data` (zero-padded to 64 bytes)."""
    if not 0 < len(report_data) <= REPORT_DATA_SIZE:
        raise ValueError(f"report data must be 1..{REPORT_DATA_SIZE} bytes")
    base = under(root, ATTESTATION_DIR)
    kind = read_text(f"{base}/attestation_type", _REMEDY)
    if kind in ("", "none"):
        raise CollectionError("Gramine runs without remote attestation (attestation_type is none)", _REMEDY)
    padded = report_data + bytes(REPORT_DATA_SIZE - len(report_data))
    with _LOCK:
        write_blob(f"{base}/user_report_data", padded, _REMEDY)
        quote = read_blob(f"{base}/quote", "check that the host runs the SGX quoting service (AESM/QGS) and PCCS")
    if not quote:
        raise CollectionError("Gramine returned an empty quote", "check the host's SGX quoting service")
    check_binds("sgx", quote, report_data)
    return quote
