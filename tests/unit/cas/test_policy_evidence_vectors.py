"""Session reference values and tolerances evaluated on what the real verifiers report for the real
evidence in ../shared/vectors (SGX, TDX, SEV-SNP, TPM), at the times their collateral was valid.

Each case is a session policy fragment and the refusal it must give (or none), named after the
defect it models: a wrong MRENCLAVE, a debug enclave, a TCB needing a tolerance the session lacks...
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.registry import load_collateral, verifier_for
from citadel.attest.tpm.container import TpmEvidence, encode_container, from_tpm2_tools
from citadel.cas.errors import Refused
from citadel.cas.policy.evaluate import evaluate
from citadel.cas.policy.parse import parse_policy

VECTORS = (Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors").resolve()
INTEL_AT = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)  # the dcap-qvl collateral is valid then
SNP_AT = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)  # inside both VCEKs' validity

SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"


def _vector(path: str) -> bytes:
    if not (VECTORS / "README.md").is_file():
        pytest.fail(f"test vectors not found at {VECTORS}: clone the shared/ tree beside the repository")
    return (VECTORS / path).read_bytes()


def _verified(kind: str, path: str, at: dt.datetime, collateral: Optional[str] = None) -> VerifiedEvidence:
    evidence = _vector(path)
    col = load_collateral(kind, VECTORS / collateral, evidence) if collateral else None
    return verifier_for(kind).verify(evidence, at=at, collateral=col)


@pytest.fixture(scope="module")
def sgx() -> VerifiedEvidence:
    """ConfigurationAndSWHardeningNeeded, INTEL-SA-00289 and INTEL-SA-00615, production enclave."""
    return _verified("sgx", "sgx/prod_quote_v3.bin", INTEL_AT, "sgx/prod_quote_v3.collateral.json")


@pytest.fixture(scope="module")
def sgx_debug() -> VerifiedEvidence:
    return _verified("sgx", "sgx/debug_quote_v3_occlum.bin", INTEL_AT)


@pytest.fixture(scope="module")
def tdx() -> VerifiedEvidence:
    """UpToDate."""
    return _verified("tdx", "tdx/quote_v4.bin", INTEL_AT, "tdx/quote_v4.collateral.json")


@pytest.fixture(scope="module")
def snp_debug() -> VerifiedEvidence:
    """Guest policy 0xb0000 (debug), TCB bootloader 2, tee 0, snp 5, microcode 68."""
    return _verified("snp", "snp/milan_report_v2.bin", SNP_AT, "snp/milan_report_v2.vcek.der")


@pytest.fixture(scope="module")
def snp() -> VerifiedEvidence:
    """Guest policy 0x3001f (SMT allowed, not debug), guest_svn 4, TCB 3/0/8/115 (current microcode 206)."""
    return _verified("snp", "snp/milan_report_v2_b.bin", SNP_AT, "snp/milan_report_v2_b.vcek.der")


@pytest.fixture(scope="module")
def tpm() -> VerifiedEvidence:
    """keylime's swtpm quote: sha256 PCRs 15, 16, 22."""
    ak = _vector("tpm/swtpm_ak.pem")
    evidence: TpmEvidence = from_tpm2_tools(
        _vector("tpm/swtpm_quote.attest"), _vector("tpm/swtpm_quote.sig"), _vector("tpm/swtpm_quote.pcrs"), ak
    )
    return verifier_for("tpm", trusted_aks=[ak]).verify(encode_container(evidence), at=SNP_AT)


def _att(block: str) -> Any:
    text = f"""\
name: vectors
version: "1"
services:
  - name: app
    command: app.py
    image: {{key: "{"11" * 32}"}}
    attestation:
{block}"""
    return parse_policy(text).policy.services["app"].attestation


def _check(block: str, ev: VerifiedEvidence, code: Optional[str], words: str = "") -> None:
    att = _att(block)
    if code is None:
        evaluate(att, ev)
        return
    with pytest.raises(Refused) as info:
        evaluate(att, ev)
    assert info.value.code == code, info.value.cause
    assert words in info.value.cause, info.value.cause
    assert info.value.remedy


