"""`citadel evidence verify` and `pack-tpm` as users run them: the installed console script, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.attest.snp.forge import FakeAmd, der, sign_report

SNP_AT = "2025-06-01T00:00:00Z"
INTEL_AT = "2025-07-01T00:00:00Z"  # inside every window of the dcap-qvl collateral


def _flip(path: Path, offset: int, out: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def _verify(run_citadel, *args: object):
    return run_citadel(["evidence", "verify", *map(str, args)])


# -- SEV-SNP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "debug", "policy", "measurement"),
    [
        ("milan_report_v2", "YES", "0xb0000", "b07af962"),
        ("milan_report_v2_b", "no", "0x3001f", "a1f39304"),
    ],
)
def test_snp_report_verifies_and_prints_its_facts(run_citadel, vectors_dir, name, debug, policy, measurement):
    snp = vectors_dir / "snp"
    result = _verify(
        run_citadel,
        snp / f"{name}.bin",
        "--kind",
        "snp",
        "--collateral",
        snp / f"{name}.vcek.der",
        "--at",
        SNP_AT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("verdict:      verified (snp")
    assert f"debug:        {debug}" in out
    assert "tcb status:   n/a" in out
    assert f"policy             {policy}" in out
    assert f"measurement        {measurement}" in out
    assert "report data:  " in out


def test_snp_json_parses(run_citadel, vectors_dir):
    snp = vectors_dir / "snp"
    result = _verify(
        run_citadel,
        snp / "milan_report_v2_b.bin",
        "--kind",
        "snp",
        "--collateral",
        snp / "milan_report_v2_b.vcek.der",
        "--at",
        SNP_AT,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "verified" and doc["kind"] == "snp" and doc["debug"] is False
    assert doc["measurements"]["guest_svn"] == "4" and doc["measurements"]["policy"] == "0x3001f"
    assert doc["measurements"]["measurement"].endswith("50d3d38c")
    assert doc["details"]["reported_tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert doc["report_data"].startswith("ec6c52d7")


def test_snp_report_with_a_flipped_measurement_exits_1_with_the_reason(run_citadel, vectors_dir, tmp_path):
    snp = vectors_dir / "snp"
    forged = _flip(snp / "milan_report_v2.bin", 0x90, tmp_path / "forged.bin")
    result = _verify(
        run_citadel, forged, "--kind", "snp", "--collateral", snp / "milan_report_v2.vcek.der", "--at", SNP_AT
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("citadel: error: snp.report_signature: ")
    assert "Traceback" not in result.stderr


def test_snp_refusal_in_json_names_the_check(run_citadel, vectors_dir, tmp_path):
    snp = vectors_dir / "snp"
    result = _verify(
        run_citadel,
        snp / "milan_report_v2.bin",
        "--kind",
        "snp",
        "--collateral",
        snp / "milan_report_v2_b.vcek.der",
        "--at",
        SNP_AT,
        "--json",
    )
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "refused" and doc["check"] == "snp.chip_id"


def test_snp_without_a_vcek_says_how_to_get_one(run_citadel, vectors_dir):
    result = _verify(run_citadel, vectors_dir / "snp" / "milan_report_v2.bin", "--kind", "snp", "--at", SNP_AT)
    assert result.returncode == 1
    assert "snp.collateral" in result.stderr and "collateral fetch" in result.stderr


def test_snp_report_data_option_checks_the_binding(run_citadel, vectors_dir):
    snp = vectors_dir / "snp"
    base = [
        snp / "milan_report_v2.bin",
        "--kind",
        "snp",
        "--collateral",
        snp / "milan_report_v2.vcek.der",
        "--at",
        SNP_AT,
    ]
    assert _verify(run_citadel, *base, "--report-data", "0102030405").returncode == 0
    wrong = _verify(run_citadel, *base, "--report-data", "0102030406")
    assert wrong.returncode == 1 and "report_data" in wrong.stderr


def test_self_made_root_is_refused_unless_explicitly_trusted(run_citadel, vectors_dir, tmp_path):
    fake, key = FakeAmd("Milan"), ec.generate_private_key(ec.SECP384R1())
    genuine = (vectors_dir / "snp" / "milan_report_v2.bin").read_bytes()
    (tmp_path / "r.bin").write_bytes(sign_report(genuine, key))
    (tmp_path / "vcek.der").write_bytes(
        der(fake.leaf(key, {"bl": 2, "tee": 0, "snp": 5, "ucode": 0x44}, hwid=genuine[0x1A0:0x1E0]))
    )
    (tmp_path / "fake_chain.pem").write_bytes(fake.bundle)
    base = [tmp_path / "r.bin", "--kind", "snp", "--collateral", tmp_path / "vcek.der", "--at", SNP_AT]
    refused = _verify(run_citadel, *base)
    assert refused.returncode == 1 and "snp.vcek_signature" in refused.stderr
    trusted = _verify(run_citadel, *base, "--amd-chain", tmp_path / "fake_chain.pem")
    assert trusted.returncode == 0, trusted.stderr


# -- TPM -------------------------------------------------------------------------------------------


@pytest.fixture
def swtpm_container(run_citadel, vectors_dir, tmp_path) -> Path:
    tpm = vectors_dir / "tpm"
    out = tmp_path / "swtpm.json"
    result = run_citadel(
        [
            "evidence",
            "pack-tpm",
            "--attest",
            str(tpm / "swtpm_quote.attest"),
            "--signature",
            str(tpm / "swtpm_quote.sig"),
            "--pcrs",
            str(tpm / "swtpm_quote.pcrs"),
            "--ak",
            str(tpm / "swtpm_ak.pem"),
            "-o",
            str(out),
        ]
    )
    assert result.returncode == 0, result.stderr
    return out


def test_tpm_quote_verifies_with_its_pinned_ak(run_citadel, vectors_dir, swtpm_container):
    result = _verify(run_citadel, swtpm_container, "--kind", "tpm", "--ak", vectors_dir / "tpm" / "swtpm_ak.pem")
    assert result.returncode == 0, result.stderr
    assert "pcr16  9dbb22387e019c04da95477333546082ce313152c4a7f8a6e1d5f0c77f4fb6f0" in result.stdout
    assert "debug:        cannot be ruled out" in result.stdout
    assert "report data:  db1db298db6d60e6385b7231743e9c3056a18003" in result.stdout


def test_tpm_quote_without_a_pinned_ak_is_refused(run_citadel, swtpm_container):
    result = _verify(run_citadel, swtpm_container, "--kind", "tpm")
    assert result.returncode == 1 and "tpm.ak_trust" in result.stderr and "--ak" in result.stderr


def test_tpm_quote_with_a_changed_pcr_value_is_refused(run_citadel, vectors_dir, swtpm_container, tmp_path):
    doc = json.loads(swtpm_container.read_text())
    doc["pcrs"]["sha256"]["16"] = "00" * 32
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    result = _verify(run_citadel, forged, "--kind", "tpm", "--ak", vectors_dir / "tpm" / "swtpm_ak.pem", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["check"] == "tpm.pcr_digest"


def test_trustee_evidence_packs_and_verifies(run_citadel, vectors_dir, tmp_path):
    out, ak = tmp_path / "t.json", tmp_path / "ak.pem"
    packed = run_citadel(
        ["evidence", "pack-tpm", "--trustee", str(vectors_dir / "tpm" / "tpm_evidence.json"), "-o", str(out)]
    )
    assert packed.returncode == 0, packed.stderr
    ak.write_text(json.loads(out.read_text())["ak_pem"])
    result = _verify(run_citadel, out, "--kind", "tpm", "--ak", ak, "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["measurements"]) == 24


# -- Intel, through the same command -----------------------------------------------------------


def test_sgx_quote_verifies_with_collateral(run_citadel, vectors_dir):
    sgx = vectors_dir / "sgx"
    result = _verify(
        run_citadel,
        sgx / "prod_quote_v3.bin",
        "--kind",
        "sgx",
        "--collateral",
        sgx / "prod_quote_v3.collateral.json",
        "--at",
        INTEL_AT,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["measurements"]["mrenclave"].startswith("33d8736d") and doc["measurements"]["mrenclave"].endswith(
        "52fbb"
    )
    assert doc["measurements"]["mrsigner"].startswith("815f42f1")
    assert doc["debug"] is False and doc["tcb_status"] != "UpToDate"
    assert bytes.fromhex(doc["report_data"]).rstrip(b"\0") == b"Hello, world!"


def test_tdx_quote_prints_mrtd_and_rtmrs(run_citadel, vectors_dir):
    tdx = vectors_dir / "tdx"
    result = _verify(
        run_citadel,
        tdx / "quote_v4.bin",
        "--kind",
        "tdx",
        "--collateral",
        tdx / "quote_v4.collateral.json",
        "--at",
        INTEL_AT,
    )
    assert result.returncode == 0, result.stderr
    assert "mrtd            91eb2b44" in result.stdout and "rtmr3" in result.stdout
    assert "tcb status:   UpToDate" in result.stdout


# -- usage errors ------------------------------------------------------------------------------


def test_bad_time_is_a_usage_error(run_citadel, vectors_dir):
    result = _verify(run_citadel, vectors_dir / "snp" / "milan_report_v2.bin", "--kind", "snp", "--at", "yesterday")
    assert result.returncode == 2 and "ISO 8601" in result.stderr


def test_missing_evidence_file_is_a_usage_error(run_citadel, tmp_path):
    result = _verify(run_citadel, tmp_path / "absent.bin", "--kind", "snp")
    assert result.returncode == 2 and "cannot read evidence" in result.stderr
