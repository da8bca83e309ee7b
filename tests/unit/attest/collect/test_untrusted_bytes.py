"""The collectors' other parsers of untrusted bytes raise only CitadelError subclasses."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.attest.collect.reportdata import check_binds, evidence_report_data
from citadel.attest.collect.tsm import snp_certificates
from citadel.errors import CitadelError

from .fakes import cert_table


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1400), kind=st.sampled_from(["sgx", "tdx", "snp"]))
def test_report_data_lookup_on_random_evidence(data: bytes, kind: str):
    with contextlib.suppress(CitadelError):  # anything else fails the test
        assert len(evidence_report_data(kind, data)) == 64
        check_binds(kind, data, bytes(64))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_snp_certificate_table_from_random_bytes(data: bytes):
    with contextlib.suppress(CitadelError):
        snp_certificates(data)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=200), flip=st.integers(min_value=0, max_value=200),
       mask=st.integers(min_value=1, max_value=255))
def test_snp_certificate_table_truncated_or_flipped(cut: int, flip: int, mask: int):
    table = bytearray(cert_table({"63da758d-e664-4564-adc5-f4b93be8accd": b"v" * 40,
                                  "c0b406a4-a803-4952-9743-3fb6014cd0ae": b"a" * 30})[:cut])
    if flip < len(table):
        table[flip] ^= mask
    with contextlib.suppress(CitadelError):
        snp_certificates(bytes(table))