SGX_TOLERANT = "configuration-needed, sw-hardening-needed, {advisories: [INTEL-SA-00289, INTEL-SA-00615]}"
SGX_CASES = [
    (
        "mrenclave_accepted",
        f'tee: [sgx]\nsgx: {{mrenclave: ["{SGX_MRENCLAVE}"]}}\ntolerate: [{SGX_TOLERANT}]',
        None,
        "",
    ),
    (
        "mrenclave_not_accepted",
        f'tee: [sgx]\nsgx: {{mrenclave: ["{"00" * 32}"]}}\ntolerate: [{SGX_TOLERANT}]',
        "measurement_not_accepted",
        "mrenclave not accepted",
    ),
    (
        "mrsigner_and_product_accepted",
        f'tee: [sgx]\nsgx: {{mrsigner: ["{SGX_MRSIGNER}"], isvprodid: 0, isvsvn_min: 0}}\ntolerate: [{SGX_TOLERANT}]',
        None,
        "",
    ),
    (
        "other_product_of_the_signer",
        f'tee: [sgx]\nsgx: {{mrsigner: ["{SGX_MRSIGNER}"], isvprodid: 1}}\ntolerate: [{SGX_TOLERANT}]',
        "measurement_not_accepted",
        "isvprodid not accepted",
    ),
    (
        "enclave_version_too_old",
        f'tee: [sgx]\nsgx: {{mrsigner: ["{SGX_MRSIGNER}"], isvprodid: 0, isvsvn_min: 1}}\ntolerate: [{SGX_TOLERANT}]',
        "measurement_not_accepted",
        "isvsvn 0 is below the session's minimum 1",
    ),
    (
        "old_style_measurement_entry",
        f"tee: [sgx]\nmeasurements: [{{mrenclave: {SGX_MRENCLAVE}}}]\ntolerate: [{SGX_TOLERANT}]",
        None,
        "",
    ),
    (
        "tcb_needing_configuration_not_tolerated",
        f'tee: [sgx]\nsgx: {{mrenclave: ["{SGX_MRENCLAVE}"]}}\n'
        "tolerate: [sw-hardening-needed, {advisories: ['*']}]",
        "tcb_not_tolerated",
        "TCB status ConfigurationAndSWHardeningNeeded not tolerated (add configuration-needed and sw-hardening-needed)",
    ),
    (
        "advisory_not_tolerated",
        f'tee: [sgx]\nsgx: {{mrenclave: ["{SGX_MRENCLAVE}"]}}\n'
        "tolerate: [configuration-needed, sw-hardening-needed, {advisories: [INTEL-SA-00289]}]",
        "tcb_not_tolerated",
        "INTEL-SA-00615",
    ),
    (
        "advisories_not_listed",
        f'tee: [sgx]\nsgx: {{mrenclave: ["{SGX_MRENCLAVE}"]}}\ntolerate: [configuration-needed, sw-hardening-needed]',
        "tcb_not_tolerated",
        "INTEL-SA-00289, INTEL-SA-00615",
    ),
    (
        "any_advisory_tolerated",
        f'tee: [sgx]\nsgx: {{mrenclave: ["{SGX_MRENCLAVE}"]}}\n'
        "tolerate: [configuration-needed, sw-hardening-needed, {advisories: ['*']}]",
        None,
        "",
    ),
    ("sgx_not_among_the_kinds", f'tee: [tdx]\ntdx: {{mrtd: ["{"00" * 48}"]}}', "tee_not_accepted", "sgx evidence"),
]


def _indent(block: str) -> str:
    return "".join(f"      {line}\n" for line in block.splitlines())


@pytest.mark.parametrize(("block", "code", "words"), [c[1:] for c in SGX_CASES], ids=[c[0] for c in SGX_CASES])
def test_sgx_production_quote(sgx: VerifiedEvidence, block: str, code: Optional[str], words: str) -> None:
    _check(_indent(block), sgx, code, words)


def test_sgx_quote_without_collateral_needs_unevaluated_tcb(sgx: VerifiedEvidence) -> None:
    bare = _verified("sgx", "sgx/prod_quote_v3.bin", INTEL_AT)
    assert bare.tcb_status == "n/a"
    pin = f'tee: [sgx]\nsgx: {{mrenclave: ["{SGX_MRENCLAVE}"]}}'
    _check(_indent(pin), bare, "tcb_not_tolerated", "without TCB collateral (add unevaluated-tcb)")
    _check(_indent(pin + "\ntolerate: [unevaluated-tcb]"), bare, None)


def test_sgx_debug_quote_is_refused_unless_debug_is_tolerated(sgx_debug: VerifiedEvidence) -> None:
    assert sgx_debug.debug
    pin = f'tee: [sgx]\nsgx: {{mrenclave: ["{sgx_debug.measurements["mrenclave"]}"]}}'
    refused = "debug enclave not tolerated"
    _check(_indent(pin + "\ntolerate: [unevaluated-tcb]"), sgx_debug, "debug_not_tolerated", refused)
    _check(_indent(pin + "\ntolerate: [unevaluated-tcb, debug]"), sgx_debug, None)


