"""The collectors' self-check finds REPORTDATA where the verifiers do, in real hardware evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.attest.collect.errors import CollectionError
from citadel.attest.collect.reportdata import check_binds, evidence_report_data, quote_report_data
from citadel.attest.intel.quote import parse_quote
from citadel.attest.snp.layouts import parse_report

from .fakes import sgx_quote, tdx_quote


@pytest.mark.parametrize(
    "kind, name", [("sgx", "sgx/prod_quote_v3.bin"), ("sgx", "sgx/debug_quote_v3_occlum.bin"),
                   ("tdx", "tdx/quote_v4.bin"), ("tdx", "tdx/quote_v4_b.bin")],
)
def test_quote_report_data_matches_the_intel_parser_on_real_quotes(vectors_dir: Path, kind: str, name: str):
    quote = (vectors_dir / name).read_bytes()
    assert evidence_report_data(kind, quote) == parse_quote(quote).body.report_data


def test_known_report_data_of_the_real_sgx_quote(vectors_dir: Path):
    quote = (vectors_dir / "sgx/prod_quote_v3.bin").read_bytes()
    check_binds("sgx", quote, b"Hello, world!")


@pytest.mark.parametrize("name", ["snp/milan_report_v2.bin", "snp/milan_report_v2_b.bin"])
def test_snp_report_data_matches_the_snp_parser_on_real_reports(vectors_dir: Path, name: str):
    report = (vectors_dir / name).read_bytes()
    assert evidence_report_data("snp", report) == parse_report(report).report_data


@pytest.mark.parametrize("make, kind", [(sgx_quote, "sgx"), (tdx_quote, "tdx")])
def test_version_5_quotes_skip_the_body_descriptor(make, kind):
    assert quote_report_data(make(b"v5" * 32, version=5), kind) == b"v5" * 32


def test_a_tdx_quote_is_not_sgx_evidence(vectors_dir: Path):
    with pytest.raises(CollectionError, match="TEE type"):
        quote_report_data((vectors_dir / "tdx/quote_v4.bin").read_bytes(), "sgx")


@pytest.mark.parametrize("defect, quote", [
    ("epid_version_2", b"\x02\x00" + bytes(600)),
    ("truncated_header", bytes(20)),
    ("truncated_body", sgx_quote(bytes(64))[:400]),
])
def test_malformed_quotes_are_clear_errors(defect: str, quote: bytes):
    with pytest.raises(CollectionError, match="malformed"):
        quote_report_data(quote, "sgx")
