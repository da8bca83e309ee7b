"""What a session tolerates in verified evidence: debug TEEs, TCB statuses, advisories.

Verifiers report facts (`VerifiedEvidence.debug`, `.tcb_status`, `.advisory_ids`); this helper turns
a policy's tolerances into a refusal. It works on any evidence kind. A "Revoked" TCB is never
tolerated, whatever the policy lists. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

from typing import Collection

from citadel.attest.evidence import VerifiedEvidence
from citadel.errors import VerificationError

NOT_EVALUATED = "n/a"
REVOKED = "Revoked"


def check_tolerances(
    evidence: VerifiedEvidence,
    allow_debug: bool,
    *,
    tcb_statuses: Collection[str] = ("UpToDate",),
    allow_unevaluated_tcb: bool = False,
    refused_advisories: Collection[str] = (),
) -> None:
    """Raise `VerificationError` (`policy.*`) unless `evidence` is within the given tolerances.

    `tcb_statuses` lists the acceptable TCB statuses (e.g. add "SWHardeningNeeded");
    `allow_unevaluated_tcb` accepts evidence verified without collateral (tcb_status "n/a");
    `refused_advisories` names Intel/AMD advisory ids that are refused even at an accepted status.
    """
    if evidence.debug and not allow_debug:
        raise VerificationError(
            "policy.debug",
            f"the {evidence.kind} evidence comes from a debug TEE, whose memory a debugger can read",
            "run a production (non-debug) build, or tolerate debug in the session policy for testing",
        )
    status = evidence.tcb_status
    if status == REVOKED:
        raise VerificationError("policy.tcb_status", "the platform's TCB is revoked", "replace the platform")
    if status == NOT_EVALUATED:
        if not allow_unevaluated_tcb:
            raise VerificationError(
                "policy.tcb_unevaluated",
                f"the {evidence.kind} evidence was verified without TCB collateral",
                "supply current collateral, or tolerate an unevaluated TCB in the session policy",
            )
    elif status not in tcb_statuses:
        raise VerificationError(
            "policy.tcb_status",
            f"TCB status {status} is not among the tolerated {', '.join(sorted(tcb_statuses))}",
            "update the platform (microcode, BIOS, TDX module) or tolerate this status in the policy",
        )
    refused = [a for a in evidence.advisory_ids if a in refused_advisories]
    if refused:
        raise VerificationError(
            "policy.advisory",
            f"the platform is affected by refused advisories {', '.join(refused)}",
            "update the platform, or stop refusing these advisories in the session policy",
        )
