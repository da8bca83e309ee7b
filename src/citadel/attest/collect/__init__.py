"""Engine-side evidence collection for `hw` mode: ask this machine's TEE for evidence binding 64 bytes.

    sgx  Intel SGX inside Gramine: /dev/attestation (gramine.py) -> a DCAP quote
    tdx  Intel TDX guest: configfs-tsm (tsm.py) -> a DCAP quote
    snp  AMD SEV-SNP guest: configfs-tsm (tsm.py) -> an attestation report (+ certificate table)
    tpm  TPM 2.0: /dev/tpmrm0 or swtpm's TCP socket (tpm.py) -> a Citadel TPM container

Each result is exactly the evidence bytes the verifier of that kind (citadel.attest.registry) takes.
`root` moves every probed and used path under another directory (tests build trees there). Formats
and procedures: docs/evidence-collection.md. Engine-safe: standard library and `cryptography` only,
Python 3.9.
"""

from __future__ import annotations

from typing import List, Optional, Union

from citadel.errors import UsageError

COLLECTABLE = ("sgx", "tdx", "snp", "tpm")


def collect_evidence(
    kind: str,
    report_data: bytes,
    *,
    root: str = "/",
    measurement: Optional[Union[bytes, str]] = None,
    tpm: Optional[str] = None,
) -> bytes:
    """Evidence of `kind` binding `report_data` (1..64 bytes; Citadel's binding makes 64).

    `measurement` (tpm only, required there): the engine measurement, 32 bytes or 64 hex digits, which
    is extended into PCR 23. `tpm`: the TPM channel, `tcp:HOST:PORT` or a device path (default
    ROOT/dev/tpmrm0). Raises CollectionError (an EngineError) when the TEE cannot give evidence.
    """
    if kind == "sgx":
        from citadel.attest.collect.gramine import collect_gramine

        return collect_gramine(report_data, root=root)
    if kind in ("tdx", "snp"):
        from citadel.attest.collect.tsm import collect_tsm

        return collect_tsm(report_data, kind=kind, root=root).outblob
    if kind == "tpm":
        from citadel.attest.collect.tpm import collect_tpm

        if measurement is None:
            raise UsageError("TPM evidence needs the engine measurement (it goes into PCR 23)",
                             "pass measurement= (the 64-hex-digit engine measurement)")
        try:
            digest = bytes.fromhex(measurement) if isinstance(measurement, str) else bytes(measurement)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise UsageError("the engine measurement is not a SHA-256 digest (32 bytes, 64 hex digits)",
                             "pass the measurement the engine computed (citadel.engine.measure)")
        return collect_tpm(report_data, digest, tpm=tpm, root=root)
    raise UsageError(f"evidence of kind {kind!r} cannot be collected", f"use one of {', '.join(COLLECTABLE)}")


def detect_kinds(root: str = "/") -> List[str]:
    """The kinds whose interface exists here, in order of preference (sgx, tdx, snp, tpm).

    Uses the engine's TEE probe (citadel.engine.tee), so detection and mode choice agree.
    """
    from citadel.engine.tee import probe

    return [p.kind for p in probe(root) if p.found]
