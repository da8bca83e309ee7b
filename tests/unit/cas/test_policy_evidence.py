"""The per-kind reference values and tolerances of a service's `attestation` section: what parses,
what is refused (each defect pointing at its line), the stored (normalized) form, and evaluation of
the kind-independent rules on evidence facts (the real vectors: test_policy_evidence_vectors.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citadel.attest.collect.tpm import engine_pcr_value
from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.policy import TCB_TOLERANCES, check_tolerances, tolerated_statuses
from citadel.cas.errors import PolicyInvalid, Refused
from citadel.cas.policy.evaluate import evaluate
from citadel.cas.policy.kinds import VOCABULARY
from citadel.cas.policy.model import Attestation
from citadel.cas.policy.parse import parse_policy
from citadel.errors import VerificationError

ENGINE = "ab" * 32
MRENCLAVE = "1e" * 32
MRSIGNER = "5a" * 32
MRTD = "7d" * 48
SNP_MEASUREMENT = "c4" * 48


def policy(attestation: str) -> str:
    """A minimal valid session whose one service has this attestation block (6-space indent)."""
    return f"""\
name: hw
version: "1"
services:
  - name: app
    command: app.py
    image: {{key: "{"11" * 32}"}}
    attestation:
{attestation}"""


def attestation(block: str) -> Attestation:
    return parse_policy(policy(block)).policy.services["app"].attestation


def issues(text: str) -> List[Dict[str, Any]]:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, "hw.yaml")
    return list(info.value.issues)


SGX = f"""\
      tee: [sgx]
      sgx:
        mrenclave: ["{MRENCLAVE.upper()}"]
        mrsigner: ["{MRSIGNER}"]
        isvprodid: 7
        isvsvn_min: 2
      tolerate: [sw-hardening-needed, {{advisories: [intel-sa-00615]}}]
"""
TDX = f"""\
      tee: [tdx]
      tdx:
        mrtd: ["{MRTD}"]
        rtmr0: ["{"00" * 48}"]
        mrconfigid: ["{"00" * 48}"]
"""
SNP = f"""\
      tee: [snp]
      snp:
        measurement: ["{SNP_MEASUREMENT}"]
        host_data: ["{"00" * 32}"]
        guest_svn_min: 1
        vmpl: [0]
        minimum_tcb: {{bootloader: 3, tee: 0, snp: 8, microcode: 115}}
        policy: {{smt: false, migrate_ma: false, single_socket: true}}
"""
TPM = f"""\
      tee: [tpm]
      measurements: [{ENGINE}]
      tpm:
        pcrs:
          0: ["{"00" * 32}"]
          7: ["{"77" * 32}", "{"78" * 32}"]
