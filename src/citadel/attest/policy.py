"""What a relying party tolerates in verified evidence: debug TEEs, TCB statuses, advisories.

Verifiers report facts (`VerifiedEvidence.debug`, `.tcb_status`, `.advisory_ids`); this module turns
tolerances into a refusal. It is kind-agnostic: the CAS (session policies) and `citadel evidence
verify` use it for every evidence kind. A "Revoked" TCB is never tolerated, whatever is listed.

The tolerance names are those of the session language (docs/policy.md): `TCB_TOLERANCES` says
which tolerances a TCB status needs. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

from typing import Collection, Dict, FrozenSet, Optional, Tuple

from citadel.attest.evidence import VerifiedEvidence
from citadel.errors import VerificationError

NOT_EVALUATED = "n/a"
REVOKED = "Revoked"
UNEVALUATED_TOLERANCE = "unevaluated-tcb"
ANY_ADVISORY = "*"

#: TCB status a verifier reports -> the tolerances a policy must list to accept it (Revoked: never)
TCB_TOLERANCES: Dict[str, Tuple[str, ...]] = {
    "UpToDate": (),
    "SWHardeningNeeded": ("sw-hardening-needed",),
    "ConfigurationNeeded": ("configuration-needed",),
    "ConfigurationAndSWHardeningNeeded": ("configuration-needed", "sw-hardening-needed"),
    "OutOfDate": ("outdated-tcb",),
    "OutOfDateConfigurationNeeded": ("outdated-tcb", "configuration-needed"),
}


def tolerated_statuses(tolerances: Collection[str]) -> FrozenSet[str]:
    """The TCB statuses accepted by a set of tolerance names (UpToDate always is)."""
    return frozenset(status for status, needs in TCB_TOLERANCES.items() if all(t in tolerances for t in needs))


def _needs(status: str) -> str:
    needs = TCB_TOLERANCES.get(status)
    return f" (add {' and '.join(needs)})" if needs else ""


def check_tolerances(
    evidence: VerifiedEvidence,
    allow_debug: bool,
    *,
    tcb_statuses: Collection[str] = ("UpToDate",),
    allow_unevaluated_tcb: bool = False,
    refused_advisories: Collection[str] = (),
    tolerated_advisories: Optional[Collection[str]] = None,
) -> None:
    """Raise `VerificationError` (`policy.*`) unless `evidence` is within the given tolerances.

    `tcb_statuses` lists the acceptable TCB statuses (e.g. add "SWHardeningNeeded");
    `allow_unevaluated_tcb` accepts evidence verified without collateral (tcb_status "n/a");
    `refused_advisories` names advisory ids refused even at an accepted status;
    `tolerated_advisories`, when given, is an allow-list: every advisory the platform reports must
    be in it (`*` tolerates any).
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
                f"the {evidence.kind} evidence was verified without TCB collateral (add {UNEVALUATED_TOLERANCE})",
                "supply current collateral, or tolerate an unevaluated TCB in the session policy",
            )
    elif status not in tcb_statuses:
        raise VerificationError(
            "policy.tcb_status",
            f"TCB status {status} not tolerated{_needs(status)}",
            "update the platform (microcode, BIOS, TDX module) or tolerate this status in the policy",
        )
    refused = [a for a in evidence.advisory_ids if a in refused_advisories]
    if tolerated_advisories is not None and ANY_ADVISORY not in tolerated_advisories:
        allowed = {a.upper() for a in tolerated_advisories}
        refused += [a for a in evidence.advisory_ids if a.upper() not in allowed and a not in refused]
    if refused:
        raise VerificationError(
            "policy.advisory",
            f"the platform is affected by advisories not tolerated: {', '.join(refused)}",
            "update the platform, or list the advisories under tolerate: - advisories: [...] after review",
        )
