"""One verifier per evidence kind, and the loader of each kind's collateral from files.

`verifier_for(kind, **trust)` builds the verifier of `kind` with its trust anchors; modules are
imported only when their kind is asked for, so the CAS and the CLI load what they use. Trust
keywords per kind:

    sgx, tdx   root: the Intel SGX Root CA (x509.Certificate, PEM bytes or path; default: bundled)
    snp        ark_ask_bundles: {"milan": PEM, "genoa_vlek": PEM, ...} (default: bundled AMD roots)
    tpm        trusted_aks: PEM public keys of the pinned attestation keys (required to verify)
    sim        platform_keys: raw Ed25519 public keys of registered platforms
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from citadel.attest.evidence import VerifiedEvidence, Verifier
from citadel.crypto import digests_equal
from citadel.errors import UsageError, VerificationError

# kind -> (module, verifier class). Add a kind here and in evidence.KINDS.
VERIFIERS: Dict[str, Tuple[str, str]] = {
    "sgx": ("citadel.attest.intel.verify", "SgxVerifier"),
    "tdx": ("citadel.attest.intel.verify", "TdxVerifier"),
    "snp": ("citadel.attest.snp.verify", "SnpVerifier"),
    "tpm": ("citadel.attest.tpm.verify", "TpmVerifier"),
    "sim": ("citadel.attest.sim", "SimVerifier"),  # simulation mode: registered platform keys
}

# kind -> (module, function(path, evidence) -> collateral mapping). Kinds absent here take none.
COLLATERAL_LOADERS: Dict[str, Tuple[str, str]] = {
    "sgx": ("citadel.attest.intel.store", "load_collateral"),
    "tdx": ("citadel.attest.intel.store", "load_collateral"),
    "snp": ("citadel.attest.snp.collateral", "load_collateral"),
}


def _resolve(table: Dict[str, Tuple[str, str]], kind: str) -> Callable[..., Any]:
    module_name, attribute = table[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"evidence kind {kind!r} is not available in this installation ({exc})", "reinstall Citadel"
        ) from None
    target: Callable[..., Any] = getattr(module, attribute)
    return target


def verifier_for(kind: str, **trust: Any) -> Verifier:
    """The verifier of `kind` (sgx, tdx, snp, tpm, sim) built with the given trust anchors."""
    if kind not in VERIFIERS:
        raise UsageError(f"unknown evidence kind {kind!r}", f"use one of {', '.join(sorted(VERIFIERS))}")
    factory = _resolve(VERIFIERS, kind)
    verifier: Verifier = factory(**trust)
    return verifier


def load_collateral(kind: str, path: Path, evidence: bytes) -> Optional[Mapping[str, Any]]:
    """The collateral of `kind` for `evidence` from a file or a collateral cache directory."""
    if kind not in COLLATERAL_LOADERS:
        raise UsageError(f"evidence of kind {kind!r} takes no collateral", "leave out --collateral")
    if not path.exists():
        raise UsageError(f"collateral {str(path)!r} does not exist",
                         "give a collateral file or the cache directory `citadel collateral fetch` filled")
    loader = _resolve(COLLATERAL_LOADERS, kind)
    collateral: Mapping[str, Any] = loader(path, evidence)
    return collateral


def require_report_data(evidence: VerifiedEvidence, expected: bytes) -> None:
    """Check the evidence binds `expected` (zero-padded to the evidence's report data length)."""
    if len(expected) > len(evidence.report_data):
        raise VerificationError(
            "report_data", f"expected {len(expected)} bytes, the evidence binds {len(evidence.report_data)}"
        )
    padded = expected + bytes(len(evidence.report_data) - len(expected))
    if not digests_equal(padded, evidence.report_data):
        raise VerificationError("report_data", "the evidence binds other report data than expected")
