"""verifier_for / load_collateral: every kind resolves, unknown kinds are usage errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from citadel.attest import registry
from citadel.attest.evidence import KINDS, VerifiedEvidence
from citadel.errors import UsageError, VerificationError

REPO = Path(__file__).resolve().parents[3]
VECTORS = (REPO.parent / "shared" / "vectors").resolve()


def test_every_kind_has_a_verifier() -> None:
    assert set(registry.VERIFIERS) == set(KINDS)


@pytest.mark.parametrize("kind", ["sgx", "tdx", "snp", "tpm"])
def test_verifier_for_builds_the_kind_with_default_trust(kind: str) -> None:
    assert registry.verifier_for(kind).kind == kind


def test_unknown_kind_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        registry.verifier_for("sev-es")


def test_snp_collateral_loads_through_the_registry() -> None:
    report = (VECTORS / "snp" / "milan_report_v2.bin").read_bytes()
    collateral = registry.load_collateral("snp", VECTORS / "snp" / "milan_report_v2.vcek.der", report)
    verified = registry.verifier_for("snp").verify(
        report, at=dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc), collateral=collateral
    )
    registry.require_report_data(verified, bytes([1, 2, 3, 4, 5]))
    with pytest.raises(VerificationError) as caught:
        registry.require_report_data(verified, bytes([1, 2, 3, 4, 6]))
    assert caught.value.check == "report_data"


def test_tpm_takes_no_collateral(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        registry.load_collateral("tpm", tmp_path, b"")


def test_report_data_longer_than_the_evidence_is_refused() -> None:
    evidence = VerifiedEvidence(kind="tpm", report_data=b"abc", measurements={}, debug=True)
    with pytest.raises(VerificationError) as caught:
        registry.require_report_data(evidence, b"abcd")
    assert caught.value.check == "report_data"
