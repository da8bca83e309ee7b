"""configfs-tsm collection: the FILE PROTOCOL only, against a stand-in tree (fakes.FakeTsmKernel).

These tests show the collector creates its own entry, writes inblob, reads outblob/auxblob, checks
the generation counter, retries when another writer interfered, and removes the entry. They do not
show that a TDX or SEV-SNP guest answers this way: that needs the hardware.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.attest.collect import collect_evidence
from citadel.attest.collect.errors import CollectionError
from citadel.attest.collect.tsm import REPORT_DIR, collect_tsm, snp_certificates

from .fakes import FakeTsmKernel, cert_table, snp_report, tdx_quote

REPORT_DATA = bytes(range(1, 65))
VCEK, ASK, ARK = b"vcek-der", b"ask-der", b"ark-der"
GUID_VCEK = "63da758d-e664-4564-adc5-f4b93be8accd"
GUID_ASK = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
GUID_ARK = "c0b406a4-a803-4952-9743-3fb6014cd0ae"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / REPORT_DIR.lstrip("/")).mkdir(parents=True)
    return tmp_path


def _entries(root: Path) -> list:
    return list((root / REPORT_DIR.lstrip("/")).iterdir())


def test_file_protocol_tdx_quote_with_our_report_data_and_the_entry_removed(root: Path):
    kernel = FakeTsmKernel("tdx_guest")
    report = collect_tsm(REPORT_DATA, kind="tdx", root=str(root), configfs=kernel)
    assert report.outblob == tdx_quote(REPORT_DATA)
    assert (report.kind, report.provider, report.generation, report.auxblob) == ("tdx", "tdx_guest", 1, None)
    assert kernel.requests == 1
    assert kernel.created == kernel.removed and Path(kernel.created[0]).name.startswith("citadel-")
    assert _entries(root) == []


def test_file_protocol_snp_report_with_its_certificate_table(root: Path):
    table = cert_table({GUID_VCEK: VCEK, GUID_ASK: ASK, GUID_ARK: ARK})
    kernel = FakeTsmKernel("sev_guest", report=snp_report, auxblob=table)
    report = collect_tsm(REPORT_DATA, kind="snp", root=str(root), configfs=kernel)
    assert report.outblob == snp_report(REPORT_DATA) and report.auxblob == table
    assert report.collateral() == {"vcek": VCEK, "ask": ASK, "ark": ARK}


def test_file_protocol_short_report_data_is_zero_padded_to_64(root: Path):
    kernel = FakeTsmKernel("sev_guest", report=snp_report)
    report = collect_tsm(b"short", kind="snp", root=str(root), configfs=kernel)
    assert report.outblob == snp_report(b"short".ljust(64, b"\x00"))


def test_file_protocol_generation_mismatch_from_a_concurrent_writer_is_retried(root: Path):
    kernel = FakeTsmKernel("tdx_guest", concurrent_writes=1, interfering=1)
    report = collect_tsm(REPORT_DATA, kind="tdx", root=str(root), configfs=kernel)
    assert kernel.requests == 2  # the first answer was discarded
    assert report.generation == 3 and report.outblob == tdx_quote(REPORT_DATA)


def test_file_protocol_a_writer_that_never_stops_is_a_clear_error(root: Path):
    kernel = FakeTsmKernel("tdx_guest", concurrent_writes=1, interfering=100)
    with pytest.raises(CollectionError, match="another writer kept changing"):
        collect_tsm(REPORT_DATA, kind="tdx", root=str(root), configfs=kernel)
    assert kernel.requests == 3 and _entries(root) == []


def test_file_protocol_missing_provider_is_a_clear_error(root: Path):
    kernel = FakeTsmKernel(provider=None)
    with pytest.raises(CollectionError, match="provider: it does not exist"):
        collect_tsm(REPORT_DATA, kind="tdx", root=str(root), configfs=kernel)
    assert kernel.requests == 0 and _entries(root) == []


def test_file_protocol_provider_of_another_kind_is_refused(root: Path):
    kernel = FakeTsmKernel("sev_guest", report=snp_report)
    with pytest.raises(CollectionError, match="provider is sev_guest, not tdx_guest"):
        collect_tsm(REPORT_DATA, kind="tdx", root=str(root), configfs=kernel)


def test_file_protocol_unknown_provider_is_refused(root: Path):
    with pytest.raises(CollectionError, match="'arm_cca_guest' is not tdx_guest or sev_guest"):
        collect_tsm(REPORT_DATA, root=str(root), configfs=FakeTsmKernel("arm_cca_guest"))


def test_file_protocol_outblob_for_other_report_data_is_refused(root: Path):
    kernel = FakeTsmKernel("tdx_guest", report=lambda _data: tdx_quote(bytes(64)))
    with pytest.raises(CollectionError, match="other report data"):
        collect_tsm(REPORT_DATA, kind="tdx", root=str(root), configfs=kernel)


def test_file_protocol_snp_outblob_of_the_wrong_size_is_refused(root: Path):
    kernel = FakeTsmKernel("sev_guest", report=lambda data: snp_report(data)[:-1])
    with pytest.raises(CollectionError, match="1183 bytes"):
        collect_tsm(REPORT_DATA, kind="snp", root=str(root), configfs=kernel)


def test_plain_directory_without_a_kernel_behind_it_fails_cleanly_and_leaves_nothing(root: Path):
    """The default Configfs (os.mkdir) on a plain tree: no attributes appear, so no provider."""
    with pytest.raises(CollectionError, match="provider"):
        collect_evidence("tdx", REPORT_DATA, root=str(root))
    assert _entries(root) == []


def test_missing_configfs_says_what_to_mount(tmp_path: Path):
    with pytest.raises(CollectionError, match="does not exist") as missing:
        collect_tsm(REPORT_DATA, kind="snp", root=str(tmp_path))
    assert "configfs" in missing.value.remedy


def test_snp_certificate_table_in_either_guid_byte_order_and_unknown_guids_skipped():
    other = "11111111-2222-3333-4444-555555555555"
    table = cert_table({GUID_VCEK: VCEK, other: b"x", GUID_ARK: ARK}, mixed_endian=True)
    assert snp_certificates(table) == {"vcek": VCEK, "ark": ARK}


@pytest.mark.parametrize(
    "defect, table",
    [
        ("no_terminator", cert_table({GUID_VCEK: VCEK})[:24]),
        ("entry_points_outside", cert_table({GUID_VCEK: VCEK})[:-1]),
        ("empty", b""),
    ],
)
def test_snp_certificate_table_defects_are_clear_errors(defect: str, table: bytes):
    with pytest.raises(CollectionError, match="certificate table"):
        snp_certificates(table)
