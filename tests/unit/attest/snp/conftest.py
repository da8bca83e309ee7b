"""Fixtures for the SEV-SNP tests: the shared real-hardware reports, their VCEKs, a pinned time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parents[4]

#: inside the validity of both VCEKs (2022-09-24..2029-09-24 and 2023-01-24..2030-01-24) and the ASK/ARK
PINNED = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)

#: name -> facts from shared/vectors/README.md (and the bytes of the reports)
REPORTS: Dict[str, Dict[str, object]] = {
    "milan_report_v2": {
        "policy": "0xb0000",
        "debug": True,
        "guest_svn": "0",
        "measurement": "b07af962",
        "measurement_tail": "872b01",
        "report_data": bytes([1, 2, 3, 4, 5]) + bytes(59),
        "reported_tcb": {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68},
    },
    "milan_report_v2_b": {
        "policy": "0x3001f",
        "debug": False,
        "guest_svn": "4",
        "measurement": "a1f39304",
        "measurement_tail": "50d3d38c",
        "report_data": bytes.fromhex("ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2") + bytes(32),
        "reported_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
    },
}


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """../shared/vectors beside the repository (/work/shared in development, shared/ beside the clone in CI).

    Its absence is a failure, never a skip: these tests are the proof the verifier works on real evidence.
    """
    path = (REPO.parent / "shared" / "vectors").resolve()
    if not (path / "snp").is_dir() or not (path / "README.md").is_file():
        pytest.fail(f"test vectors not found at {path}: put the shared/ tree beside the repository")
    return path


@pytest.fixture(scope="session")
def snp_dir(vectors_dir: Path) -> Path:
    return vectors_dir / "snp"


def read_report(snp_dir: Path, name: str) -> bytes:
    return (snp_dir / f"{name}.bin").read_bytes()


def read_vcek(snp_dir: Path, name: str) -> bytes:
    return (snp_dir / f"{name}.vcek.der").read_bytes()
