"""Intel SGX and TDX quote verification (DCAP, ECDSA P-256): signatures, PCK chains, TCB evaluation."""

from __future__ import annotations

from citadel.attest.intel.store import load_collateral
from citadel.attest.intel.verify import SgxVerifier, TdxVerifier, load_trusted_root
from citadel.attest.policy import check_tolerances

__all__ = ["SgxVerifier", "TdxVerifier", "check_tolerances", "load_collateral", "load_trusted_root"]