def test_tdx_quote(tdx: VerifiedEvidence) -> None:
    regs = tdx.measurements
    pins = f'tdx: {{mrtd: ["{regs["mrtd"]}"], rtmr0: ["{regs["rtmr0"]}"], rtmr3: ["{regs["rtmr3"]}"]}}'
    _check(_indent(f"tee: [tdx]\n{pins}"), tdx, None)
    wrong = pins.replace(regs["rtmr3"], "ee" * 48)
    _check(_indent(f"tee: [tdx]\n{wrong}"), tdx, "measurement_not_accepted", "rtmr3 not accepted")
    outdated = dataclasses.replace(tdx, tcb_status="OutOfDate", advisory_ids=("INTEL-SA-00837",))
    _check(
        _indent(f"tee: [tdx]\n{pins}"),
        outdated,
        "tcb_not_tolerated",
        "TCB status OutOfDate not tolerated (add outdated-tcb)",
    )
    _check(_indent(f"tee: [tdx]\n{pins}\ntolerate: [outdated-tcb, {{advisories: [INTEL-SA-00837]}}]"), outdated, None)
    revoked = dataclasses.replace(tdx, tcb_status="Revoked")
    everything = "tolerate: [outdated-tcb, configuration-needed, sw-hardening-needed, unevaluated-tcb, debug]"
    _check(_indent(f"tee: [tdx]\n{pins}\n{everything}"), revoked, "tcb_not_tolerated", "revoked")


def test_snp_report_reference_values(snp: VerifiedEvidence) -> None:
    m = snp.measurements
    base = f'tee: [snp]\nsnp:\n  measurement: ["{m["measurement"]}"]\n  host_data: ["{m["host_data"]}"]'
    _check(_indent(base + "\n  guest_svn_min: 4\n  vmpl: [0]"), snp, None)
    _check(
        _indent(base.replace(m["measurement"], "00" * 48)), snp, "measurement_not_accepted", "measurement not accepted"
    )
    _check(_indent(base + "\n  guest_svn_min: 5"), snp, "measurement_not_accepted", "guest_svn 4 is below")
    _check(_indent(base + "\n  vmpl: [1]"), snp, "measurement_not_accepted", "vmpl not accepted")
    _check(_indent(base + "\n  policy: {smt: false}"), snp, "measurement_not_accepted", "SMT is set")
    _check(_indent(base + "\n  policy: {smt: true, migrate_ma: false, single_socket: false}"), snp, None)


def test_snp_minimum_tcb(snp: VerifiedEvidence) -> None:
    base = f'tee: [snp]\nsnp:\n  measurement: ["{snp.measurements["measurement"]}"]\n  minimum_tcb: '
    _check(_indent(base + "{bootloader: 3, tee: 0, snp: 8, microcode: 115}"), snp, None)
    # the current microcode is 206, but the committed and reported TCB (what the VCEK signs) are 115
    _check(_indent(base + "{microcode: 116}"), snp, "tcb_not_tolerated", "reported_tcb microcode=115 is below")
    _check(_indent(base + "{snp: 9}"), snp, "tcb_not_tolerated", "snp=8 is below the session's minimum_tcb snp=9")


def test_snp_debug_guest(snp_debug: VerifiedEvidence) -> None:
    assert snp_debug.debug
    pin = f'tee: [snp]\nsnp: {{measurement: ["{snp_debug.measurements["measurement"]}"]}}'
    _check(_indent(pin), snp_debug, "debug_not_tolerated", "debug guest not tolerated")
    _check(_indent(pin + "\ntolerate: [debug]"), snp_debug, None)
    old = pin[:-1] + ", minimum_tcb: {snp: 8}}"
    _check(_indent(old + "\ntolerate: [debug]"), snp_debug, "tcb_not_tolerated", "snp=5 is below")


def test_tpm_quote(tpm: VerifiedEvidence) -> None:
    pcr16 = tpm.measurements["pcr16"]
    _check(
        _indent(f'tee: [tpm]\ntpm: {{pcrs: {{16: ["{pcr16}"], 23: ["{"00" * 32}"]}}}}'),
        tpm,
        "measurement_not_accepted",
        "PCR 23 not accepted",
    )
    _check(
        _indent(f"tee: [tpm]\nmeasurements: [{'ab' * 32}]"),
        tpm,
        "measurement_not_accepted",
        "PCR 23 does not match the engine measurement",
    )
    # pinned through a named entry (no engine): a debug=True quote needs no `debug` tolerance
    _check(
        _indent(f"tee: [tpm]\nmeasurements: [{{pcr16: {pcr16}, pcr23: {'00' * 32}}}]"),
        tpm,
        "measurement_not_accepted",
        "measurement not accepted",
    )
    assert tpm.debug is True


def test_audit_facts_of_a_vector_are_json(sgx: VerifiedEvidence) -> None:
    """The facts the CAS audits for hardware evidence serialize (measurements, advisories)."""
    facts: Dict[str, Any] = {"measurements": dict(sgx.measurements), "advisories": list(sgx.advisory_ids)}
    assert json.loads(json.dumps(facts))["advisories"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
