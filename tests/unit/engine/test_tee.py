"""TEE detection against fake /dev and /sys trees (CITADEL_TEE_ROOT), and what each mode becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.engine.tee import NoTrustedHardware, decide_mode, decide_mode_for_hash, probe


def tree(root: Path, *paths: str, attestation: str = "") -> Path:
    for path in paths:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith("/"):
            target.mkdir(exist_ok=True)
        else:
            target.write_text("")
    if attestation:
        (root / "dev" / "attestation").mkdir(parents=True, exist_ok=True)
        (root / "dev" / "attestation" / "attestation_type").write_text(attestation + "\n")
    return root


@pytest.mark.parametrize("paths, attestation, kind", [
    ((), "dcap", "sgx"),
    (("/sys/kernel/config/tsm/report/", "/dev/tdx_guest"), "", "tdx"),
    (("/sys/kernel/config/tsm/report/", "/dev/sev-guest"), "", "snp"),
    (("/dev/tpmrm0",), "", "tpm"),
    (("/dev/tpmrm0", "/sys/kernel/config/tsm/report/", "/dev/sev-guest"), "", "snp"),  # TEEs before a TPM
])
def test_each_kind_is_found(tmp_path: Path, paths: tuple, attestation: str, kind: str) -> None:
    decision = decide_mode("auto", probe(str(tree(tmp_path, *paths, attestation=attestation))))
    assert (decision.mode, decision.tee, decision.warning) == ("hw", kind, None)


def test_gramine_without_attestation_is_not_a_tee(tmp_path: Path) -> None:
    probes = probe(str(tree(tmp_path, attestation="none")))
    assert not probes[0].found and "attestation_type=none" in probes[0].detail


def test_configfs_tsm_without_a_guest_device_is_not_enough(tmp_path: Path) -> None:
    probes = probe(str(tree(tmp_path, "/sys/kernel/config/tsm/report/")))
    assert not any(p.found for p in probes)
    assert probes[1].detail == "/dev/tdx_guest absent"


def test_hw_without_a_tee_lists_every_check_and_suggests_auto(tmp_path: Path) -> None:
    with pytest.raises(NoTrustedHardware) as caught:
        decide_mode("hw", probe(str(tmp_path)))
    for checked in ("/dev/attestation (Intel SGX via Gramine): absent", "/dev/tdx_guest (Intel TDX",
                    "/dev/sev-guest (AMD SEV-SNP", "/dev/tpmrm0 (TPM 2.0): absent"):
        assert checked in caught.value.cause
    assert "CITADEL_MODE=auto" in caught.value.remedy


def test_auto_falls_back_to_sim_with_one_line_and_sim_never_probes_a_decision(tmp_path: Path) -> None:
    decision = decide_mode("auto", probe(str(tmp_path)))
    assert decision.mode == "sim" and decision.tee is None
    assert decision.warning is not None and "\n" not in decision.warning
    assert "memory is not protected" in decision.warning
    assert decide_mode("sim", probe(str(tree(tmp_path, "/dev/tpmrm0")))).mode == "sim"


def test_hash_measures_the_requested_mode(tmp_path: Path) -> None:
    assert decide_mode_for_hash("hw", probe(str(tmp_path))) == "hw"
    assert decide_mode_for_hash("auto", probe(str(tmp_path))) == "sim"
    assert decide_mode_for_hash("auto", probe(str(tree(tmp_path, "/dev/tpmrm0")))) == "hw"
