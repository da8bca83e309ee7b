"""Paths the real vectors do not reach, exercised with quotes and collateral signed by a test PKI:
quote v5 and SGX v4, each TCB status and how the QE and TDX module lower it, revocation, expiry."""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Sequence

import pytest

from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.intel import SgxVerifier, TdxVerifier
from citadel.errors import VerificationError
from tests.unit.attest.intel.factory import (
    AT,
    Pki,
    make_collateral,
    make_quote,
    sgx_report,
    tcb_level,
    td_report,
)

COMPONENTS = (5, 5, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
HIGHER = (6, 6, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
LOWER = (4, 4, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
TDX_SVNS = (0, 0, 2) + (0,) * 13


def sgx(pki: Pki, quote: bytes, collateral: Optional[Dict[str, Any]] = None) -> VerifiedEvidence:
    return SgxVerifier(pki.root).verify(quote, at=AT, collateral=collateral)


def tdx(pki: Pki, quote: bytes, collateral: Optional[Dict[str, Any]] = None) -> VerifiedEvidence:
    return TdxVerifier(pki.root).verify(quote, at=AT, collateral=collateral)


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(VerificationError) as err:
        call(*args)
    return str(err.value.check)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_sgx_quote_versions_verify(pki: Pki, version: int) -> None:
    result = sgx(pki, make_quote(pki, version=version), make_collateral(pki))
    assert result.tcb_status == "UpToDate"
    assert result.measurements["mrenclave"] == "aa" * 32
    assert result.measurements["isvprodid"] == "7"
    assert result.report_data == b"enclave".ljust(64, b"\0")
    assert result.details["certification_data_type"] == (5 if version == 3 else 6)
    assert result.platform == pki.fmspc.hex()


@pytest.mark.parametrize("version,td15", [(4, False), (5, False), (5, True)])
def test_tdx_quote_versions_verify(pki: Pki, version: int, td15: bool) -> None:
    quote = make_quote(pki, version=version, tdx=True, body=td_report(report_data=b"td", td15=td15))
    result = tdx(pki, quote, make_collateral(pki, tdx=True))
    assert result.tcb_status == "UpToDate"
    assert result.measurements["mrtd"] == "01" * 48
    assert result.measurements["rtmr3"] == "13" * 48
    assert result.report_data == b"td".ljust(64, b"\0")
    assert result.details["body_type"] == (3 if td15 else 2)
    assert ("mrservicetd" in result.measurements) == td15


@pytest.mark.parametrize(
    "body_type,tee_tdx,body",
    [
        (9, False, sgx_report()),  # unknown body type
        (2, False, sgx_report()),  # TD body type in an SGX quote
        (1, True, td_report()),  # SGX body type in a TDX quote
    ],
    ids=["v5_body_type_unknown", "v5_td_body_type_in_sgx_quote", "v5_sgx_body_type_in_tdx_quote"],
)
def test_v5_body_descriptor_defects_are_refused(pki: Pki, body_type: int, tee_tdx: bool, body: bytes) -> None:
    quote = make_quote(pki, version=5, tdx=tee_tdx, body=body, body_type=body_type)
    verifier = TdxVerifier(pki.root) if tee_tdx else SgxVerifier(pki.root)
    with pytest.raises(VerificationError) as err:
        verifier.verify(quote, at=AT)
    assert err.value.check == "quote.body"


def test_v5_body_size_wrong_is_refused(pki: Pki) -> None:
    quote = bytearray(make_quote(pki, version=5, tdx=True))
    struct.pack_into("<I", quote, 50, 600)
    with pytest.raises(VerificationError) as err:
        tdx(pki, bytes(quote))
    assert err.value.check == "quote.body"


def test_debug_flags_are_reported(pki: Pki) -> None:
    debug_enclave = sgx_report(attributes=b"\x07" + bytes(7) + b"\xe7" + bytes(7))
    assert sgx(pki, make_quote(pki, body=debug_enclave)).debug is True
    debug_td = td_report(td_attributes=b"\x01" + bytes(7))
    assert tdx(pki, make_quote(pki, version=4, tdx=True, body=debug_td)).debug is True


# --- TCB status ----------------------------------------------------------------------------------------


STATUS_CASES = [
    ("platform_at_newest_level", [tcb_level(COMPONENTS, 11, "UpToDate")], "UpToDate", ()),
    (
        "platform_needs_sw_hardening",
        [tcb_level(COMPONENTS, 11, "SWHardeningNeeded", ["INTEL-SA-00615"])],
        "SWHardeningNeeded",
        ("INTEL-SA-00615",),
    ),
    (
        "platform_needs_configuration",
        [tcb_level(COMPONENTS, 11, "ConfigurationNeeded", ["A"])],
        "ConfigurationNeeded",
        ("A",),
    ),
    (
        "platform_needs_configuration_and_sw_hardening",
        [tcb_level(COMPONENTS, 11, "ConfigurationAndSWHardeningNeeded", ["A", "B"])],
        "ConfigurationAndSWHardeningNeeded",
        ("A", "B"),
    ),
    (
        "platform_below_newest_level",
        [tcb_level(HIGHER, 11, "UpToDate"), tcb_level(COMPONENTS, 11, "OutOfDate", ["C"])],
        "OutOfDate",
        ("C",),
    ),
    (
        "platform_pcesvn_below_newest_level",
        [tcb_level(COMPONENTS, 12, "UpToDate"), tcb_level(LOWER, 10, "OutOfDateConfigurationNeeded", ["D"])],
        "OutOfDateConfigurationNeeded",
        ("D",),
    ),
    ("platform_level_revoked", [tcb_level(COMPONENTS, 11, "Revoked", ["E"])], "Revoked", ("E",)),
]


@pytest.mark.parametrize("name,levels,status,advisories", STATUS_CASES, ids=[c[0] for c in STATUS_CASES])
def test_sgx_tcb_status(
    pki: Pki, name: str, levels: List[Dict[str, Any]], status: str, advisories: Sequence[str]
) -> None:
    result = sgx(pki, make_quote(pki), make_collateral(pki, levels=levels))
    assert (result.tcb_status, result.advisory_ids) == (status, tuple(advisories))


def test_platform_below_every_level_is_unsupported(pki: Pki) -> None:
    collateral = make_collateral(pki, levels=[tcb_level(HIGHER, 11, "UpToDate")])
    assert refused(sgx, pki, make_quote(pki), collateral) == "tcb.unsupported"


@pytest.mark.parametrize(
    "platform,qe_isvsvn,status,advisories",
    [
        ("UpToDate", 6, "OutOfDate", ("INTEL-SA-00615",)),
        ("SWHardeningNeeded", 6, "OutOfDate", ("P", "INTEL-SA-00615")),
        ("ConfigurationNeeded", 6, "OutOfDateConfigurationNeeded", ("P", "INTEL-SA-00615")),
        ("ConfigurationAndSWHardeningNeeded", 7, "OutOfDateConfigurationNeeded", ("P", "INTEL-SA-00615")),
        ("OutOfDate", 6, "OutOfDate", ("P", "INTEL-SA-00615")),
    ],
    ids=[
        "qe_out_of_date",
        "qe_out_of_date_sw",
        "qe_out_of_date_config",
        "qe_out_of_date_config_sw",
        "both_out_of_date",
    ],
)
def test_out_of_date_qe_lowers_the_platform_status(
    pki: Pki, platform: str, qe_isvsvn: int, status: str, advisories: Sequence[str]
) -> None:
    adv = [] if platform == "UpToDate" else ["P"]
    collateral = make_collateral(pki, levels=[tcb_level(COMPONENTS, 11, platform, adv)])
    result = sgx(pki, make_quote(pki, qe_isvsvn=qe_isvsvn), collateral)
    assert (result.tcb_status, result.advisory_ids) == (status, tuple(advisories))
    assert result.details["tcb"]["qe_status"] == "OutOfDate"


def test_revoked_qe_makes_the_status_revoked(pki: Pki) -> None:
    qe_levels = [
        {"tcb": {"isvsvn": 9}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
        {"tcb": {"isvsvn": 1}, "tcbDate": "2019-03-13T00:00:00Z", "tcbStatus": "Revoked"},
    ]
    result = sgx(pki, make_quote(pki, qe_isvsvn=8), make_collateral(pki, qe_levels=qe_levels))
    assert result.tcb_status == "Revoked"


def test_qe_below_every_identity_level_is_unsupported(pki: Pki) -> None:
    assert refused(sgx, pki, make_quote(pki, qe_isvsvn=5), make_collateral(pki)) == "tcb.unsupported"


@pytest.mark.parametrize(
    "quote_args",
    [{"qe_mrsigner": b"\x66" * 32}, {"qe_attributes": b"\x17" + bytes(7) + b"\xe7" + bytes(7)}],
    ids=["qe_signed_by_someone_else", "qe_is_a_debug_enclave"],
)
def test_qe_not_matching_its_identity_is_refused(pki: Pki, quote_args: Dict[str, Any]) -> None:
    assert refused(sgx, pki, make_quote(pki, **quote_args), make_collateral(pki)) == "qe_identity.mismatch"


def test_tcb_info_for_another_fmspc_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki, fmspc=bytes.fromhex("00a067110000"))
    assert refused(sgx, pki, make_quote(pki), collateral) == "tcb_info.mismatch"


# --- TDX module and TEE TCB SVN -------------------------------------------------------------------------


def _module(identity: str, levels: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "id": identity,
        "mrsigner": "00" * 48,
        "attributes": "00" * 8,
        "attributesMask": "FF" * 8,
        "tcbLevels": levels,
    }


def _module_level(isvsvn: int, status: str) -> Dict[str, Any]:
    return {"tcb": {"isvsvn": isvsvn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status}


def test_tdx_module_identity_lowers_the_status(pki: Pki) -> None:
    body = td_report(tee_tcb_svn=bytes([2, 3, 2]) + bytes(13))
    modules = [_module("TDX_03", [_module_level(4, "UpToDate"), _module_level(1, "OutOfDate")])]
    result = tdx(
        pki,
        make_quote(pki, version=4, tdx=True, body=body),
        make_collateral(pki, tdx=True, module_identities=modules),
    )
    assert result.tcb_status == "OutOfDate"
    assert result.details["tcb"]["tdx_module_status"] == "OutOfDate"


def test_tdx_module_version_without_identity_is_refused(pki: Pki) -> None:
    body = td_report(tee_tcb_svn=bytes([2, 3, 2]) + bytes(13))
    quote = make_quote(pki, version=4, tdx=True, body=body)
    assert refused(tdx, pki, quote, make_collateral(pki, tdx=True)) == "tdx_module.mismatch"


def test_tdx_module_signed_by_someone_else_is_refused(pki: Pki) -> None:
    quote = make_quote(pki, version=4, tdx=True, body=td_report(mrsignerseam=b"\x01" * 48))
    assert refused(tdx, pki, quote, make_collateral(pki, tdx=True)) == "tdx_module.mismatch"


def test_tee_tcb_svn_below_newest_level_selects_an_older_one(pki: Pki) -> None:
    levels = [
        tcb_level(COMPONENTS, 11, "UpToDate", tdx=(0, 0, 3) + (0,) * 13),
        tcb_level(COMPONENTS, 11, "OutOfDate", ["T"], tdx=TDX_SVNS),
    ]
    result = tdx(pki, make_quote(pki, version=4, tdx=True), make_collateral(pki, tdx=True, levels=levels))
    assert (result.tcb_status, result.advisory_ids) == ("OutOfDate", ("T",))


def test_tee_tcb_svn_below_every_level_is_unsupported(pki: Pki) -> None:
    levels = [tcb_level(COMPONENTS, 11, "UpToDate", tdx=(0, 0, 3) + (0,) * 13)]
    quote = make_quote(pki, version=4, tdx=True)
    assert refused(tdx, pki, quote, make_collateral(pki, tdx=True, levels=levels)) == "tcb.unsupported"


def test_sgx_collateral_for_a_tdx_quote_is_refused(pki: Pki) -> None:
    quote = make_quote(pki, version=4, tdx=True)
    assert refused(tdx, pki, quote, make_collateral(pki)) == "tcb_info.mismatch"


# --- revocation, windows, formats ---------------------------------------------------------------------


def test_revoked_pck_certificate_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki, revoked=[pki.leaf])
    assert refused(sgx, pki, make_quote(pki), collateral) == "pck.revoked"


def test_revoked_pck_ca_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki, revoked=[pki.ca])
    assert refused(sgx, pki, make_quote(pki), collateral) == "pck.revoked"


def test_revoked_tcb_signing_certificate_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki, revoked=[pki.tcb])
    assert refused(sgx, pki, make_quote(pki), collateral) == "tcb_signing.revoked"


def test_tcb_info_past_next_update_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki, tcb_info_overrides={"nextUpdate": "2030-05-31T00:00:00Z"})
    assert refused(sgx, pki, make_quote(pki), collateral) == "tcb_info.expired"


