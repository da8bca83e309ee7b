"""Real quotes and collateral with one defect each; every case is named after the defect it models
and must be refused with the check that catches it."""

from __future__ import annotations

import base64
import datetime as dt
import re
import struct
from typing import Any, Callable, Dict, List, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citadel.attest.evidence import Verifier
from citadel.attest.intel import SgxVerifier, TdxVerifier
from citadel.attest.intel.quote import parse_quote
from citadel.errors import VerificationError
from tests.unit.attest.intel.conftest import PINNED
from tests.unit.attest.intel.factory import Pki, make_cert, make_quote

PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def set_byte(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


def replace_pem_der(quote: bytes, index: int, mutate: Callable[[bytes], bytes]) -> bytes:
    """Re-encode the index-th PEM certificate in `quote` after `mutate` (same length, same line breaks)."""
    match = list(PEM_BLOCK.finditer(quote))[index]
    lines = match.group(1).split(b"\n")
    der = mutate(base64.b64decode(b"".join(lines)))
    encoded = base64.b64encode(der)
    out, pos = [], 0
    for line in lines:
        out.append(encoded[pos : pos + len(line)])
        pos += len(line)
    body = b"\n".join(out)
    assert len(body) == len(match.group(1))
    return quote[: match.start(1)] + body + quote[match.end(1) :]


def cert_at(quote: bytes, index: int) -> x509.Certificate:
    match = list(PEM_BLOCK.finditer(quote))[index]
    return x509.load_pem_x509_certificate(match.group(0))


def flip_cert_signature(quote: bytes, index: int) -> bytes:
    sig = cert_at(quote, index).signature
    return replace_pem_der(quote, index, lambda der: flip(der, der.index(sig) + len(sig) - 1))


def flip_cert_public_key(quote: bytes, index: int) -> bytes:
    point = (
        cert_at(quote, index)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return replace_pem_der(quote, index, lambda der: flip(der, der.index(point) + 40))


def swap_root_for_self_made(quote: bytes) -> bytes:
    """Replace the quote's Intel root with a self-made root of the same name and serial."""
    intel_root = cert_at(quote, 2)
    key = ec.generate_private_key(ec.SECP256R1())
    fake = (
        x509.CertificateBuilder()
        .subject_name(intel_root.subject)
        .issuer_name(intel_root.subject)
        .public_key(key.public_key())
        .serial_number(intel_root.serial_number)
        .not_valid_before(dt.datetime(2018, 1, 1))
        .not_valid_after(dt.datetime(2049, 1, 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(key, hashes.SHA256())
    )
    return replace_chain(quote, [cert_at(quote, 0), cert_at(quote, 1), fake])


def replace_chain(quote: bytes, certs: List[x509.Certificate]) -> bytes:
    """Rebuild `quote` with a different PEM chain, fixing the certification data sizes around it."""
    q = parse_quote(quote)
    old = q.pck_chain_pem
    new = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    delta = len(new) - len(old)
    start = quote.index(old)
    out = bytearray(quote[:start] + new + quote[start + len(old) :])
    body_end = len(q.signed_data)
    sig_len_at = body_end
    (sig_len,) = struct.unpack_from("<I", out, sig_len_at)
    struct.pack_into("<I", out, sig_len_at, sig_len + delta)
    inner_size_at = start - 4
    struct.pack_into("<I", out, inner_size_at, len(new))
    if q.header.version >= 4:
        outer_size_at = sig_len_at + 4 + 128 + 2
        (outer,) = struct.unpack_from("<I", out, outer_size_at)
        struct.pack_into("<I", out, outer_size_at, outer + delta)
    return bytes(out)


def _offsets(quote: bytes) -> Dict[str, int]:
    q = parse_quote(quote)
    tdx = q.is_tdx
    return {
        "measurement": 48 + (136 if tdx else 64),  # MRTD / MRENCLAVE
        "report_data": 48 + (520 if tdx else 320),
        "signature": quote.index(q.signature),
        "attestation_key": quote.index(q.attestation_key),
        "qe_report": quote.index(q.qe_report_raw) + 128,  # inside the QE's MRSIGNER
        "qe_report_signature": quote.index(q.qe_report_signature),
        "qe_auth_data": quote.index(q.qe_auth_data, quote.index(q.qe_report_signature)),
        "inner_cert_type": quote.index(q.pck_chain_pem) - 6,
        "sig_len": len(q.signed_data),
    }


Mutation = Callable[[bytes], bytes]
QUOTE_CASES: List[Tuple[str, Mutation, str]] = [
    ("header_version_unknown", lambda q: set_byte(q, 0, 9), "quote.header"),
    ("header_key_type_not_ecdsa_p256", lambda q: set_byte(q, 2, 3), "quote.header"),
    ("header_qe_vendor_flipped", lambda q: flip(q, 12), "quote.header"),
    ("header_user_data_flipped", lambda q: flip(q, 30), "quote.signature"),
    ("body_measurement_flipped", lambda q: flip(q, _offsets(q)["measurement"]), "quote.signature"),
    ("body_report_data_flipped", lambda q: flip(q, _offsets(q)["report_data"]), "quote.signature"),
    ("quote_signature_flipped", lambda q: flip(q, _offsets(q)["signature"] + 7), "quote.signature"),
    ("attestation_key_flipped", lambda q: flip(q, _offsets(q)["attestation_key"] + 7), "qe_report.binding"),
    ("qe_report_flipped", lambda q: flip(q, _offsets(q)["qe_report"]), "qe_report.signature"),
    (
        "qe_report_signature_flipped",
        lambda q: flip(q, _offsets(q)["qe_report_signature"] + 40),
        "qe_report.signature",
    ),
    ("qe_auth_data_flipped", lambda q: flip(q, _offsets(q)["qe_auth_data"] + 3), "qe_report.binding"),
    (
        "certification_data_type_encrypted_ppid",
        lambda q: set_byte(q, _offsets(q)["inner_cert_type"], 3),
        "quote.certification_data",
    ),
    ("pck_leaf_signature_flipped", lambda q: flip_cert_signature(q, 0), "pck.chain"),
    ("pck_leaf_public_key_flipped", lambda q: flip_cert_public_key(q, 0), "pck.chain"),
    ("pck_ca_signature_flipped", lambda q: flip_cert_signature(q, 1), "pck.chain"),
    ("pck_ca_public_key_flipped", lambda q: flip_cert_public_key(q, 1), "pck.chain"),
    ("root_copy_signature_flipped", lambda q: flip_cert_signature(q, 2), "pck.chain"),
    ("chain_ends_in_self_made_root", swap_root_for_self_made, "pck.chain"),
    ("chain_without_pck_ca", lambda q: replace_chain(q, [cert_at(q, 0), cert_at(q, 2)]), "pck.chain"),
    ("chain_leaf_only", lambda q: replace_chain(q, [cert_at(q, 0)]), "pck.chain"),
    ("quote_cut_short", lambda q: q[: len(parse_quote(q).signed_data) + 100], "quote.truncated"),
    ("trailing_garbage", lambda q: q + b"\x01", "quote.trailing_data"),
]


@pytest.mark.parametrize("kind", ["sgx", "tdx"])
@pytest.mark.parametrize("name,mutate,check", QUOTE_CASES, ids=[c[0] for c in QUOTE_CASES])
def test_mutated_quote_is_refused(
    kind: str, name: str, mutate: Mutation, check: str, sgx_quote: bytes, tdx_quote: bytes
) -> None:
    verifier, quote = (SgxVerifier(), sgx_quote) if kind == "sgx" else (TdxVerifier(), tdx_quote)
    bad = mutate(quote)
    assert bad != quote
    with pytest.raises(VerificationError) as err:
        verifier.verify(bad, at=PINNED)
    assert err.value.check == check, err.value.detail


@pytest.mark.parametrize("kind", ["sgx", "tdx"])
def test_signature_data_length_mismatch_is_refused(kind: str, sgx_quote: bytes, tdx_quote: bytes) -> None:
    quote = sgx_quote if kind == "sgx" else tdx_quote
    at = _offsets(quote)["sig_len"]
    (sig_len,) = struct.unpack_from("<I", quote, at)
    grown = quote[:at] + struct.pack("<I", sig_len + 4) + quote[at + 4 :] + bytes(4)
    with pytest.raises(VerificationError) as err:
        (SgxVerifier() if kind == "sgx" else TdxVerifier()).verify(grown, at=PINNED)
    assert err.value.check == "quote.signature_data"


def test_zero_padding_after_an_sgx_quote_is_tolerated(sgx_quote: bytes) -> None:
    result = SgxVerifier().verify(sgx_quote + bytes(70), at=PINNED)
    assert result.details["padding_bytes"] == 70


def test_chain_made_entirely_by_a_stranger_is_refused_by_intel_root() -> None:
    """A full PKI whose root copies Intel's root name, generated here: the chain ends in a self-made root."""
    stranger = Pki(root_name="Intel SGX Root CA")
    with pytest.raises(VerificationError) as err:
        SgxVerifier().verify(make_quote(stranger), at=PINNED)
    assert err.value.check == "pck.chain"


# --- collateral --------------------------------------------------------------------------------------


def _flip_hex(text: str, index: int) -> str:
    raw = bytearray(bytes.fromhex(text))
    raw[index] ^= 0x01
    return raw.hex()


def _flip_pem(pem: str, cert_index: int) -> str:
    """Flip the last byte of the signature of one certificate in a PEM chain."""
    certs = x509.load_pem_x509_certificates(pem.encode())
    out = b""
    for i, cert in enumerate(certs):
        der = cert.public_bytes(serialization.Encoding.DER)
        if i == cert_index:
            der = flip(der, len(der) - 1)
        out += b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    return out.decode()


def _self_made_tcb_chain() -> str:
    """A TCB signing certificate and root with Intel's names, made here."""
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = make_cert("Intel SGX Root CA", root_key, None, root_key, ca=True)
    signing = make_cert("Intel SGX TCB Signing", key, root, root_key, ca=False)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (signing, root)).decode()


Edit = Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], Any]]  # member -> new value (None: drop)
COLLATERAL_CASES: List[Tuple[str, Edit, str]] = [
    (
        "tcb_info_signature_flipped",
        {"tcb_info_signature": lambda c, o: _flip_hex(c["tcb_info_signature"], 5)},
        "tcb_info.signature",
    ),
    (
        "tcb_info_text_changed",
        {"tcb_info": lambda c, o: c["tcb_info"].replace('"pceId":"0000"', '"pceId":"0001"')},
        "tcb_info.signature",
    ),
    (
        "qe_identity_signature_flipped",
        {"qe_identity_signature": lambda c, o: _flip_hex(c["qe_identity_signature"], 40)},
        "qe_identity.signature",
    ),
    (
        "qe_identity_text_changed",
        {"qe_identity": lambda c, o: c["qe_identity"].replace('"isvprodid":', '"isvprodid": ')},
        "qe_identity.signature",
    ),
    (
        "pck_crl_signature_flipped",
        {"pck_crl": lambda c, o: _flip_hex(c["pck_crl"], len(c["pck_crl"]) // 2 - 1)},
        "crl.signature",
    ),
    (
        "root_crl_signature_flipped",
        {"root_ca_crl": lambda c, o: _flip_hex(c["root_ca_crl"], len(c["root_ca_crl"]) // 2 - 1)},
        "crl.signature",
    ),
    (
        "tcb_signing_certificate_flipped",
        {"tcb_info_issuer_chain": lambda c, o: _flip_pem(c["tcb_info_issuer_chain"], 0)},
        "tcb_signing.chain",
    ),
    (
        "tcb_signing_chain_self_made",
        {"tcb_info_issuer_chain": lambda c, o: _self_made_tcb_chain()},
        "tcb_signing.chain",
    ),
    ("pck_crl_of_the_other_pck_ca", {"pck_crl": lambda c, o: o["pck_crl"]}, "crl.issuer"),
    (
        "tcb_info_of_the_other_tee",
        {"tcb_info": lambda c, o: o["tcb_info"], "tcb_info_signature": lambda c, o: o["tcb_info_signature"]},
        "tcb_info.mismatch",
    ),
    (
        "qe_identity_of_the_other_tee",
        {
            "qe_identity": lambda c, o: o["qe_identity"],
            "qe_identity_signature": lambda c, o: o["qe_identity_signature"],
        },
        "qe_identity.mismatch",
    ),
    ("pck_crl_missing", {"pck_crl": lambda c, o: None}, "collateral.missing"),
    ("tcb_info_signature_not_hex", {"tcb_info_signature": lambda c, o: "zz" * 64}, "collateral.format"),
    ("pck_crl_not_a_crl", {"pck_crl": lambda c, o: "3003020100"}, "collateral.format"),
]


@pytest.mark.parametrize("kind", ["sgx", "tdx"])
@pytest.mark.parametrize("name,edit,check", COLLATERAL_CASES, ids=[c[0] for c in COLLATERAL_CASES])
def test_mutated_collateral_is_refused(
    kind: str,
    name: str,
    edit: Edit,
    check: str,
    sgx_quote: bytes,
    sgx_collateral: Dict[str, Any],
    tdx_quote: bytes,
    tdx_collateral: Dict[str, Any],
) -> None:
    verifier: Verifier = SgxVerifier() if kind == "sgx" else TdxVerifier()
    if kind == "sgx":
        quote, collateral, other = sgx_quote, dict(sgx_collateral), tdx_collateral
    else:
        quote, collateral, other = tdx_quote, dict(tdx_collateral), sgx_collateral
    for member, change in edit.items():
        value = change(collateral, other)
        if value is None:
            del collateral[member]
        else:
            collateral[member] = value
    with pytest.raises(VerificationError) as err:
        verifier.verify(quote, at=PINNED, collateral=collateral)
    assert err.value.check == check, err.value.detail