"""


@pytest.mark.parametrize("block", [SGX, TDX, SNP, TPM], ids=["sgx", "tdx", "snp", "tpm"])
def test_each_kind_parses_and_its_stored_form_is_a_valid_policy(block: str) -> None:
    first = parse_policy(policy(block)).doc
    again = parse_policy(json.dumps(first)).doc
    assert again == first


def test_sgx_section_is_typed_and_normalized() -> None:
    att = attestation(SGX)
    refs = att.refs["sgx"]
    assert refs.values == {"mrenclave": (MRENCLAVE,), "mrsigner": (MRSIGNER,), "isvprodid": ("7",)}
    assert refs.minimums == {"isvsvn": 2}
    assert att.tolerate == ("sw-hardening-needed",) and att.advisories == ("INTEL-SA-00615",)


def test_snp_and_tpm_sections_are_typed() -> None:
    snp = attestation(SNP).refs["snp"]
    assert snp.minimum_tcb == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert snp.policy_bits == {"smt": False, "migrate_ma": False, "single_socket": True}
    assert snp.values["vmpl"] == ("0",) and snp.minimums == {"guest_svn": 1}
    tpm = attestation(TPM).refs["tpm"]
    assert tpm.values == {"pcr0": ("00" * 32,), "pcr7": ("77" * 32, "78" * 32)}


def _replace(block: str, old: str, new: str) -> str:
    assert old in block
    return policy(block.replace(old, new, 1))


# (defect, policy text, a word the first message contains, text on the line it points at)
DEFECTS = [
    ("engine_measurement_for_sgx", policy(f"      tee: [sgx]\n      measurements: [{ENGINE}]\n"), "sgx", "tee:"),
    ("nothing_pinned", policy("      tee: [tdx]\n      tolerate: [debug]\n"), "measurements", "attestation:"),
    ("mrenclave_too_short", _replace(SGX, MRENCLAVE.upper(), "abcd"), "abcd", "mrenclave"),
    (
        "mrsigner_without_product",
        _replace(SGX, f'        mrenclave: ["{MRENCLAVE.upper()}"]\n', "").replace("        isvprodid: 7\n", ""),
        "isvprodid",
        "mrsigner",
    ),
    ("unknown_sgx_field", _replace(SGX, "isvsvn_min", "isvsvn_minimum"), "isvsvn_minimum", "isvsvn_minimum"),
    ("tdx_without_mrtd", _replace(TDX, f'        mrtd: ["{MRTD}"]\n', ""), "tdx", "tee:"),
    (
        "rtmr_of_sgx_size",
        _replace(TDX, '"' + "00" * 48 + '"]\n        mrconfigid', '"' + "00" * 32 + '"]\n        mrconfigid'),
        "does not match",
        "rtmr0",
    ),
    ("snp_tcb_part_unknown", _replace(SNP, "microcode: 115", "ucode: 115"), "ucode", "minimum_tcb"),
    ("snp_policy_not_boolean", _replace(SNP, "smt: false", "smt: 0"), "boolean", "policy:"),
    ("snp_vmpl_out_of_range", _replace(SNP, "vmpl: [0]", "vmpl: [4]"), "maximum", "vmpl"),
    ("pcr_index_out_of_range", _replace(TPM, "7: [", "24: ["), "24", "pcrs:"),
    (
        "tpm_engine_not_a_digest",
        _replace(TPM, f"measurements: [{ENGINE}]", "measurements: [abcd]"),
        "64 hex",
        "measurements",
    ),
    ("tpm_without_engine", _replace(TPM, f"      measurements: [{ENGINE}]\n", ""), "PCR", "tee:"),
    ("section_for_a_kind_not_accepted", _replace(TPM, "tee: [tpm]", "tee: [sim]"), "tpm", "tpm:"),
    ("unknown_tolerance", _replace(SGX, "sw-hardening-needed", "sw-hardening"), "sw-hardening", "tolerate"),
    ("malformed_advisory", _replace(SGX, "intel-sa-00615", '"INTEL SA"'), "INTEL SA", "tolerate"),
    (
        "measurement_name_of_no_kind",
        policy(f"      measurements: [{{mrtdd: {MRTD}}}]\n      tee: [tdx]\n"),
        "mrtdd",
        "measurements",
    ),
]


@pytest.mark.parametrize(("text", "word", "line_text"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defects_point_at_their_line(text: str, word: str, line_text: str) -> None:
    first = issues(text)[0]
    assert word.lower() in first["message"].lower(), first
    assert line_text in text.splitlines()[first["line"] - 1], first


def test_measurement_entries_apply_to_the_kinds_that_report_their_names() -> None:
    block = f"""\
      tee: [sim, tdx]
      measurements: [{ENGINE}, {{mrtd: "{MRTD}", rtmr3: "{"33" * 48}"}}]
      tolerate: [sim, unevaluated-tcb]
