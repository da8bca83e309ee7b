"""The report layout against the ABI table, TCB_VERSION layouts, and the parser under random input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citadel.attest.snp.layouts import (
    REPORT_SIZE,
    REPORT_STRUCT,
    TcbVersion,
    encode_tcb,
    field_offsets,
    parse_report,
    product_from_cpuid,
)
from citadel.attest.snp.verify import SnpVerifier
from citadel.errors import VerificationError
from tests.unit.attest.snp.conftest import PINNED, read_report, read_vcek

# Offsets from the AMD SEV-SNP ABI specification (56860), ATTESTATION_REPORT structure.
SPEC_OFFSETS = {
    "version": 0x000, "guest_svn": 0x004, "policy": 0x008, "family_id": 0x010, "image_id": 0x020,
    "vmpl": 0x030, "signature_algo": 0x034, "current_tcb": 0x038, "platform_info": 0x040,
    "key_info": 0x048, "report_data": 0x050, "measurement": 0x090, "host_data": 0x0C0,
    "id_key_digest": 0x0E0, "author_key_digest": 0x110, "report_id": 0x140, "report_id_ma": 0x160,
    "reported_tcb": 0x180, "cpuid_fam_id": 0x188, "cpuid_mod_id": 0x189, "cpuid_step": 0x18A,
    "chip_id": 0x1A0, "committed_tcb": 0x1E0, "current_build": 0x1E8, "current_minor": 0x1E9,
    "current_major": 0x1EA, "committed_build": 0x1EC, "committed_minor": 0x1ED, "committed_major": 0x1EE,
    "launch_tcb": 0x1F0, "launch_mit_vector": 0x1F8, "current_mit_vector": 0x200,
    "signature_r": 0x2A0, "signature_s": 0x2E8,
}  # fmt: skip


def test_field_offsets_match_the_abi_table() -> None:
    assert field_offsets() == SPEC_OFFSETS
    assert REPORT_STRUCT.size == REPORT_SIZE == 0x4A0


def test_genuine_report_fields_parse(snp_dir: Path) -> None:
    report = parse_report(read_report(snp_dir, "milan_report_v2_b"))
    assert (report.version, report.guest_svn, report.policy, report.vmpl) == (2, 4, 0x3001F, 0)
    assert report.signature_algo == 1 and report.signing_key == 0 and not report.mask_chip_key
    assert report.family_id[0] == 1 and report.image_id[0] == 2
    assert (report.current_major, report.current_minor, report.current_build) == (1, 52, 4)
    assert report.cpuid_product is None  # a v2 report does not name its CPU


def test_tcb_layouts_differ_between_milan_and_turin() -> None:
    raw = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    milan = TcbVersion.decode(raw, "Milan")
    turin = TcbVersion.decode(raw, "Turin")
    assert (milan.bootloader, milan.tee, milan.snp, milan.microcode, milan.fmc) == (1, 2, 7, 8, None)
    assert (turin.fmc, turin.bootloader, turin.tee, turin.snp, turin.microcode) == (1, 2, 3, 4, 8)
    assert str(turin) == "fmc=1 bootloader=2 tee=3 snp=4 microcode=8"


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_encode_tcb_inverts_decode(product: str) -> None:
    spl = (
        {"fmc": 9, "bl": 1, "tee": 2, "snp": 3, "ucode": 200}
        if product == "Turin"
        else {"bl": 1, "tee": 2, "snp": 3, "ucode": 200}
    )
    decoded = TcbVersion.decode(encode_tcb(product, spl), product)
    assert (decoded.bootloader, decoded.tee, decoded.snp, decoded.microcode) == (1, 2, 3, 200)


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [
        (0x19, 0x01, "Milan"),
        (0x19, 0x11, "Genoa"),
        (0x19, 0xA0, "Genoa"),
        (0x1A, 0x02, "Turin"),
        (0x17, 0x31, None),
    ],
)
def test_product_from_cpuid(family: int, model: int, product: object) -> None:
    assert product_from_cpuid(family, model) == product


# -- untrusted bytes: only VerificationError, never another exception ---------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=2 * REPORT_SIZE), st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE)))
def test_random_bytes_raise_only_verification_error(snp_dir: Path, data: bytes) -> None:
    with pytest.raises(VerificationError):
        SnpVerifier().verify(data, at=PINNED, collateral={"vcek": read_vcek(snp_dir, "milan_report_v2")})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=REPORT_SIZE - 1))
def test_truncated_report_raises_only_verification_error(snp_dir: Path, cut: int) -> None:
    with pytest.raises(VerificationError) as caught:
        SnpVerifier().verify(
            read_report(snp_dir, "milan_report_v2")[:cut],
            at=PINNED,
            collateral={"vcek": read_vcek(snp_dir, "milan_report_v2")},
        )
    assert caught.value.check == "snp.parse"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=0, max_value=REPORT_SIZE - 1), mask=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_is_refused(snp_dir: Path, offset: int, mask: int) -> None:
    report = bytearray(read_report(snp_dir, "milan_report_v2"))
    report[offset] ^= mask
    with pytest.raises(VerificationError):
        SnpVerifier().verify(bytes(report), at=PINNED, collateral={"vcek": read_vcek(snp_dir, "milan_report_v2")})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vcek=st.binary(max_size=2048))
def test_random_vcek_bytes_raise_only_verification_error(snp_dir: Path, vcek: bytes) -> None:
    with pytest.raises(VerificationError):
        SnpVerifier().verify(read_report(snp_dir, "milan_report_v2"), at=PINNED, collateral={"vcek": vcek})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=0, max_value=1359), mask=st.integers(min_value=1, max_value=255))
def test_any_changed_vcek_byte_is_refused(snp_dir: Path, offset: int, mask: int) -> None:
    vcek = bytearray(read_vcek(snp_dir, "milan_report_v2"))
    vcek[offset % len(vcek)] ^= mask
    with pytest.raises(VerificationError):
        SnpVerifier().verify(read_report(snp_dir, "milan_report_v2"), at=PINNED, collateral={"vcek": bytes(vcek)})


def test_pinned_time_is_what_the_vectors_need() -> None:
    assert dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc) == PINNED


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_every_byte_of_report_and_vcek_is_covered(snp_dir: Path, mask: int) -> None:
    """Exhaustive: no single changed byte, anywhere in the report or the VCEK, is accepted."""
    verifier = SnpVerifier()
    report, vcek = read_report(snp_dir, "milan_report_v2"), read_vcek(snp_dir, "milan_report_v2")
    accepted = []
    for name, data in (("report", report), ("vcek", vcek)):
        for offset in range(len(data)):
            changed = bytearray(data)
            changed[offset] ^= mask
            pair = (bytes(changed), vcek) if name == "report" else (report, bytes(changed))
            try:
                verifier.verify(pair[0], at=PINNED, collateral={"vcek": pair[1]})
            except VerificationError:
                continue
            accepted.append((name, offset))
    assert accepted == []
