"""TPM structures and the Citadel TPM container: known bytes, round trips, random and truncated input."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.attest.tpm import layouts as L
from citadel.attest.tpm.container import TpmEvidence, encode_container, from_trustee_json, parse_container
from citadel.attest.tpm.verify import TpmVerifier
from citadel.errors import VerificationError

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)


def test_swtpm_attest_fields(swtpm: TpmEvidence) -> None:
    attest = L.parse_attest(swtpm.attest)
    assert attest.qualified_signer[:2] == b"\x00\x0b" and len(attest.qualified_signer) == 34
    assert attest.extra_data.hex() == "db1db298db6d60e6385b7231743e9c3056a18003"
    assert attest.clock_info.safe and attest.firmware_version == 0x2016051100162800
    assert attest.pcr_select == (L.PcrSelection(L.ALG_SHA256, (15, 16, 22)),)
    assert attest.pcr_digest.hex().startswith("ec1636c6")


def test_swtpm_signature_fields(swtpm: TpmEvidence) -> None:
    signature = L.parse_signature(swtpm.signature)
    assert (signature.sig_alg, signature.hash_alg, len(signature.rsa)) == (L.ALG_RSASSA, L.ALG_SHA256, 256)


def test_container_round_trips(swtpm: TpmEvidence, trustee: TpmEvidence) -> None:
    for evidence in (swtpm, trustee, dataclasses.replace(swtpm, ak_pem=None)):
        assert parse_container(encode_container(evidence)) == evidence


def test_container_is_documented_json(swtpm: TpmEvidence) -> None:
    doc = json.loads(encode_container(swtpm))
    assert set(doc) == {"type", "version", "attest", "signature", "pcrs", "ak_pem"}
    assert doc["type"] == "citadel-tpm-quote" and doc["version"] == 1
    assert base64.b64decode(doc["attest"]) == swtpm.attest
    assert sorted(doc["pcrs"]["sha256"]) == ["15", "16", "22"]


_HEAD = '{"type": "citadel-tpm-quote", "version": 1, "attest": "", "signature": ""'

CONTAINER_DEFECTS = {
    "not_json": b"\xff\xfe",
    "json_array": b"[]",
    "wrong_type": b'{"type": "x", "version": 1}',
    "future_version": b'{"type": "citadel-tpm-quote", "version": 2}',
    "unknown_member": (_HEAD + ', "pcrs": {}, "x": 1}').encode(),
    "attest_not_base64": _HEAD.replace('"attest": ""', '"attest": "%%"').encode() + b', "pcrs": {}}',
    "pcr_value_short": (_HEAD + ', "pcrs": {"sha256": {"1": "00"}}}').encode(),
    "pcr_index_not_decimal": (_HEAD + ', "pcrs": {"sha256": {"x": "00"}}}').encode(),
    "pcr_bank_unknown": (_HEAD + ', "pcrs": {"md5": {}}}').encode(),
    "ak_not_a_string": (_HEAD + ', "pcrs": {}, "ak_pem": 1}').encode(),
    "deeply_nested": b"[" * 100000,
}


@pytest.mark.parametrize("defect", sorted(CONTAINER_DEFECTS))
def test_malformed_container_is_refused(swtpm_ak: bytes, defect: str) -> None:
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak]).verify(CONTAINER_DEFECTS[defect], at=NOW)
    assert caught.value.check == "tpm.container"


def test_trustee_converter_refuses_other_json() -> None:
    with pytest.raises(VerificationError) as caught:
        from_trustee_json(b'{"tpm_quote": {}}')
    assert caught.value.check == "tpm.container"


# -- untrusted bytes: only VerificationError, never another exception ---------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_container_bytes_raise_only_verification_error(data: bytes) -> None:
    with pytest.raises(VerificationError):
        TpmVerifier().verify(data, at=NOW)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_attest_bytes_raise_only_verification_error(swtpm: TpmEvidence, swtpm_ak: bytes, data: bytes) -> None:
    with pytest.raises(VerificationError):
        TpmVerifier([swtpm_ak]).verify(encode_container(dataclasses.replace(swtpm, attest=data)), at=NOW)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_signature_bytes_raise_only_verification_error(swtpm: TpmEvidence, swtpm_ak: bytes, data: bytes) -> None:
    with pytest.raises(VerificationError):
        TpmVerifier([swtpm_ak]).verify(encode_container(dataclasses.replace(swtpm, signature=data)), at=NOW)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=132))
def test_truncated_attest_is_a_parse_error(swtpm: TpmEvidence, swtpm_ak: bytes, cut: int) -> None:
    truncated = dataclasses.replace(swtpm, attest=swtpm.attest[:cut])
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak]).verify(encode_container(truncated), at=NOW)
    assert caught.value.check == "tpm.parse"


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(min_value=0, max_value=132), mask=st.integers(min_value=1, max_value=255))
def test_any_changed_attest_byte_is_refused(swtpm: TpmEvidence, swtpm_ak: bytes, offset: int, mask: int) -> None:
    attest = bytearray(swtpm.attest)
    attest[offset] ^= mask
    with pytest.raises(VerificationError):
        TpmVerifier([swtpm_ak]).verify(encode_container(dataclasses.replace(swtpm, attest=bytes(attest))), at=NOW)


@settings(max_examples=40, deadline=None)
@given(
    doc=st.dictionaries(
        st.sampled_from(["type", "version", "attest", "signature", "pcrs", "ak_pem"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=8),
            st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
        ),
    )
)
def test_random_container_members_raise_only_verification_error(swtpm_ak: bytes, doc: dict) -> None:
    with pytest.raises(VerificationError):
        TpmVerifier([swtpm_ak]).verify(json.dumps(doc).encode(), at=NOW)


@settings(max_examples=60, deadline=None)
@given(data=st.one_of(st.binary(max_size=700), st.binary(min_size=668, max_size=668)))
def test_random_tpm2_tools_pcr_files_raise_only_verification_error(data: bytes) -> None:
    from citadel.attest.tpm.container import parse_tpm2_tools_pcrs

    try:
        banks = parse_tpm2_tools_pcrs(data)
    except VerificationError:
        return
    assert all(isinstance(values, dict) for values in banks.values())