"""
    att = attestation(block)
    sim = _ev("sim", {"engine": ENGINE})
    tdx = _ev("tdx", {"mrtd": MRTD, "rtmr3": "33" * 48}, tcb="n/a")
    evaluate(att, sim)
    evaluate(att, tdx)
    with pytest.raises(Refused) as info:  # the engine entry says nothing about tdx evidence
        evaluate(att, _ev("tdx", {"mrtd": MRTD, "rtmr3": "34" * 48}, tcb="n/a"))
    assert info.value.code == "measurement_not_accepted" and "rtmr3" in info.value.cause


def _ev(
    kind: str,
    measurements: Dict[str, str],
    *,
    debug: bool = False,
    tcb: str = "UpToDate",
    advisories: tuple = (),
    details: Any = None,
) -> VerifiedEvidence:
    return VerifiedEvidence(kind, b"\0" * 64, measurements, debug, tcb, advisories, "p" * 16, details or {})


def test_tpm_engine_measurement_is_compared_as_pcr23() -> None:
    att = attestation(TPM)
    pcrs = {"pcr0": "00" * 32, "pcr7": "78" * 32, "pcr23": engine_pcr_value(bytes.fromhex(ENGINE)).hex()}
    evaluate(att, _ev("tpm", pcrs, debug=True, tcb="n/a"))  # tpm needs no `debug`: accepting tpm is the decision
    wrong = dict(pcrs, pcr23=engine_pcr_value(bytes(32)).hex())
    with pytest.raises(Refused) as info:
        evaluate(att, _ev("tpm", wrong, debug=True, tcb="n/a"))
    assert info.value.code == "measurement_not_accepted"
    assert "PCR 23 does not match the engine measurement" in info.value.cause
    with pytest.raises(Refused) as boot:
        evaluate(att, _ev("tpm", dict(pcrs, pcr7="79" * 32), debug=True, tcb="n/a"))
    assert boot.value.code == "measurement_not_accepted" and "PCR 7 not accepted" in boot.value.cause
    with pytest.raises(Refused) as raw_pcr:  # the engine measurement itself in PCR 23 is not the extend
        evaluate(att, _ev("tpm", dict(pcrs, pcr23=ENGINE), debug=True, tcb="n/a"))
    assert raw_pcr.value.code == "measurement_not_accepted"


def test_pcr23_pinned_directly_also_works() -> None:
    pcr23 = engine_pcr_value(bytes.fromhex(ENGINE)).hex()
    att = attestation(f'      tee: [tpm]\n      tpm: {{pcrs: {{23: ["{pcr23}"]}}}}\n')
    evaluate(att, _ev("tpm", {"pcr23": pcr23}, debug=True, tcb="n/a"))


def test_a_stored_policy_without_reference_values_fails_closed() -> None:
    """A policy stored before per-kind sections (or hand-edited) that pins nothing for a kind."""
    att = Attestation(tee=("sgx",), measurements=({"engine": ENGINE},), tolerate=(), platforms=None)
    with pytest.raises(Refused) as info:
        evaluate(att, _ev("sgx", {"mrenclave": MRENCLAVE}))
    assert info.value.code == "measurement_not_accepted" and "nothing" in info.value.cause


def test_snp_policy_bits_and_minimums() -> None:
    att = attestation(SNP)
    good = {
        "measurement": SNP_MEASUREMENT,
        "host_data": "00" * 32,
        "guest_svn": "1",
        "vmpl": "0",
        "policy": hex(0x30000 | 1 << 20),
    }
    tcb = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    details = {"reported_tcb": tcb, "current_tcb": dict(tcb, microcode=206), "committed_tcb": tcb}
    with pytest.raises(Refused) as smt:  # SMT (bit 16) is set: the session wants it clear
        evaluate(att, _ev("snp", good, tcb="n/a", details=details))
    assert smt.value.code == "measurement_not_accepted" and "SMT" in smt.value.cause
    fine = dict(good, policy=hex(0x20000 | 1 << 20))
    evaluate(att, _ev("snp", fine, tcb="n/a", details=details))
    with pytest.raises(Refused) as svn:
        evaluate(att, _ev("snp", dict(fine, guest_svn="0"), tcb="n/a", details=details))
    assert "guest_svn 0 is below" in svn.value.cause
    old = dict(details, committed_tcb=dict(tcb, snp=7))
    with pytest.raises(Refused) as low:
        evaluate(att, _ev("snp", fine, tcb="n/a", details=old))
    assert low.value.code == "tcb_not_tolerated" and "committed_tcb snp=7" in low.value.cause


def test_tolerances_match_the_tcb_status_table() -> None:
    for status, needs in TCB_TOLERANCES.items():
        assert status in tolerated_statuses(needs)
        for missing in needs:
            assert status not in tolerated_statuses([t for t in needs if t != missing])
    assert "Revoked" not in tolerated_statuses(["outdated-tcb", "configuration-needed", "sw-hardening-needed"])


def test_advisories_are_an_allow_list_when_given() -> None:
    ev = _ev("sgx", {}, advisories=("INTEL-SA-00289", "INTEL-SA-00615"))
    check_tolerances(ev, False)  # no allow-list: advisories are not judged
    check_tolerances(ev, False, tolerated_advisories=["intel-sa-00289", "INTEL-SA-00615"])
    check_tolerances(ev, False, tolerated_advisories=["*"])
    with pytest.raises(VerificationError) as info:
        check_tolerances(ev, False, tolerated_advisories=["INTEL-SA-00289"])
    assert info.value.check == "policy.advisory" and "INTEL-SA-00615" in info.value.detail
    assert "00289" not in info.value.detail


def test_vocabulary_covers_every_name_a_verifier_reports() -> None:
    from citadel.attest.intel.layouts import SgxReportBody, TdReportBody
    from citadel.attest.intel.verify import sgx_measurements, tdx_measurements

    sgx = sgx_measurements(SgxReportBody.unpack(bytes(384)))
    assert set(sgx) == VOCABULARY["sgx"]
    tdx = tdx_measurements(TdReportBody.unpack(bytes(648)))
    assert set(tdx) == VOCABULARY["tdx"]


_hex = st.text("0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mrenclaves=st.lists(_hex, min_size=1, max_size=3, unique=True),
    svn=st.integers(0, 65535),
    pcrs=st.dictionaries(st.integers(0, 22), st.lists(_hex, min_size=1, max_size=2, unique=True), max_size=4),
    tolerate=st.lists(
        st.sampled_from(["debug", "outdated-tcb", "configuration-needed", "unevaluated-tcb"]), unique=True
    ),
    advisories=st.lists(st.from_regex(r"INTEL-SA-[0-9]{5}", fullmatch=True), max_size=3, unique=True),
)
def test_generated_hardware_policies_normalize_idempotently(
    mrenclaves: List[str], svn: int, pcrs: Dict[int, List[str]], tolerate: List[str], advisories: List[str]
) -> None:
    att: Dict[str, Any] = {
        "tee": ["sgx", "tpm"],
        "measurements": [ENGINE],
        "sgx": {"mrenclave": [m.upper() for m in mrenclaves], "isvsvn_min": svn},
        "tolerate": tolerate + ([{"advisories": advisories}] if advisories else []),
    }
    if pcrs:
        att["tpm"] = {"pcrs": pcrs}
    doc = {
        "name": "gen",
        "version": "1",
        "services": [{"name": "app", "command": "app.py", "image": {"key": "11" * 32}, "attestation": att}],
    }
    first = parse_policy(yaml.safe_dump(doc)).doc
    assert parse_policy(json.dumps(first)).doc == first
    parsed = Attestation.from_doc(first["services"][0]["attestation"])
    assert parsed.refs["sgx"].values["mrenclave"] == tuple(mrenclaves)
    assert sorted(parsed.advisories) == sorted(advisories)
    assert dataclasses.asdict(parsed)["tolerate"] == tuple(tolerate)
