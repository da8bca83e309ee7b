"""Loading SEV-SNP collateral from a certificate file or a collateral cache directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from citadel.attest.snp import collateral
from citadel.attest.snp.certs import ROOTS_DIR
from citadel.attest.snp.layouts import parse_report
from citadel.attest.snp.verify import SnpVerifier
from citadel.errors import VerificationError
from tests.unit.attest.snp.conftest import PINNED, read_report, read_vcek

A = "milan_report_v2"


def _cache_with(tmp_path: Path, snp_dir: Path, name: str) -> Path:
    report = parse_report(read_report(snp_dir, name))
    path = collateral.vcek_path(tmp_path, "Milan", report.chip_id, report.reported_tcb)
    path.parent.mkdir(parents=True)
    path.write_bytes(read_vcek(snp_dir, name))
    shutil.copy(ROOTS_DIR / "ask_ark_milan.pem", collateral.chain_path(tmp_path, "Milan", vlek=False))
    return tmp_path


def test_cache_layout_names_chip_and_tcb(snp_dir: Path, tmp_path: Path) -> None:
    report = parse_report(read_report(snp_dir, A))
    path = collateral.vcek_path(tmp_path, "Milan", report.chip_id, report.reported_tcb)
    assert path.relative_to(tmp_path).as_posix() == f"amd/Milan/vcek/{report.chip_id.hex()}/0200000000000544.der"


def test_a_v2_report_finds_its_vcek_in_a_cache(snp_dir: Path, tmp_path: Path) -> None:
    cache = _cache_with(tmp_path, snp_dir, A)
    found = collateral.load_collateral(cache, read_report(snp_dir, A))
    assert found == {
        "vcek": read_vcek(snp_dir, A),
        "cert_chain": (ROOTS_DIR / "ask_ark_milan.pem").read_bytes(),
    }
    assert SnpVerifier().verify(read_report(snp_dir, A), at=PINNED, collateral=found).debug


def test_a_file_is_the_vcek_itself(snp_dir: Path) -> None:
    found = collateral.load_collateral(snp_dir / f"{A}.vcek.der", read_report(snp_dir, A))
    assert found == {"vcek": read_vcek(snp_dir, A)}


def test_a_cache_without_this_chip_is_refused(snp_dir: Path, tmp_path: Path) -> None:
    cache = _cache_with(tmp_path, snp_dir, "milan_report_v2_b")
    with pytest.raises(VerificationError) as caught:
        collateral.load_collateral(cache, read_report(snp_dir, A))
    assert caught.value.check == "snp.collateral" and "collateral fetch" in caught.value.remedy


def test_a_missing_path_is_refused(snp_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as caught:
        collateral.load_collateral(tmp_path / "absent", read_report(snp_dir, A))
    assert caught.value.check == "snp.collateral"


def test_turin_names_chips_by_their_first_8_bytes(snp_dir: Path) -> None:
    report = parse_report(read_report(snp_dir, A))
    assert collateral.kds_hwid(report, "Turin") == report.chip_id[:8]
    assert collateral.kds_hwid(report, "Milan") == report.chip_id