def test_qe_identity_past_next_update_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki, qe_identity_overrides={"nextUpdate": "2030-05-31T00:00:00Z"})
    assert refused(sgx, pki, make_quote(pki), collateral) == "qe_identity.expired"


@pytest.mark.parametrize(
    "overrides",
    [
        {"tcbLevels": [{"tcb": {}}]},
        {"tcbLevels": [tcb_level(COMPONENTS, 11, "Fine")]},
        {"fmspc": "not hex"},
        {"version": 1},
        {"issueDate": "yesterday"},
    ],
    ids=[
        "level_without_components",
        "unknown_status",
        "fmspc_not_hex",
        "version_unsupported",
        "date_unparseable",
    ],
)
def test_malformed_tcb_info_is_refused(pki: Pki, overrides: Dict[str, Any]) -> None:
    collateral = make_collateral(pki, tcb_info_overrides=overrides)
    assert refused(sgx, pki, make_quote(pki), collateral) == "tcb_info.format"


def test_malformed_qe_identity_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki, qe_identity_overrides={"mrsigner": "00"})
    assert refused(sgx, pki, make_quote(pki), collateral) == "qe_identity.format"


@pytest.mark.parametrize(
    "extension",
    [b"\x30\x03\x02\x01\x00", b"\x30\x80", b"\x04\x00"],
    ids=["sgx_extension_without_members", "sgx_extension_indefinite_length", "sgx_extension_not_a_sequence"],
)
def test_malformed_pck_extension_is_refused(extension: bytes) -> None:
    pki = Pki(extension=extension)
    assert refused(sgx, pki, make_quote(pki)) == "pck.extension"
