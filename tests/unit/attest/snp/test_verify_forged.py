"""SnpVerifier on evidence signed by a self-made AMD-shaped PKI.

Each forgery is first shown to verify when its own root is trusted (so it is well formed), then
refused under AMD's roots for the reason that models the attack. Synthetic v3 reports cover what no
shared vector does: Turin's TCB layout and 8-byte hwID, Genoa's CPUID, VLEK signing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Dict, Optional

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from citadel.attest.snp.layouts import SIGNING_KEY_VLEK, encode_tcb
from citadel.attest.snp.verify import SnpVerifier
from citadel.errors import VerificationError
from tests.unit.attest.snp.conftest import PINNED, read_report, read_vcek
from tests.unit.attest.snp.forge import FakeAmd, der, pem, set_field, sign_report

MILAN_SPL = {"bl": 2, "tee": 0, "snp": 5, "ucode": 0x44}  # the reported TCB of milan_report_v2
TURIN_SPL = {"fmc": 1, "bl": 2, "tee": 3, "snp": 4, "ucode": 0xD5}


@pytest.fixture(scope="module")
def fake_milan() -> FakeAmd:
    return FakeAmd("Milan")


@pytest.fixture(scope="module")
def chip_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _forged_milan(snp_dir: Path, fake: FakeAmd, key: ec.EllipticCurvePrivateKey, spl: Optional[Dict[str, int]] = None):
    """The genuine report v2 re-signed by a forged VCEK for the same chip id and TCB."""
    report = read_report(snp_dir, "milan_report_v2")
    chip_id = report[0x1A0:0x1E0]
    vcek = fake.leaf(key, spl or MILAN_SPL, hwid=chip_id)
    return sign_report(report, key), vcek


def test_forged_chain_verifies_only_under_its_own_root(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report, vcek = _forged_milan(snp_dir, fake_milan, chip_key)
    trusting_the_forger = SnpVerifier({"milan": fake_milan.bundle})
    assert trusting_the_forger.verify(report, at=PINNED, collateral={"vcek": der(vcek)}).debug


def test_chain_ending_in_a_self_made_root_is_refused(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report, vcek = _forged_milan(snp_dir, fake_milan, chip_key)
    collateral = {"vcek": der(vcek), "cert_chain": fake_milan.bundle}
    with pytest.raises(VerificationError) as caught:
        SnpVerifier().verify(report, at=PINNED, collateral=collateral)
    assert caught.value.check == "snp.ark_untrusted"


def test_self_made_ark_alone_in_the_collateral_is_refused(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report, vcek = _forged_milan(snp_dir, fake_milan, chip_key)
    collateral = {"vcek": der(vcek), "ask": der(fake_milan.ask), "ark": der(fake_milan.ark)}
    with pytest.raises(VerificationError) as caught:
        SnpVerifier().verify(report, at=PINNED, collateral=collateral)
    assert caught.value.check == "snp.ark_untrusted"


def test_self_made_ask_under_amds_ark_is_refused(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report, vcek = _forged_milan(snp_dir, fake_milan, chip_key)
    with pytest.raises(VerificationError) as caught:
        SnpVerifier().verify(report, at=PINNED, collateral={"vcek": der(vcek), "ask": der(fake_milan.ask)})
    assert caught.value.check == "snp.ask_signature"


def test_forged_vcek_under_amds_ask_is_refused(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report, vcek = _forged_milan(snp_dir, fake_milan, chip_key)
    with pytest.raises(VerificationError) as caught:
        SnpVerifier().verify(report, at=PINNED, collateral={"vcek": der(vcek)})
    assert caught.value.check == "snp.vcek_signature"


def test_vcek_for_another_tcb_is_refused(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report, vcek = _forged_milan(snp_dir, fake_milan, chip_key, spl={**MILAN_SPL, "snp": 6})
    with pytest.raises(VerificationError) as caught:
        SnpVerifier({"milan": fake_milan.bundle}).verify(report, at=PINNED, collateral={"vcek": der(vcek)})
    assert caught.value.check == "snp.tcb"


def test_genuine_report_under_a_forged_vcek_of_the_same_chip_is_refused(
    snp_dir: Path, fake_milan: FakeAmd, chip_key
) -> None:
    """The forger's VCEK names the right chip and TCB, but did not sign the genuine report."""
    _, vcek = _forged_milan(snp_dir, fake_milan, chip_key)
    with pytest.raises(VerificationError) as caught:
        SnpVerifier({"milan": fake_milan.bundle}).verify(
            read_report(snp_dir, "milan_report_v2"), at=PINNED, collateral={"vcek": der(vcek)}
        )
    assert caught.value.check == "snp.report_signature"


