"""TCB evaluation: match a quote's platform, TDX module and QE against Intel's TCB info and QE identity.

The rules follow Intel's Quote Verification Library (TcbLevelCheck, TdxModuleCheck,
EnclaveReportVerifier): the first TCB level (in Intel's published, descending order) whose every SGX
component SVN and PCESVN (and for TDX, every TEE TCB SVN) the platform meets gives the platform status;
the TDX module identity and the QE identity can lower it; advisory ids are the union of the matched
levels'. Inputs are already signature-checked (collateral.py). Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from citadel.attest.intel.layouts import SgxReportBody, TdReportBody
from citadel.attest.intel.pck import PckExtensions
from citadel.attest.intel.tcbinfo import EnclaveIdentity, EnclaveLevel, TcbInfo, TcbLevel
from citadel.errors import VerificationError

UP_TO_DATE = "UpToDate"
SW_HARDENING = "SWHardeningNeeded"
CONFIGURATION = "ConfigurationNeeded"
CONFIGURATION_AND_SW = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIGURATION = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"


@dataclass(frozen=True)
class TcbResult:
    """The outcome of TCB evaluation."""

    status: str  # the converged status (one of the constants above)
    advisory_ids: Tuple[str, ...]
    platform_status: str  # the matched TCB level's own status
    tcb_date: str
    qe_status: str
    qe_isvsvn: int
    tdx_module_status: Optional[str] = None


def _converge(platform: str, other: str) -> str:
    """Lower a platform status by a QE or TDX module status (Intel QVL's converge functions)."""
    if other == OUT_OF_DATE:
        if platform in (UP_TO_DATE, SW_HARDENING):
            return OUT_OF_DATE
        if platform in (CONFIGURATION, CONFIGURATION_AND_SW):
            return OUT_OF_DATE_CONFIGURATION
    if other == REVOKED:
        return REVOKED
    return platform


def _union(*groups: Sequence[str]) -> Tuple[str, ...]:
    seen: List[str] = []
    for group in groups:
        for advisory in group:
            if advisory not in seen:
                seen.append(advisory)
    return tuple(seen)


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask))


# --- QE identity -------------------------------------------------------------------------------------


def match_qe_identity(identity: EnclaveIdentity, qe_report: SgxReportBody, tdx: bool) -> EnclaveLevel:
    """Check the QE report against the QE identity and return the TCB level its ISVSVN reaches."""
    expected_id = "TD_QE" if tdx else "QE"
    if identity.id != expected_id:
        raise VerificationError(
            "qe_identity.mismatch",
            f"the QE identity is for {identity.id!r}, this quote needs {expected_id!r}",
        )
    if _masked(qe_report.miscselect_bytes, identity.miscselect_mask) != identity.miscselect:
        raise VerificationError("qe_identity.mismatch", "the QE's MISCSELECT does not match its identity")
    if _masked(qe_report.attributes, identity.attributes_mask) != identity.attributes:
        raise VerificationError("qe_identity.mismatch", "the QE's ATTRIBUTES do not match its identity")
    if qe_report.mrsigner != identity.mrsigner:
        raise VerificationError(
            "qe_identity.mismatch", f"the QE's MRSIGNER {qe_report.mrsigner.hex()} is not Intel's"
        )
    if qe_report.isv_prod_id != identity.isvprodid:
        raise VerificationError(
            "qe_identity.mismatch",
            f"the QE's ISVPRODID {qe_report.isv_prod_id} is not {identity.isvprodid}",
        )
    for level in identity.levels:
        if qe_report.isv_svn >= level.isvsvn:
            return level
    raise VerificationError(
        "tcb.unsupported", f"the QE's ISVSVN {qe_report.isv_svn} is below every level of its identity"
    )


# --- TDX module -------------------------------------------------------------------------------------


