"""Property tests: whatever bytes arrive, the Intel parsers and verifiers raise only VerificationError."""

from __future__ import annotations

import json
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citadel.attest.intel import SgxVerifier, TdxVerifier
from citadel.attest.intel.collateral import REQUIRED
from citadel.attest.intel.pck import parse_sgx_extensions
from citadel.attest.intel.quote import parse_quote
from citadel.attest.intel.store import split_signed_body
from citadel.attest.intel.tcbinfo import parse_enclave_identity, parse_tcb_info
from citadel.errors import VerificationError
from tests.unit.attest.intel.conftest import PINNED, VECTORS

ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=200)  # lone surrogates included
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VECTOR_FILES = (
    "sgx/prod_quote_v3.bin",
    "sgx/debug_quote_v3_occlum.bin",
    "tdx/quote_v4.bin",
    "tdx/quote_v4_b.bin",
)
QUOTES = [(VECTORS / name).read_bytes() for name in VECTOR_FILES]
SGX_COLLATERAL = json.loads((VECTORS / "sgx" / "prod_quote_v3.collateral.json").read_text())


def only_verification_errors(call: Callable[[], Any]) -> None:
    """Run `call`; success is fine, a VerificationError is fine, anything else fails the test."""
    try:
        call()
    except VerificationError as err:
        assert err.check and err.detail


def verify_any(data: bytes, collateral: Any = None) -> None:
    verifier = TdxVerifier() if data[4:8] == b"\x81\x00\x00\x00" else SgxVerifier()
    verifier.verify(data, at=PINNED, collateral=collateral)


@SETTINGS
@given(st.binary(max_size=6000))
def test_random_bytes_raise_only_verification_error(data: bytes) -> None:
    only_verification_errors(lambda: SgxVerifier().verify(data, at=PINNED))
    only_verification_errors(lambda: TdxVerifier().verify(data, at=PINNED))


@SETTINGS
@given(st.sampled_from(range(len(QUOTES))), st.data())
def test_truncated_quotes_raise_only_verification_error(which: int, data: st.DataObject) -> None:
    quote = QUOTES[which]
    cut = data.draw(st.integers(min_value=0, max_value=len(quote) - 71))  # 70 bytes of padding at most
    with_valid_prefix = quote[:cut]
    try:
        verify_any(with_valid_prefix)
    except VerificationError:
        return
    raise AssertionError(f"a quote cut to {cut} bytes verified")


@SETTINGS
@given(st.sampled_from(range(len(QUOTES))), st.data())
def test_mutated_quotes_raise_only_verification_error(which: int, data: st.DataObject) -> None:
    quote = bytearray(QUOTES[which])
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        pos = data.draw(st.integers(min_value=0, max_value=len(quote) - 1))
        quote[pos] = data.draw(st.integers(min_value=0, max_value=255))
    only_verification_errors(lambda: verify_any(bytes(quote)))


@SETTINGS
@given(st.sampled_from(range(len(QUOTES))), st.binary(min_size=1, max_size=5000))
def test_valid_header_with_random_tail_raises_only_verification_error(which: int, tail: bytes) -> None:
    only_verification_errors(lambda: verify_any(QUOTES[which][:48] + tail))


@SETTINGS
@given(st.dictionaries(st.sampled_from(REQUIRED), st.one_of(ANY_TEXT, st.binary(max_size=200))))
def test_random_collateral_raises_only_verification_error(overrides: Any) -> None:
    collateral = dict(SGX_COLLATERAL)
    collateral.update(overrides)
    only_verification_errors(lambda: verify_any(QUOTES[0], collateral))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
TCB_KEYS = ["id", "version", "issueDate", "nextUpdate", "fmspc", "pceId", "tcbType", "tcbLevels", "tdxModule"]


@SETTINGS
@given(st.dictionaries(st.sampled_from(TCB_KEYS + ["miscselect", "mrsigner", "isvprodid"]), JSON))
def test_random_collateral_documents_raise_only_verification_error(obj: Any) -> None:
    only_verification_errors(lambda: parse_tcb_info(obj))
    only_verification_errors(lambda: parse_enclave_identity(obj))


@SETTINGS
@given(st.binary(max_size=400))
def test_random_der_raises_only_verification_error(der: bytes) -> None:
    only_verification_errors(lambda: parse_sgx_extensions(der))
    only_verification_errors(lambda: parse_quote(der))


@SETTINGS
@given(st.one_of(ANY_TEXT, st.binary(max_size=200)))
def test_random_pcs_body_raises_only_verification_error(body: Any) -> None:
    only_verification_errors(lambda: split_signed_body(body, "tcbInfo"))
