"""What every verifier returns, and the interface the CAS calls (engine-safe, Python 3.9).

A verifier is pure: evidence bytes, trust anchors, collateral and the verification time in; a
`VerifiedEvidence` out, or a `citadel.errors.VerificationError` naming the check that failed.
It never fetches anything and never returns a bool.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple

KINDS = ("sim", "sgx", "tdx", "snp", "tpm")


@dataclass(frozen=True)
class VerifiedEvidence:
    """The facts a verifier established about one piece of evidence."""

    kind: str  # one of KINDS
    report_data: bytes  # the bytes the TEE bound into the evidence (64 for sgx/tdx/snp)
    measurements: Dict[str, str]  # named reference values, hex or decimal strings (e.g. mrenclave, mrtd, pcr16)
    debug: bool  # the TEE allows a debugger (or the kind cannot rule it out)
    # UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate,
    # OutOfDateConfigurationNeeded, Revoked, or n/a (not evaluated)
    tcb_status: str = "n/a"
    advisory_ids: Tuple[str, ...] = ()
    platform: str = ""  # which machine or key produced it (chip id, FMSPC, AK or platform key fingerprint)
    details: Dict[str, Any] = field(default_factory=dict)  # everything else worth printing


class Verifier(Protocol):
    """One per evidence kind; the CAS looks them up by `kind`."""

    kind: str

    def verify(
        self,
        evidence: bytes,
        *,
        at: _dt.datetime,
        collateral: Optional[Mapping[str, Any]] = None,
    ) -> VerifiedEvidence:
        """Verify or raise VerificationError; trust anchors are given to the verifier's constructor."""
        ...
