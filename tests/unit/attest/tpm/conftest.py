"""Fixtures for the TPM tests: the shared software-TPM quotes, packed into Citadel containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.attest.tpm.container import TpmEvidence, from_tpm2_tools, from_trustee_json

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """../shared/vectors beside the repository (/work/shared in development, shared/ beside the clone in CI).

    Its absence is a failure, never a skip: these tests are the proof the verifier works on real evidence.
    """
    path = (REPO.parent / "shared" / "vectors").resolve()
    if not (path / "tpm").is_dir() or not (path / "README.md").is_file():
        pytest.fail(f"test vectors not found at {path}: put the shared/ tree beside the repository")
    return path


@pytest.fixture(scope="session")
def tpm_dir(vectors_dir: Path) -> Path:
    return vectors_dir / "tpm"


@pytest.fixture(scope="session")
def swtpm_ak(tpm_dir: Path) -> bytes:
    return (tpm_dir / "swtpm_ak.pem").read_bytes()


@pytest.fixture(scope="session")
def swtpm(tpm_dir: Path, swtpm_ak: bytes) -> TpmEvidence:
    """keylime's swtpm quote (tpm2-tools files) over sha256 PCRs 15, 16 and 22."""
    read = lambda name: (tpm_dir / name).read_bytes()  # noqa: E731
    return from_tpm2_tools(read("swtpm_quote.attest"), read("swtpm_quote.sig"), read("swtpm_quote.pcrs"), swtpm_ak)


@pytest.fixture(scope="session")
def trustee(tpm_dir: Path) -> TpmEvidence:
    """trustee's quote over sha256 PCRs 0-23, with its AK."""
    return from_trustee_json((tpm_dir / "tpm_evidence.json").read_bytes())