def test_vcek_without_kds_extensions_is_refused(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report = sign_report(read_report(snp_dir, "milan_report_v2"), chip_key)
    vcek = fake_milan.leaf(chip_key, {"bl": 2, "tee": 0}, hwid=report[0x1A0:0x1E0])
    with pytest.raises(VerificationError) as caught:
        SnpVerifier({"milan": fake_milan.bundle}).verify(report, at=PINNED, collateral={"vcek": der(vcek)})
    assert caught.value.check == "snp.vcek_extensions"


def test_vcek_with_a_p256_key_is_refused(snp_dir: Path, fake_milan: FakeAmd) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    report = read_report(snp_dir, "milan_report_v2")
    vcek = fake_milan.leaf(p256, MILAN_SPL, hwid=report[0x1A0:0x1E0])
    with pytest.raises(VerificationError) as caught:
        SnpVerifier({"milan": fake_milan.bundle}).verify(report, at=PINNED, collateral={"vcek": der(vcek)})
    assert caught.value.check == "snp.chain"


def test_expired_forged_vcek_is_refused_at_the_pinned_time(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report = sign_report(read_report(snp_dir, "milan_report_v2"), chip_key)
    vcek = fake_milan.leaf(
        chip_key,
        MILAN_SPL,
        hwid=report[0x1A0:0x1E0],
        not_after=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    )
    with pytest.raises(VerificationError) as caught:
        SnpVerifier({"milan": fake_milan.bundle}).verify(report, at=PINNED, collateral={"vcek": der(vcek)})
    assert caught.value.check == "snp.cert_validity"


# -- synthetic v3 reports -------------------------------------------------------------------------


def _v3(snp_dir: Path, family: int, model: int, chip_id: bytes, tcb: bytes) -> bytes:
    report = read_report(snp_dir, "milan_report_v2_b")
    report = set_field(report, "version", 3)
    report = set_field(report, "cpuid_fam_id", family)
    report = set_field(report, "cpuid_mod_id", model)
    report = set_field(report, "cpuid_step", 1)
    report = set_field(report, "chip_id", chip_id)
    return set_field(report, "reported_tcb", tcb)


def test_turin_v3_report_uses_the_turin_tcb_layout_and_8_byte_hwid(snp_dir: Path) -> None:
    fake, key = FakeAmd("Turin"), ec.generate_private_key(ec.SECP384R1())
    hwid = bytes(range(1, 9))
    report = sign_report(_v3(snp_dir, 0x1A, 0x02, hwid + bytes(56), encode_tcb("Turin", TURIN_SPL)), key)
    vcek = fake.leaf(key, TURIN_SPL, hwid=hwid)
    result = SnpVerifier({"turin": fake.bundle}).verify(report, at=PINNED, collateral={"vcek": der(vcek)})
    assert result.details["product"] == "Turin"
    assert result.details["reported_tcb"] == {
        "fmc": 1,
        "bootloader": 2,
        "tee": 3,
        "snp": 4,
        "microcode": 0xD5,
    }
    assert result.details["cpuid"] == {"family": 0x1A, "model": 0x02, "stepping": 1}
    assert result.platform == hwid.hex()


def test_turin_vcek_without_fmc_spl_is_refused(snp_dir: Path) -> None:
    fake, key = FakeAmd("Turin"), ec.generate_private_key(ec.SECP384R1())
    spl = {k: v for k, v in TURIN_SPL.items() if k != "fmc"}
    hwid = bytes(range(1, 9))
    report = sign_report(_v3(snp_dir, 0x1A, 0x02, hwid + bytes(56), encode_tcb("Turin", TURIN_SPL)), key)
    with pytest.raises(VerificationError) as caught:
        SnpVerifier({"turin": fake.bundle}).verify(
            report, at=PINNED, collateral={"vcek": der(fake.leaf(key, spl, hwid=hwid))}
        )
    assert caught.value.check == "snp.vcek_extensions"


def test_genoa_v3_report_verifies_and_a_milan_vcek_for_it_does_not(snp_dir: Path) -> None:
    fake, key = FakeAmd("Genoa"), ec.generate_private_key(ec.SECP384R1())
    chip_id = bytes(range(64))
    report = sign_report(_v3(snp_dir, 0x19, 0x11, chip_id, encode_tcb("Genoa", MILAN_SPL)), key)
    result = SnpVerifier({"genoa": fake.bundle}).verify(
        report, at=PINNED, collateral={"vcek": der(fake.leaf(key, MILAN_SPL, hwid=chip_id))}
    )
    assert result.details["product"] == "Genoa" and result.details["version"] == 3
    milan_vcek = fake.leaf(key, MILAN_SPL, hwid=chip_id, product_name="Milan-B0")
    with pytest.raises(VerificationError) as caught:
        SnpVerifier({"genoa": fake.bundle}).verify(report, at=PINNED, collateral={"vcek": der(milan_vcek)})
    assert caught.value.check == "snp.product"


def test_vlek_signed_report_verifies_under_the_asvk_chain(snp_dir: Path) -> None:
    fake, key = FakeAmd("Milan", vlek=True), ec.generate_private_key(ec.SECP384R1())
    report = read_report(snp_dir, "milan_report_v2_b")
    report = sign_report(set_field(report, "key_info", SIGNING_KEY_VLEK << 2), key)
    vlek = fake.leaf(key, {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}, csp_id="example-cloud")
    result = SnpVerifier({"milan_vlek": fake.bundle}).verify(report, at=PINNED, collateral={"vlek": der(vlek)})
    assert result.details["signing_key"] == "VLEK" and result.platform == "vlek:example-cloud"
    with pytest.raises(VerificationError) as caught:  # a VLEK is never looked up under the VCEK name
        SnpVerifier({"milan_vlek": fake.bundle}).verify(report, at=PINNED, collateral={"vcek": der(vlek)})
    assert caught.value.check == "snp.collateral"
    with pytest.raises(VerificationError) as caught:  # AMD's own ASVK did not certify the forged VLEK
        SnpVerifier().verify(report, at=PINNED, collateral={"vlek": der(vlek)})
    assert caught.value.check == "snp.vcek_signature"


def test_vcek_presented_as_vlek_is_refused(snp_dir: Path) -> None:
    report = set_field(read_report(snp_dir, "milan_report_v2"), "key_info", SIGNING_KEY_VLEK << 2)
    with pytest.raises(VerificationError) as caught:
        SnpVerifier().verify(report, at=PINNED, collateral={"vlek": read_vcek(snp_dir, "milan_report_v2")})
    assert caught.value.check == "snp.vcek_extensions"


def test_masked_chip_id_relies_on_the_vcek_signature(snp_dir: Path, fake_milan: FakeAmd, chip_key) -> None:
    report = read_report(snp_dir, "milan_report_v2")
    vcek = fake_milan.leaf(chip_key, MILAN_SPL, hwid=report[0x1A0:0x1E0])
    masked = sign_report(set_field(report, "chip_id", bytes(64)), chip_key)
    result = SnpVerifier({"milan": fake_milan.bundle}).verify(masked, at=PINNED, collateral={"vcek": der(vcek)})
    assert result.details["chip_id_masked"] and result.platform == report[0x1A0:0x1E0].hex()


def test_pem_bundle_with_three_certificates_is_refused(snp_dir: Path, fake_milan: FakeAmd) -> None:
    verifier = SnpVerifier({"milan": pem(fake_milan.ask, fake_milan.ark, fake_milan.ark)})
    with pytest.raises(VerificationError) as caught:
        verifier.verify(
            read_report(snp_dir, "milan_report_v2"),
            at=PINNED,
            collateral={"vcek": read_vcek(snp_dir, "milan_report_v2")},
        )
    assert caught.value.check == "snp.chain"
