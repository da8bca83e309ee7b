"""TPM 2.0 marshalling: known command bytes, response parsing, and untrusted-response fuzzing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.attest.collect.errors import TpmCommandError, TpmProtocolError
from citadel.attest.collect.tpm import AK_UNIQUE
from citadel.attest.collect.tpm_rc import describe_rc, rc_base
from citadel.attest.collect.tpm_wire import (
    ALG_ECDSA,
    ALG_SHA256,
    CC_CREATE_PRIMARY,
    CC_PCR_READ,
    CC_QUOTE,
    CC_STARTUP,
    TPM_ST_NO_SESSIONS,
    TPM_ST_SESSIONS,
    build_command,
    ecc_ak_template,
    parse_create_primary,
    parse_pcr_read,
    parse_public,
    parse_quote,
    parse_response,
    pcr_selection,
    tpm2b,
)
from citadel.errors import CitadelError

KEY = ec.derive_private_key(12345, ec.SECP256R1()).public_key().public_numbers()
X, Y = KEY.x.to_bytes(32, "big"), KEY.y.to_bytes(32, "big")
AUTH_RESPONSE = tpm2b(b"") + b"\x01" + tpm2b(b"")


def _response(params: bytes, *, handles: bytes = b"", sessions: bool = True) -> bytes:
    body = handles + (struct.pack(">I", len(params)) + params + AUTH_RESPONSE if sessions else params)
    tag = TPM_ST_SESSIONS if sessions else TPM_ST_NO_SESSIONS
    return struct.pack(">HII", tag, 10 + len(body), 0) + body


def _out_public() -> bytes:
    template = ecc_ak_template(AK_UNIQUE)
    return template[: -(2 + 32 + 2)] + tpm2b(X) + tpm2b(Y)  # the TPM fills unique with the point


CREATE_PRIMARY = _response(
    tpm2b(_out_public()) + tpm2b(b"creation data") + tpm2b(bytes(32))
    + struct.pack(">HI", 0x8021, 0x4000000B) + tpm2b(bytes(32)) + tpm2b(b"\x00\x0b" + bytes(32)),
    handles=struct.pack(">I", 0x80000000),
)
SIGNATURE = struct.pack(">HH", ALG_ECDSA, ALG_SHA256) + tpm2b(bytes(range(32))) + tpm2b(bytes(range(32, 64)))
QUOTE = _response(tpm2b(b"\xffTCG attest bytes") + SIGNATURE)
PCR_READ = _response(struct.pack(">I", 7) + pcr_selection(ALG_SHA256, [0, 23]) + struct.pack(">I", 2)
                     + tpm2b(bytes(32)) + tpm2b(b"\x17" * 32), sessions=False)
VALID = [(CREATE_PRIMARY, CC_CREATE_PRIMARY, 1, True), (QUOTE, CC_QUOTE, 0, True), (PCR_READ, CC_PCR_READ, 0, False)]


def test_startup_clear_command_bytes():
    assert build_command(CC_STARTUP, (), b"\x00\x00").hex() == "80010000000c000001440000"


def test_quote_command_bytes_with_a_password_session():
    command = build_command(CC_QUOTE, (0x80000001,), tpm2b(b"N") + struct.pack(">H", 0x10)
                            + pcr_selection(ALG_SHA256, [0, 23]), [b""])
    assert command.hex() == (
        "8002" "0000002a" "00000158"  # tag, size 42, TPM2_Quote
        "80000001"  # signHandle
        "00000009" "40000009" "0000" "00" "0000"  # authorizationSize 9, TPM_RS_PW, nonce, attrs, hmac
        "00014e" "0010"  # qualifyingData "N", inScheme NULL
        "00000001" "000b" "03" "010080"  # one bank: sha256, 3 bytes: PCR 0 and PCR 23
    )


def test_ak_template_bytes():
    assert ecc_ak_template(AK_UNIQUE).hex() == (
        "0023" "000b" "00050472" "0000"  # ECC, nameAlg SHA-256, attributes, empty authPolicy
        "0010" "0018" "000b" "0003" "0010"  # symmetric NULL, ECDSA SHA-256, P-256, kdf NULL
        "0020" + AK_UNIQUE.hex() + "0000"  # unique.x = SHA-256("citadel/tpm-ak/v1"), unique.y empty
    )


def test_valid_responses_parse():
    response = parse_response(CREATE_PRIMARY, command=CC_CREATE_PRIMARY, handles=1, sessions=True)
    public, name = parse_create_primary(response.params)
    assert response.handles == (0x80000000,) and len(name) == 34
    assert public.public_key().public_numbers() == KEY
    assert b"BEGIN PUBLIC KEY" in public.pem()
    attest, signature = parse_quote(parse_response(QUOTE, command=CC_QUOTE, sessions=True).params)
    assert attest == b"\xffTCG attest bytes" and signature == SIGNATURE
    read = parse_pcr_read(parse_response(PCR_READ, command=CC_PCR_READ).params)
    assert (read.update_counter, read.selection, read.values) == (7, {ALG_SHA256: [0, 23]}, (bytes(32), b"\x17" * 32))


def test_error_response_names_the_code_and_its_parameter():
    with pytest.raises(TpmCommandError) as refused:
        parse_response(struct.pack(">HII", TPM_ST_NO_SESSIONS, 10, 0x1D5), command=CC_QUOTE, sessions=True)
    assert refused.value.rc == 0x1D5 and rc_base(0x1D5) == 0x095
    assert "TPM2_Quote" in refused.value.cause and "TPM_RC_SIZE" in refused.value.cause
    assert "parameter 1" in refused.value.cause


@pytest.mark.parametrize("rc, words", [
    (0x902, "TPM_RC_OBJECT_MEMORY"),
    (0x9A2, "TPM_RC_BAD_AUTH"), (0x9A2, "(session 1)"), (0x18B, "TPM_RC_HANDLE"),
    (0x18B, "(handle 1)"),
    (0x100, "TPM_RC_INITIALIZE"), (0x0A0026, "layer 0xa"), (0x01E, "TPM 1.2"),
])
def test_response_codes_in_words(rc: int, words: str):
    assert words in describe_rc(rc)


def test_tpm12_answer_is_recognised():
    with pytest.raises(TpmProtocolError, match="TPM 1.2"):
        parse_response(struct.pack(">HII", 0x00C4, 10, 0), command=CC_STARTUP)


def test_point_not_on_the_curve_is_refused():
    template = ecc_ak_template(AK_UNIQUE)
    public = parse_public(template[: -(2 + 32 + 2)] + tpm2b(X) + tpm2b(bytes(31) + b"\x01"))
    with pytest.raises(TpmProtocolError, match="not on NIST P-256"):
        public.pem()


def test_rsa_public_area_is_refused():
    with pytest.raises(TpmProtocolError, match="not ECC"):
        parse_public(struct.pack(">HHI", 0x0001, ALG_SHA256, 0) + bytes(20))


def _parse_all(data: bytes, command: int, handles: int, sessions: bool) -> None:
    params = parse_response(data, command=command, handles=handles, sessions=sessions).params
    if command == CC_CREATE_PRIMARY:
        parse_create_primary(params)[0].pem()
    elif command == CC_QUOTE:
        parse_quote(params)
    else:
        parse_pcr_read(params)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), which=st.sampled_from(VALID))
def test_random_bytes_raise_only_citadel_errors(data: bytes, which):
    _valid, command, handles, sessions = which
    with contextlib.suppress(CitadelError):  # anything else fails the test
        _parse_all(data, command, handles, sessions)


@settings(max_examples=300, deadline=None)
@given(which=st.sampled_from(VALID), cut=st.integers(min_value=0, max_value=400),
       flips=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(1, 255)), max_size=4),
       fix_size=st.booleans())
def test_truncated_or_flipped_responses_raise_only_citadel_errors(which, cut: int, flips, fix_size: bool):
    valid, command, handles, sessions = which
    data = bytearray(valid[: min(cut, len(valid))] if cut < len(valid) else valid)
    for position, mask in flips:
        if position < len(data):
            data[position] ^= mask
    if fix_size and len(data) >= 10:  # keep the header's size right, so the parsers below it are reached
        data[2:6] = struct.pack(">I", len(data))
    with contextlib.suppress(CitadelError):  # anything else fails the test
        _parse_all(bytes(data), command, handles, sessions)
