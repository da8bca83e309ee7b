"""Verifiers for Intel SGX (DCAP ECDSA quotes v3/v4/v5) and Intel TDX (quotes v4/v5).

Checks, in order (each failure raises `VerificationError` with the check name in brackets):
parse the quote [quote.*]; the PCK chain up to the trusted root at the verification time
[pck.chain, pck.expired, pck.certificate, pck.extension]; the QE report signature under the PCK key
[qe_report.signature]; the QE report data binding the attestation key [qe_report.binding]; the quote
signature under the attestation key [quote.attestation_key, quote.signature]; then, when collateral
is given, the CRLs and revocation, the TCB info and QE identity signatures and windows, and TCB
evaluation [collateral.*, crl.*, pck.revoked, tcb_signing.*, tcb_info.*, qe_identity.*,
tdx_module.mismatch, tcb.unsupported]. Without collateral the TCB is not evaluated and `tcb_status`
is "n/a" (a policy must decide whether that is acceptable; see `citadel.attest.policy.check_tolerances`).
Engine-safe: stdlib + `cryptography`, Python 3.9.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.intel.chain import (
    common_name,
    load_root,
    p256_public_key,
    raw_p256_key,
    require_aware,
    verify_raw_signature,
)
from citadel.attest.intel.collateral import collateral_from_mapping, verify_collateral
from citadel.attest.intel.layouts import SgxReportBody, TdReportBody
from citadel.attest.intel.pck import PckChain, verify_pck_chain
from citadel.attest.intel.quote import Quote, parse_quote
from citadel.attest.intel.tcb import TcbResult, evaluate
from citadel.crypto import digests_equal
from citadel.errors import VerificationError

BUNDLED_ROOT = Path(__file__).resolve().parent.parent / "roots" / "intel_sgx_root_ca.pem"
#: SHA-256 of the DER of the Intel SGX Root CA (published by Intel; checked when the bundled copy loads)
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

RootSpec = Union[x509.Certificate, bytes, str, Path, None]


def load_trusted_root(root: RootSpec = None) -> x509.Certificate:
    """The trust anchor: a certificate, PEM bytes, a PEM file path, or (None) the bundled Intel root."""
    if isinstance(root, x509.Certificate):
        return root
    if isinstance(root, bytes):
        return load_root(root)
    path = BUNDLED_ROOT if root is None else Path(root)
    try:
        cert = load_root(path.read_bytes())
    except OSError as exc:
        raise VerificationError("trust.root", f"cannot read the trusted root {str(path)!r}: {exc}") from None
    if root is None and cert.fingerprint(hashes.SHA256()).hex() != INTEL_SGX_ROOT_CA_SHA256:
        raise VerificationError(
            "trust.root", "the bundled Intel SGX Root CA is not Intel's; reinstall Citadel"
        )
    return cert


def _hex(value: bytes) -> str:
    return value.hex()


def sgx_measurements(body: SgxReportBody) -> Dict[str, str]:
    return {
        "mrenclave": _hex(body.mrenclave),
        "mrsigner": _hex(body.mrsigner),
        "isvprodid": str(body.isv_prod_id),
        "isvsvn": str(body.isv_svn),
        "attributes": _hex(body.attributes),
        "miscselect": _hex(body.miscselect_bytes),
        "cpusvn": _hex(body.cpusvn),
        "configid": _hex(body.config_id),
        "configsvn": str(body.config_svn),
        "isvextprodid": _hex(body.isv_ext_prod_id),
        "isvfamilyid": _hex(body.isv_family_id),
    }


def tdx_measurements(body: TdReportBody) -> Dict[str, str]:
    values = {
        "mrtd": body.mrtd,
        "rtmr0": body.rtmr0,
        "rtmr1": body.rtmr1,
        "rtmr2": body.rtmr2,
        "rtmr3": body.rtmr3,
        "mrconfigid": body.mrconfigid,
        "mrowner": body.mrowner,
        "mrownerconfig": body.mrownerconfig,
        "tdattributes": body.td_attributes,
        "xfam": body.xfam,
        "tee_tcb_svn": body.tee_tcb_svn,
        "mrseam": body.mrseam,
        "mrsignerseam": body.mrsignerseam,
        "seamattributes": body.seam_attributes,
    }
    if body.tee_tcb_svn2:
        values["tee_tcb_svn2"] = body.tee_tcb_svn2
        values["mrservicetd"] = body.mrservicetd
    return {name: _hex(value) for name, value in values.items()}


def _details(quote: Quote, chain: PckChain, tcb: Optional[TcbResult]) -> Dict[str, Any]:
    ext = chain.extensions
    details: Dict[str, Any] = {
        "quote_version": quote.header.version,
        "tee_type": f"{quote.header.tee_type:#x}",
        "body_type": quote.body_type,
        "certification_data_type": quote.outer_cert_type,
        "padding_bytes": quote.padding,
        "pck": {
            "issuer": common_name(chain.ca.subject),
            "fmspc": ext.fmspc.hex(),
            "pceid": ext.pceid.hex(),
            "pcesvn": ext.pcesvn,
            "cpusvn": ext.cpusvn.hex(),
            "tcb_components": list(ext.tcb_components),
            "sgx_type": ext.sgx_type,
        },
        "qe": {"isvsvn": quote.qe_report.isv_svn, "mrsigner": quote.qe_report.mrsigner.hex()},
        "collateral": "verified" if tcb is not None else "none (TCB not evaluated)",
    }
    if tcb is not None:
        details["tcb"] = {
            "platform_status": tcb.platform_status,
            "tcb_date": tcb.tcb_date,
            "qe_status": tcb.qe_status,
            "tdx_module_status": tcb.tdx_module_status,
        }
    return details


class _IntelQuoteVerifier:
    """Shared checks of SGX and TDX quotes; subclasses choose the TEE and the measurements."""

    kind = ""
    tdx = False

    def __init__(self, root: RootSpec = None) -> None:
        self.root = load_trusted_root(root)

    def verify(
        self,
        evidence: bytes,
        *,
        at: _dt.datetime,
        collateral: Optional[Mapping[str, Any]] = None,
    ) -> VerifiedEvidence:
        """Verify `evidence` (a quote) at time `at`, with collateral if given; raise on any failure."""
        at = require_aware(at)
        quote = parse_quote(evidence)
        if quote.is_tdx != self.tdx:
            got = "a TDX" if quote.is_tdx else "an SGX"
            raise VerificationError("quote.tee_type", f"this is {got} quote, not {self.kind.upper()}",
                                    f"verify it with --kind {'tdx' if quote.is_tdx else 'sgx'}")
        chain = verify_pck_chain(quote.pck_chain_pem, self.root, at)
        pck_key = p256_public_key(chain.leaf, "pck.certificate")
        verify_raw_signature(
            pck_key, quote.qe_report_signature, quote.qe_report_raw, "qe_report.signature", "the QE report"
        )
        binding = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
        if not digests_equal(binding, quote.qe_report.report_data[:32]):
            raise VerificationError(
                "qe_report.binding", "the QE report data does not bind the attestation key"
            )
        attestation_key = raw_p256_key(quote.attestation_key, "quote.attestation_key")
        verify_raw_signature(
            attestation_key, quote.signature, quote.signed_data, "quote.signature", "the quote"
        )
        tcb: Optional[TcbResult] = None
        if collateral is not None:
            verified = verify_collateral(collateral_from_mapping(collateral), self.root, chain, at)
            tcb = evaluate(
                verified.tcb_info,
                verified.qe_identity,
                chain.extensions,
                quote.body,
                quote.qe_report,
                quote.header.version,
            )
        body = quote.body
        measurements = tdx_measurements(body) if isinstance(body, TdReportBody) else sgx_measurements(body)
        return VerifiedEvidence(
            kind=self.kind,
            report_data=body.report_data,
            measurements=measurements,
            debug=body.debug,
            tcb_status=tcb.status if tcb is not None else "n/a",
            advisory_ids=tcb.advisory_ids if tcb is not None else (),
            platform=chain.extensions.fmspc.hex(),
            details=_details(quote, chain, tcb),
        )


class SgxVerifier(_IntelQuoteVerifier):
    """Intel SGX DCAP ECDSA quotes (v3, and v4/v5 with an SGX body)."""

    kind = "sgx"
    tdx = False


class TdxVerifier(_IntelQuoteVerifier):
    """Intel TDX quotes (v4 with a TD 1.0 body; v5 with a TD 1.0 or TD 1.5 body)."""

    kind = "tdx"
    tdx = True