def tdx_module_status(
    tcb_info: TcbInfo, body: TdReportBody, quote_version: int
) -> Tuple[str, Tuple[str, ...]]:
    """Check MRSIGNERSEAM and SEAMATTRIBUTES against the TDX module identity; return its status."""
    module_svn, module_version = body.tee_tcb_svn[0], body.tee_tcb_svn[1]
    module = tcb_info.tdx_module
    if module is None:
        raise VerificationError("tcb_info.format", "the TDX TCB info has no tdxModule")
    mrsigner, attributes = module.mrsigner, module.attributes
    identity = None
    if quote_version > 3 and module_version > 0:
        wanted = f"TDX_{module_version:02X}"
        for candidate in tcb_info.tdx_module_identities:
            if candidate.id.upper() == wanted:
                identity = candidate
                break
        if identity is None:
            raise VerificationError("tdx_module.mismatch", f"the TCB info has no identity {wanted}")
        mrsigner, attributes = identity.mrsigner, identity.attributes
    if body.mrsignerseam != mrsigner:
        raise VerificationError("tdx_module.mismatch", "MRSIGNERSEAM is not the TDX module signer's")
    if any(body.seam_attributes) or body.seam_attributes != attributes:
        raise VerificationError("tdx_module.mismatch", "SEAMATTRIBUTES are not zero as the TCB info requires")
    if identity is None:
        return UP_TO_DATE, ()
    for level in identity.levels:
        if module_svn >= level.isvsvn:
            return level.status, level.advisory_ids
    raise VerificationError(
        "tcb.unsupported", f"the TDX module SVN {module_svn} is below every level of {identity.id}"
    )


# --- platform ---------------------------------------------------------------------------------------


def _sgx_ok(pck: PckExtensions, level: TcbLevel) -> bool:
    return (
        all(have >= need for have, need in zip(pck.tcb_components, level.sgx_components))
        and pck.pcesvn >= level.pcesvn
    )


def _tdx_ok(tee_tcb_svn: bytes, level: TcbLevel) -> bool:
    start = 2 if tee_tcb_svn[1] > 0 else 0  # bytes 0-1 belong to the TDX module identity then
    return all(tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, 16))


def match_platform_level(tcb_info: TcbInfo, pck: PckExtensions, tee_tcb_svn: Optional[bytes]) -> TcbLevel:
    """The first TCB level the platform meets (for TDX: SGX components, PCESVN and TEE TCB SVN)."""
    sgx_match = False
    for level in tcb_info.levels:
        if not _sgx_ok(pck, level):
            continue
        sgx_match = True
        if tee_tcb_svn is None:
            return level
        if len(level.tdx_components) != 16:
            raise VerificationError("tcb_info.format", "a TDX TCB level lacks 16 tdxtcbcomponents")
        if _tdx_ok(tee_tcb_svn, level):
            return level
    what = "SGX TCB" if not sgx_match else "TEE TCB SVN"
    raise VerificationError("tcb.unsupported", f"the platform's {what} is below every TCB level")


def evaluate(
    tcb_info: TcbInfo,
    qe_identity: EnclaveIdentity,
    pck: PckExtensions,
    body: object,
    qe_report: SgxReportBody,
    quote_version: int,
) -> TcbResult:
    """Evaluate the platform (PCK extensions), TDX module and QE; raise if they cannot be matched."""
    tdx = isinstance(body, TdReportBody)
    expected_id = "TDX" if tdx else "SGX"
    if tcb_info.id != expected_id:
        raise VerificationError(
            "tcb_info.mismatch", f"the TCB info is for {tcb_info.id!r}, this quote needs {expected_id!r}"
        )
    if tcb_info.fmspc != pck.fmspc:
        raise VerificationError(
            "tcb_info.mismatch",
            f"the TCB info is for FMSPC {tcb_info.fmspc.hex()}, the PCK certificate says {pck.fmspc.hex()}",
        )
    if tcb_info.pceid != pck.pceid:
        raise VerificationError(
            "tcb_info.mismatch",
            f"the TCB info is for PCE id {tcb_info.pceid.hex()}, the PCK certificate says {pck.pceid.hex()}",
        )
    module_status: Optional[str] = None
    module_advisories: Tuple[str, ...] = ()
    if isinstance(body, TdReportBody):
        module_status, module_advisories = tdx_module_status(tcb_info, body, quote_version)
    qe_level = match_qe_identity(qe_identity, qe_report, tdx)
    level = match_platform_level(tcb_info, pck, body.tee_tcb_svn if isinstance(body, TdReportBody) else None)
    status = level.status
    if module_status is not None:
        status = _converge(status, module_status)
    status = _converge(status, qe_level.status)
    return TcbResult(
        status=status,
        advisory_ids=_union(level.advisory_ids, module_advisories, qe_level.advisory_ids),
        platform_status=level.status,
        tcb_date=level.tcb_date,
        qe_status=qe_level.status,
        qe_isvsvn=qe_report.isv_svn,
        tdx_module_status=module_status,
    )
