"""Report-data binding and the HPKE-style seal/open (attest/binding.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.attest import binding
from citadel.errors import VerificationError

NONCE = bytes(range(48))


def test_report_data_is_sha512_of_the_documented_layout() -> None:
    _, pub = binding.generate_key_pair()
    expected = hashlib.sha512(
        b"citadel/report-data/v1\x00" + (48).to_bytes(2, "big") + NONCE + (32).to_bytes(2, "big") + pub
    ).digest()
    assert binding.report_data(NONCE, pub) == expected
    assert len(expected) == binding.REPORT_DATA_SIZE


def test_report_data_binds_both_the_nonce_and_the_key() -> None:
    _, pub = binding.generate_key_pair()
    _, other = binding.generate_key_pair()
    assert binding.report_data(NONCE, pub) != binding.report_data(NONCE, other)
    assert binding.report_data(NONCE, pub) != binding.report_data(NONCE[:-1] + b"\xff", pub)


def test_verify_report_data_accepts_the_binding_and_zero_padding() -> None:
    _, pub = binding.generate_key_pair()
    data = binding.report_data(NONCE, pub)
    binding.verify_report_data(data, NONCE, pub)
    binding.verify_report_data(data + bytes(32), NONCE, pub)


@pytest.mark.parametrize(
    "defect",
    ["bound_to_another_key", "bound_to_another_nonce", "truncated", "trailing_garbage"],
)
def test_verify_report_data_refuses(defect: str) -> None:
    _, pub = binding.generate_key_pair()
    _, other = binding.generate_key_pair()
    data = binding.report_data(NONCE, pub)
    observed = {
        "bound_to_another_key": binding.report_data(NONCE, other),
        "bound_to_another_nonce": binding.report_data(b"x" * 48, pub),
        "truncated": data[:63],
        "trailing_garbage": data + b"\x01",
    }[defect]
    with pytest.raises(VerificationError) as info:
        binding.verify_report_data(observed, NONCE, pub)
    assert info.value.check == "binding"


@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(max_size=4096), context=st.binary(max_size=256))
def test_seal_open_round_trip(plaintext: bytes, context: bytes) -> None:
    private, public = binding.generate_key_pair()
    blob = binding.seal(public, plaintext, context=context)
    assert binding.open_sealed(private, blob, context=context) == plaintext


@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_changed_byte_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    private, public = binding.generate_key_pair()
    blob = bytearray(binding.seal(public, plaintext, context=b"ctx"))
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    blob[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(VerificationError):
        binding.open_sealed(private, bytes(blob), context=b"ctx")


def test_open_refuses_another_context_and_another_key() -> None:
    private, public = binding.generate_key_pair()
    other, _ = binding.generate_key_pair()
    blob = binding.seal(public, b"secret", context=binding.release_context(NONCE, "s/a"))
    with pytest.raises(VerificationError):
        binding.open_sealed(private, blob, context=binding.release_context(NONCE, "s/b"))
    with pytest.raises(VerificationError):
        binding.open_sealed(other, blob, context=binding.release_context(NONCE, "s/a"))


def test_each_seal_uses_a_fresh_ephemeral_key() -> None:
    _, public = binding.generate_key_pair()
    first = binding.seal(public, b"same", context=b"")
    second = binding.seal(public, b"same", context=b"")
    assert first[8:40] != second[8:40] and first != second


def test_open_refuses_a_low_order_ephemeral_point() -> None:
    private, public = binding.generate_key_pair()
    blob = bytearray(binding.seal(public, b"x", context=b""))
    blob[8:40] = bytes(32)  # the all-zero point: shared secret would be zero
    with pytest.raises(VerificationError):
        binding.open_sealed(private, bytes(blob), context=b"")
