"""Real Intel quotes from ../shared/vectors verify with the facts their README lists."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Dict

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from citadel.attest.evidence import Verifier
from citadel.attest.intel import SgxVerifier, TdxVerifier
from citadel.attest.intel.collateral import (
    collateral_from_mapping,
    verify_crl,
    verify_qe_identity,
    verify_tcb_info,
)
from citadel.attest.intel.pck import verify_pck_chain
from citadel.attest.intel.policy import check_tolerances
from citadel.attest.intel.quote import parse_quote
from citadel.attest.intel.store import collateral_from_pcs
from citadel.attest.intel.tcb import evaluate
from citadel.attest.intel.verify import BUNDLED_ROOT, INTEL_SGX_ROOT_CA_SHA256
from citadel.errors import VerificationError
from tests.unit.attest.intel.conftest import PINNED, PINNED_B


def test_bundled_root_is_the_vectors_intel_root(intel_root_pem: bytes) -> None:
    bundled = x509.load_pem_x509_certificate(BUNDLED_ROOT.read_bytes())
    assert bundled == x509.load_pem_x509_certificate(intel_root_pem)
    assert bundled.fingerprint(hashes.SHA256()).hex() == INTEL_SGX_ROOT_CA_SHA256


def test_verifiers_satisfy_the_protocol() -> None:
    sgx: Verifier = SgxVerifier()
    tdx: Verifier = TdxVerifier()
    assert (sgx.kind, tdx.kind) == ("sgx", "tdx")


def test_sgx_production_quote_verifies_with_readme_facts(
    sgx_quote: bytes, sgx_collateral: Dict[str, Any]
) -> None:
    result = SgxVerifier().verify(sgx_quote, at=PINNED, collateral=sgx_collateral)
    assert result.kind == "sgx"
    assert result.measurements["mrenclave"].startswith("33d8736d")
    assert result.measurements["mrenclave"].endswith("52fbb")
    assert result.measurements["mrsigner"].startswith("815f42f1")
    assert result.measurements["mrsigner"].endswith("3e0e6")
    assert result.debug is False
    assert result.report_data == b"Hello, world!".ljust(64, b"\0")
    assert result.platform == "00a067110000"
    assert result.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert result.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert result.details["quote_version"] == 3
    assert result.details["certification_data_type"] == 5
    assert result.details["tcb"]["qe_status"] == "UpToDate"


def test_sgx_quote_verifies_with_an_explicit_root(sgx_quote: bytes, intel_root_pem: bytes) -> None:
    result = SgxVerifier(intel_root_pem).verify(sgx_quote, at=PINNED)
    assert result.tcb_status == "n/a"
    assert result.details["collateral"].startswith("none")


def test_debug_quote_reports_debug_and_is_refused_unless_tolerated(debug_quote: bytes) -> None:
    result = SgxVerifier().verify(debug_quote, at=PINNED)
    assert result.debug is True
    assert result.report_data == b"test".ljust(64, b"\0")
    with pytest.raises(VerificationError) as err:
        check_tolerances(result, allow_debug=False, allow_unevaluated_tcb=True)
    assert err.value.check == "policy.debug"
    check_tolerances(result, allow_debug=True, allow_unevaluated_tcb=True)


def test_tdx_quote_v4_verifies_with_readme_facts(tdx_quote: bytes, tdx_collateral: Dict[str, Any]) -> None:
    result = TdxVerifier().verify(tdx_quote, at=PINNED, collateral=tdx_collateral)
    assert result.kind == "tdx"
    assert result.measurements["mrtd"].startswith("91eb2b44")
    assert result.measurements["mrtd"].endswith("3118b7")
    assert result.platform == "b0c06f000000"
    assert result.tcb_status == "UpToDate"
    assert result.advisory_ids == ()
    assert result.debug is False
    assert len(result.report_data) == 64
    assert result.details["padding_bytes"] == 70
    assert result.details["certification_data_type"] == 6
    assert result.details["tcb"]["tdx_module_status"] == "UpToDate"
    assert set(result.measurements) >= {
        "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig",
        "tdattributes", "xfam", "tee_tcb_svn",
    }  # fmt: skip


def test_tdx_quote_b_verifies_with_readme_facts(tdx_quote_b: bytes) -> None:
    result = TdxVerifier().verify(tdx_quote_b, at=PINNED_B)
    assert result.measurements["mrtd"].startswith("21e8dead")
    assert result.measurements["mrtd"].endswith("bb1e88")
    assert result.platform == "00a06d080000"
    assert result.details["padding_bytes"] == 70


def _quote_b_collateral(vectors_dir: Path, tdx_collateral: Dict[str, Any]) -> Dict[str, Any]:
    return collateral_from_pcs(
        tcb_info_body=(vectors_dir / "tdx" / "quote_v4_b.tcbInfo.json").read_bytes(),
        qe_identity_body=(vectors_dir / "tdx" / "quote_v4_b.qeIdentity.json").read_bytes(),
        issuer_chain=tdx_collateral["tcb_info_issuer_chain"],
        pck_crl=tdx_collateral["pck_crl"],
        root_ca_crl=tdx_collateral["root_ca_crl"],
    )


def test_tdx_quote_b_pcs_responses_verify_and_evaluate(
    vectors_dir: Path, tdx_collateral: Dict[str, Any], tdx_quote_b: bytes
) -> None:
    """The PCS responses beside quote_v4_b verify (signature over the exact member text) and evaluate."""
    verifier = TdxVerifier()
    col = collateral_from_mapping(_quote_b_collateral(vectors_dir, tdx_collateral))
    root_crl = verify_crl(col.root_ca_crl, verifier.root, PINNED_B, "the root CA CRL")
    tcb_info = verify_tcb_info(
        col.tcb_info_json,
        col.tcb_info_signature,
        col.tcb_info_issuer_chain,
        verifier.root,
        root_crl,
        PINNED_B,
    )
    identity = verify_qe_identity(
        col.qe_identity_json,
        col.qe_identity_signature,
        col.qe_identity_issuer_chain,
        verifier.root,
        root_crl,
        PINNED_B,
    )
    quote = parse_quote(tdx_quote_b)
    chain = verify_pck_chain(quote.pck_chain_pem, verifier.root, PINNED_B)
    result = evaluate(tcb_info, identity, chain.extensions, quote.body, quote.qe_report, 4)
    # PCESVN 11 in the PCK certificate is below the newest level's 13: the older level applies.
    assert chain.extensions.pcesvn == 11
    assert result.status == "OutOfDate"
    assert result.tdx_module_status == "UpToDate"  # TDX_03, module SVN 5 >= 3
    assert result.qe_status == "UpToDate"


def test_tdx_quote_b_with_june_pck_crl_is_refused_in_november(
    vectors_dir: Path, tdx_collateral: Dict[str, Any], tdx_quote_b: bytes
) -> None:
    collateral = _quote_b_collateral(vectors_dir, tdx_collateral)
    with pytest.raises(VerificationError) as err:
        TdxVerifier().verify(tdx_quote_b, at=PINNED_B, collateral=collateral)
    assert err.value.check == "crl.expired"


@pytest.mark.parametrize("which", ["sgx", "tdx"])
def test_collateral_past_next_update_is_refused_now_and_accepted_at_pinned_time(
    which: str,
    sgx_quote: bytes,
    sgx_collateral: Dict[str, Any],
    tdx_quote: bytes,
    tdx_collateral: Dict[str, Any],
) -> None:
    verifier, quote, collateral = (
        (SgxVerifier(), sgx_quote, sgx_collateral)
        if which == "sgx"
        else (TdxVerifier(), tdx_quote, tdx_collateral)
    )
    now = dt.datetime.now(dt.timezone.utc)
    with pytest.raises(VerificationError) as err:
        verifier.verify(quote, at=now, collateral=collateral)
    assert err.value.check == "crl.expired"  # the PCK CRL (next update 2025-07-19) is checked first
    assert verifier.verify(quote, at=PINNED, collateral=collateral).tcb_status != "n/a"


def test_collateral_not_yet_issued_is_refused(sgx_quote: bytes, sgx_collateral: Dict[str, Any]) -> None:
    """2025-06-01 predates this collateral (issued 2025-06-19): the PCK CRL is not valid yet."""
    early = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(VerificationError) as err:
        SgxVerifier().verify(sgx_quote, at=early, collateral=sgx_collateral)
    assert err.value.check == "crl.expired"


def test_sgx_quote_given_to_tdx_verifier_is_refused(sgx_quote: bytes, tdx_quote: bytes) -> None:
    with pytest.raises(VerificationError) as err:
        TdxVerifier().verify(sgx_quote, at=PINNED)
    assert err.value.check == "quote.tee_type"
    with pytest.raises(VerificationError) as err:
        SgxVerifier().verify(tdx_quote, at=PINNED)
    assert err.value.check == "quote.tee_type"


def test_naive_verification_time_is_a_programming_error(sgx_quote: bytes) -> None:
    with pytest.raises(ValueError):
        SgxVerifier().verify(sgx_quote, at=dt.datetime(2025, 7, 1))


def test_pck_certificate_lapsed_by_2031_is_refused(sgx_quote: bytes) -> None:
    """The PCK leaf of the SGX vector is valid until 2030-09-20."""
    with pytest.raises(VerificationError) as err:
        SgxVerifier().verify(sgx_quote, at=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc))
    assert err.value.check == "pck.expired"
