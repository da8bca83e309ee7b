"""Fixtures for the Intel verifier tests: the shared real-hardware vectors and pinned times."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.unit.attest.intel.factory import Pki

REPO = Path(__file__).resolve().parents[4]
VECTORS = REPO / ".." / "shared" / "vectors"

#: inside the validity of every piece of the dcap-qvl collateral (issued 2025-06-19, next update 2025-07-19)
PINNED = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)
#: inside the validity of the PCS responses beside tdx/quote_v4_b.bin (issued 2025-10-27/28)
PINNED_B = dt.datetime(2025, 11, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """../shared/vectors beside the repository; its absence is a failure, never a skip."""
    path = VECTORS.resolve()
    if not (path / "README.md").is_file():
        pytest.fail(f"test vectors not found at {path}: clone the shared/ tree beside the repository")
    return path


@pytest.fixture(scope="session")
def sgx_quote(vectors_dir: Path) -> bytes:
    return (vectors_dir / "sgx" / "prod_quote_v3.bin").read_bytes()


@pytest.fixture(scope="session")
def sgx_collateral(vectors_dir: Path) -> Dict[str, Any]:
    return json.loads((vectors_dir / "sgx" / "prod_quote_v3.collateral.json").read_text())


@pytest.fixture(scope="session")
def debug_quote(vectors_dir: Path) -> bytes:
    return (vectors_dir / "sgx" / "debug_quote_v3_occlum.bin").read_bytes()


@pytest.fixture(scope="session")
def tdx_quote(vectors_dir: Path) -> bytes:
    return (vectors_dir / "tdx" / "quote_v4.bin").read_bytes()


@pytest.fixture(scope="session")
def tdx_collateral(vectors_dir: Path) -> Dict[str, Any]:
    return json.loads((vectors_dir / "tdx" / "quote_v4.collateral.json").read_text())


@pytest.fixture(scope="session")
def tdx_quote_b(vectors_dir: Path) -> bytes:
    return (vectors_dir / "tdx" / "quote_v4_b.bin").read_bytes()


@pytest.fixture(scope="session")
def intel_root_pem(vectors_dir: Path) -> bytes:
    return (vectors_dir / "roots" / "intel_sgx_root_ca.pem").read_bytes()


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A throw-away PKI shaped like Intel's, for synthetic quotes."""
    return Pki()
