"""Gramine collection: the FILE PROTOCOL only, against a stand-in /dev/attestation (fakes.FakeGramine).

They show the collector writes user_report_data and reads quote in that order and checks the quote's
REPORTDATA; they do not show that Gramine on an SGX machine answers so: that needs SGX hardware.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from citadel.attest.collect import collect_evidence
from citadel.attest.collect.errors import CollectionError
from citadel.attest.collect.gramine import collect_gramine

from .fakes import FakeGramine, sgx_quote

REPORT_DATA = bytes(range(64, 128))


@pytest.fixture
def gramine(tmp_path: Path) -> Iterator[FakeGramine]:
    fake = FakeGramine(tmp_path)
    yield fake
    fake.close()


def test_file_protocol_quote_carries_our_report_data(gramine: FakeGramine, tmp_path: Path):
    assert collect_evidence("sgx", REPORT_DATA, root=str(tmp_path)) == sgx_quote(REPORT_DATA)
    assert collect_gramine(b"abc", root=str(tmp_path)) == sgx_quote(b"abc".ljust(64, b"\x00"))
    assert gramine.requests == 2


def test_file_protocol_threads_of_one_process_do_not_mix_their_report_data(gramine: FakeGramine, tmp_path: Path):
    results: dict = {}

    def one(i: int) -> None:
        data = bytes([i]) * 64
        results[i] = collect_gramine(data, root=str(tmp_path)) == sgx_quote(data)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {i: True for i in range(8)}


def test_file_protocol_quote_for_other_report_data_is_refused(tmp_path: Path):
    fake = FakeGramine(tmp_path, quote=lambda _data: sgx_quote(bytes(64)))
    try:
        with pytest.raises(CollectionError, match="other report data"):
            collect_gramine(REPORT_DATA, root=str(tmp_path))
    finally:
        fake.close()


def test_file_protocol_tdx_quote_from_gramine_is_refused(tmp_path: Path):
    from .fakes import tdx_quote

    fake = FakeGramine(tmp_path, quote=tdx_quote)
    try:
        with pytest.raises(CollectionError, match="TEE type is 0x81"):
            collect_gramine(REPORT_DATA, root=str(tmp_path))
    finally:
        fake.close()


def test_gramine_without_remote_attestation_says_how_to_enable_it(tmp_path: Path):
    fake = FakeGramine(tmp_path, attestation_type="none")
    try:
        with pytest.raises(CollectionError, match="without remote attestation") as refused:
            collect_gramine(REPORT_DATA, root=str(tmp_path))
        assert "sgx.remote_attestation" in refused.value.remedy
        assert fake.requests == 0
    finally:
        fake.close()


def test_outside_gramine_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CollectionError, match="attestation_type: it does not exist"):
        collect_gramine(REPORT_DATA, root=str(tmp_path))
