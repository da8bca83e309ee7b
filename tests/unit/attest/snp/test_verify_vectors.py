"""SnpVerifier on genuine Milan reports: the README's facts, and each named defect refused for its reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable, Dict

import pytest
from cryptography.hazmat.primitives import serialization

from citadel.attest.snp.certs import ROOTS_DIR, load_bundle, load_cert
from citadel.attest.snp.layouts import field_offsets
from citadel.attest.snp.verify import SnpVerifier
from citadel.errors import VerificationError
from tests.unit.attest.snp.conftest import PINNED, REPORTS, read_report, read_vcek
from tests.unit.attest.snp.forge import flip

OFFSETS = field_offsets()
A, B = "milan_report_v2", "milan_report_v2_b"


@pytest.fixture(scope="module")
def verifier() -> SnpVerifier:
    return SnpVerifier()


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_genuine_report_verifies_with_the_readme_facts(verifier: SnpVerifier, snp_dir: Path, name: str) -> None:
    facts = REPORTS[name]
    result = verifier.verify(read_report(snp_dir, name), at=PINNED, collateral={"vcek": read_vcek(snp_dir, name)})
    assert result.kind == "snp"
    assert result.measurements["policy"] == facts["policy"]
    assert result.debug is facts["debug"]
    assert result.measurements["guest_svn"] == facts["guest_svn"]
    assert result.measurements["measurement"].startswith(str(facts["measurement"]))
    assert result.measurements["measurement"].endswith(str(facts["measurement_tail"]))
    assert len(result.measurements["measurement"]) == 96
    assert result.report_data == facts["report_data"]
    assert result.details["reported_tcb"] == facts["reported_tcb"]
    assert result.details["product"] == "Milan" and result.details["signing_key"] == "VCEK"
    assert result.details["certificate_chain"] == ["SEV-VCEK", "SEV-Milan", "ARK-Milan"]
    assert result.platform == result.details["chip_id"] and len(result.platform) == 128
    assert result.tcb_status == "n/a"


def test_a_pem_vcek_works_like_der(verifier: SnpVerifier, snp_dir: Path) -> None:
    cert = load_cert(read_vcek(snp_dir, A), "VCEK")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": pem}).debug


def test_bundled_roots_are_the_shared_amd_copies(vectors_dir: Path) -> None:
    shared = sorted(p.name for p in (vectors_dir / "roots").glob("ask_ark_*.pem"))
    assert shared == sorted(p.name for p in ROOTS_DIR.glob("ask_ark_*.pem"))
    for name in shared:
        assert (ROOTS_DIR / name).read_bytes() == (vectors_dir / "roots" / name).read_bytes()


# -- the report, mutated: (defect) -> (mutation, expected check) --------------------------------

REPORT_DEFECTS: Dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "header_version_unknown": (lambda r: flip(r, 0, 0x08), "snp.version"),
    "header_guest_svn_flipped": (lambda r: flip(r, OFFSETS["guest_svn"]), "snp.report_signature"),
    "header_debug_bit_cleared": (lambda r: flip(r, OFFSETS["policy"] + 2, 0x08), "snp.report_signature"),
    "header_vmpl_flipped": (lambda r: flip(r, OFFSETS["vmpl"]), "snp.report_signature"),
    "header_signature_algo_changed": (
        lambda r: flip(r, OFFSETS["signature_algo"], 0x02),
        "snp.signature_algo",
    ),
    "header_mask_chip_key_set": (lambda r: flip(r, OFFSETS["key_info"], 0x02), "snp.signing_key"),
    "header_signing_key_none": (lambda r: flip(r, OFFSETS["key_info"], 0x1C), "snp.signing_key"),
    "body_measurement_flipped": (lambda r: flip(r, OFFSETS["measurement"] + 7), "snp.report_signature"),
    "body_host_data_flipped": (lambda r: flip(r, OFFSETS["host_data"]), "snp.report_signature"),
    "body_launch_tcb_flipped": (lambda r: flip(r, OFFSETS["launch_tcb"]), "snp.report_signature"),
    "body_reported_tcb_raised": (lambda r: flip(r, OFFSETS["reported_tcb"] + 7, 0x80), "snp.tcb"),
    "body_chip_id_flipped": (lambda r: flip(r, OFFSETS["chip_id"] + 5), "snp.chip_id"),
    "report_data_flipped": (lambda r: flip(r, OFFSETS["report_data"]), "snp.report_signature"),
    "report_data_last_byte_flipped": (lambda r: flip(r, OFFSETS["report_data"] + 63), "snp.report_signature"),
    "signature_r_flipped": (lambda r: flip(r, OFFSETS["signature_r"] + 1), "snp.report_signature"),
    "signature_s_flipped": (lambda r: flip(r, OFFSETS["signature_s"] + 40), "snp.report_signature"),
    "signature_r_high_bytes_set": (lambda r: flip(r, OFFSETS["signature_r"] + 60), "snp.report_signature"),
    "signature_reserved_not_zero": (lambda r: flip(r, 0x400), "snp.parse"),
    "truncated_by_one_byte": (lambda r: r[:-1], "snp.parse"),
    "trailing_byte_appended": (lambda r: r + b"\x00", "snp.parse"),
    "empty": (lambda r: b"", "snp.parse"),
    "v3_claims_a_genoa_cpu": (
        lambda r: flip(flip(flip(r, 0, 0x01), OFFSETS["cpuid_fam_id"], 0x19), OFFSETS["cpuid_mod_id"], 0x11),
        "snp.product",
    ),
    "v3_names_an_unknown_cpu": (
        lambda r: flip(flip(r, 0, 0x01), OFFSETS["cpuid_fam_id"], 0x17),
        "snp.product",
    ),
}


@pytest.mark.parametrize("defect", sorted(REPORT_DEFECTS))
@pytest.mark.parametrize("name", sorted(REPORTS))
def test_report_defect_is_refused_for_its_reason(verifier: SnpVerifier, snp_dir: Path, name: str, defect: str) -> None:
    mutate, check = REPORT_DEFECTS[defect]
    with pytest.raises(VerificationError) as caught:
        verifier.verify(mutate(read_report(snp_dir, name)), at=PINNED, collateral={"vcek": read_vcek(snp_dir, name)})
    assert caught.value.check == check, caught.value.detail


# -- the certificates, mutated ------------------------------------------------------------------


def _der_flip_in(der: bytes, needle: bytes) -> bytes:
    """Flip a byte inside `needle` (a field of the TBS), keeping the DER well formed."""
    at = der.index(needle) + len(needle) // 2
    return flip(der, at)


def test_vcek_signature_flipped_is_refused(verifier: SnpVerifier, snp_dir: Path) -> None:
    vcek = read_vcek(snp_dir, A)
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": flip(vcek, len(vcek) - 3)})
    assert caught.value.check == "snp.vcek_signature"


def test_vcek_public_key_flipped_off_the_curve_is_refused(verifier: SnpVerifier, snp_dir: Path) -> None:
    vcek = read_vcek(snp_dir, A)
    point = (
        load_cert(vcek, "VCEK")
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": _der_flip_in(vcek, point[1:])})
    assert caught.value.check == "snp.collateral"


def test_vcek_subject_flipped_is_refused(verifier: SnpVerifier, snp_dir: Path) -> None:
    vcek = read_vcek(snp_dir, A)
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": _der_flip_in(vcek, b"SEV-VCEK")})
    assert caught.value.check == "snp.vcek_signature"


def test_vcek_tcb_extension_flipped_is_refused(verifier: SnpVerifier, snp_dir: Path) -> None:
    vcek = read_vcek(snp_dir, A)
    ucode_spl = bytes.fromhex("060a2b060104019c780103080403020144")  # OID .3.8, OCTET STRING { INTEGER 0x44 }
    at = vcek.index(ucode_spl) + len(ucode_spl) - 1
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": flip(vcek, at)})
    assert caught.value.check == "snp.vcek_signature"


def test_vcek_hwid_extension_flipped_is_refused(verifier: SnpVerifier, snp_dir: Path) -> None:
    report, vcek = read_report(snp_dir, A), read_vcek(snp_dir, A)
    chip_id = report[OFFSETS["chip_id"] : OFFSETS["chip_id"] + 64]
    with pytest.raises(VerificationError) as caught:
        verifier.verify(report, at=PINNED, collateral={"vcek": _der_flip_in(vcek, chip_id)})
    assert caught.value.check == "snp.vcek_signature"


def test_vcek_that_is_not_a_certificate_is_refused(verifier: SnpVerifier, snp_dir: Path) -> None:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": b"\x30\x03\x02\x01\x00"})
    assert caught.value.check == "snp.collateral"


def _bundle_certs() -> tuple[bytes, bytes]:
    ask, ark = load_bundle((ROOTS_DIR / "ask_ark_milan.pem").read_bytes(), "milan")
    return ask.public_bytes(serialization.Encoding.DER), ark.public_bytes(serialization.Encoding.DER)


def _pem_of(der: bytes) -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def test_ask_signature_flipped_in_the_collateral_is_refused(verifier: SnpVerifier, snp_dir: Path) -> None:
    ask, _ = _bundle_certs()
    with pytest.raises(VerificationError) as caught:
        verifier.verify(
            read_report(snp_dir, A),
            at=PINNED,
            collateral={"vcek": read_vcek(snp_dir, A), "ask": flip(ask, len(ask) - 5)},
        )
    assert caught.value.check == "snp.ask_signature"


def test_ask_signature_flipped_in_the_trusted_bundle_is_refused(snp_dir: Path) -> None:
    ask, ark = _bundle_certs()
    verifier = SnpVerifier({"milan": _pem_of(flip(ask, len(ask) - 5)) + _pem_of(ark)})
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": read_vcek(snp_dir, A)})
    assert caught.value.check == "snp.ask_signature"


def test_ark_signature_flipped_in_the_trusted_bundle_is_refused(snp_dir: Path) -> None:
    ask, ark = _bundle_certs()
    verifier = SnpVerifier({"milan": _pem_of(ask) + _pem_of(flip(ark, len(ark) - 5))})
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": read_vcek(snp_dir, A)})
    assert caught.value.check == "snp.ark_signature"


def test_ark_flipped_in_the_collateral_is_not_the_pinned_ark(verifier: SnpVerifier, snp_dir: Path) -> None:
    _, ark = _bundle_certs()
    with pytest.raises(VerificationError) as caught:
        verifier.verify(
            read_report(snp_dir, A),
            at=PINNED,
            collateral={"vcek": read_vcek(snp_dir, A), "ark": flip(ark, len(ark) - 5)},
        )
    assert caught.value.check == "snp.ark_untrusted"


def test_genoa_chain_in_the_collateral_is_not_milans(verifier: SnpVerifier, snp_dir: Path) -> None:
    genoa = (ROOTS_DIR / "ask_ark_genoa.pem").read_bytes()
    with pytest.raises(VerificationError) as caught:
        verifier.verify(
            read_report(snp_dir, A),
            at=PINNED,
            collateral={"vcek": read_vcek(snp_dir, A), "cert_chain": genoa},
        )
    assert caught.value.check == "snp.ark_untrusted"


def test_genuine_chain_in_the_collateral_is_accepted(verifier: SnpVerifier, snp_dir: Path) -> None:
    chain = (ROOTS_DIR / "ask_ark_milan.pem").read_bytes()
    result = verifier.verify(
        read_report(snp_dir, B), at=PINNED, collateral={"vcek": read_vcek(snp_dir, B), "cert_chain": chain}
    )
    assert not result.debug


# -- the wrong chip, the wrong time, nothing at all ---------------------------------------------


@pytest.mark.parametrize(("report", "vcek"), [(A, B), (B, A)])
def test_vcek_of_another_chip_is_refused(verifier: SnpVerifier, snp_dir: Path, report: str, vcek: str) -> None:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, report), at=PINNED, collateral={"vcek": read_vcek(snp_dir, vcek)})
    assert caught.value.check == "snp.chip_id"
    assert "another" not in caught.value.detail and "chip" in caught.value.detail


@pytest.mark.parametrize(
    "when",
    [dt.datetime(2022, 9, 1, tzinfo=dt.timezone.utc), dt.datetime(2029, 10, 1, tzinfo=dt.timezone.utc)],
    ids=["before_the_vcek_was_issued", "after_the_vcek_expired"],
)
def test_vcek_outside_its_validity_is_refused(verifier: SnpVerifier, snp_dir: Path, when: dt.datetime) -> None:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=when, collateral={"vcek": read_vcek(snp_dir, A)})
    assert caught.value.check == "snp.cert_validity"


def test_naive_time_is_taken_as_utc(verifier: SnpVerifier, snp_dir: Path) -> None:
    result = verifier.verify(
        read_report(snp_dir, A), at=dt.datetime(2025, 6, 1), collateral={"vcek": read_vcek(snp_dir, A)}
    )
    assert result.kind == "snp"


@pytest.mark.parametrize("collateral", [None, {}, {"vlek": b"x"}], ids=["none", "empty", "vlek_for_a_vcek_report"])
def test_missing_vcek_is_refused(verifier: SnpVerifier, snp_dir: Path, collateral: object) -> None:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral=collateral)  # type: ignore[arg-type]
    assert caught.value.check == "snp.collateral"


def test_no_trusted_bundle_for_the_product_is_refused(snp_dir: Path) -> None:
    verifier = SnpVerifier({"genoa": (ROOTS_DIR / "ask_ark_genoa.pem").read_bytes()})
    with pytest.raises(VerificationError) as caught:
        verifier.verify(read_report(snp_dir, A), at=PINNED, collateral={"vcek": read_vcek(snp_dir, A)})
    assert caught.value.check == "snp.chain"


def test_trusted_bundles_may_be_pem_text(snp_dir: Path) -> None:
    verifier = SnpVerifier({"milan": (ROOTS_DIR / "ask_ark_milan.pem").read_text()})
    assert verifier.verify(read_report(snp_dir, B), at=PINNED, collateral={"vcek": read_vcek(snp_dir, B)}).kind == "snp"
