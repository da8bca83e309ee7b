"""collect_evidence dispatch, detect_kinds, and the TPM channel spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.attest.collect import collect_evidence, detect_kinds
from citadel.attest.collect.errors import CollectionError
from citadel.attest.collect.tpm_transport import open_transport
from citadel.errors import UsageError


def test_unknown_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="cannot be collected"):
        collect_evidence("sim", bytes(64))


def test_tpm_needs_a_well_formed_measurement(tmp_path: Path):
    with pytest.raises(UsageError, match="needs the engine measurement"):
        collect_evidence("tpm", bytes(64), root=str(tmp_path))
    for bad in ("zz" * 32, "ab" * 31, b"short"):
        with pytest.raises(UsageError, match="not a SHA-256 digest"):
            collect_evidence("tpm", bytes(64), root=str(tmp_path), measurement=bad)


def test_missing_tpm_device_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CollectionError, match="there is no TPM at .*dev/tpmrm0"):
        collect_evidence("tpm", bytes(64), root=str(tmp_path), measurement="ab" * 32)


@pytest.mark.parametrize("spec", ["tcp:", "tcp:host", "tcp:host:port", "tcp::2321", "tcp:host:0", "tcp:h:70000"])
def test_malformed_tpm_addresses_are_refused(spec: str):
    with pytest.raises(CollectionError, match="is not tcp:HOST:PORT"):
        open_transport(spec)


def test_detect_kinds_on_an_empty_tree_finds_nothing(tmp_path: Path):
    assert detect_kinds(str(tmp_path)) == []


def test_detect_kinds_lists_each_interface_that_exists(tmp_path: Path):
    (tmp_path / "dev/attestation").mkdir(parents=True)
    (tmp_path / "dev/attestation/attestation_type").write_text("dcap\n")
    (tmp_path / "sys/kernel/config/tsm/report").mkdir(parents=True)
    (tmp_path / "dev/sev-guest").touch()
    (tmp_path / "dev/tpmrm0").touch()
    assert detect_kinds(str(tmp_path)) == ["sgx", "snp", "tpm"]
