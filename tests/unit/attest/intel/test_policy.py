"""check_tolerances: debug, TCB status, unevaluated TCB and advisories, each refused by name."""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.intel.policy import check_tolerances
from citadel.errors import VerificationError


def evidence(debug: bool = False, status: str = "UpToDate", advisories: tuple = ()) -> VerifiedEvidence:
    return VerifiedEvidence(
        kind="sgx",
        report_data=bytes(64),
        measurements={"mrenclave": "00" * 32},
        debug=debug,
        tcb_status=status,
        advisory_ids=advisories,
    )


CASES = [
    ("debug_enclave_not_tolerated", evidence(debug=True), {}, "policy.debug"),
    ("debug_enclave_tolerated", evidence(debug=True), {"allow_debug": True}, None),
    ("up_to_date", evidence(), {}, None),
    ("sw_hardening_not_tolerated", evidence(status="SWHardeningNeeded"), {}, "policy.tcb_status"),
    (
        "sw_hardening_tolerated",
        evidence(status="SWHardeningNeeded"),
        {"tcb_statuses": ("UpToDate", "SWHardeningNeeded")},
        None,
    ),
    ("out_of_date_not_tolerated", evidence(status="OutOfDate"), {}, "policy.tcb_status"),
    (
        "revoked_even_if_listed",
        evidence(status="Revoked"),
        {"tcb_statuses": ("Revoked",)},
        "policy.tcb_status",
    ),
    ("tcb_not_evaluated", evidence(status="n/a"), {}, "policy.tcb_unevaluated"),
    ("tcb_not_evaluated_tolerated", evidence(status="n/a"), {"allow_unevaluated_tcb": True}, None),
    (
        "refused_advisory",
        evidence(advisories=("INTEL-SA-00615",)),
        {"refused_advisories": {"INTEL-SA-00615"}},
        "policy.advisory",
    ),
    (
        "other_advisory",
        evidence(advisories=("INTEL-SA-00289",)),
        {"refused_advisories": {"INTEL-SA-00615"}},
        None,
    ),
]


@pytest.mark.parametrize("name,ev,kwargs,check", CASES, ids=[c[0] for c in CASES])
def test_check_tolerances(
    name: str, ev: VerifiedEvidence, kwargs: Dict[str, Any], check: Optional[str]
) -> None:
    allow_debug = kwargs.pop("allow_debug", False)
    if check is None:
        check_tolerances(ev, allow_debug, **kwargs)
        return
    with pytest.raises(VerificationError) as err:
        check_tolerances(ev, allow_debug, **kwargs)
    assert err.value.check == check
    assert err.value.remedy
