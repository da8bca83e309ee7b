"""TpmVerifier on genuine software-TPM quotes, each named defect, and schemes the vectors lack."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable, Dict

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from citadel.attest.tpm import layouts as L
from citadel.attest.tpm.container import TpmEvidence, encode_container
from citadel.attest.tpm.verify import TpmVerifier, ak_fingerprint, load_ak
from citadel.errors import VerificationError
from tests.unit.attest.tpm import forge

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
ZERO, ONES = bytes(32), b"\xff" * 32
PCR16 = bytes.fromhex("9dbb22387e019c04da95477333546082ce313152c4a7f8a6e1d5f0c77f4fb6f0")


def _pem(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _flip(data: bytes, offset: int, mask: int = 1) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


def test_swtpm_quote_verifies(swtpm: TpmEvidence, swtpm_ak: bytes) -> None:
    result = TpmVerifier([swtpm_ak]).verify(encode_container(swtpm), at=NOW)
    assert result.kind == "tpm"
    assert result.measurements == {"pcr15": ZERO.hex(), "pcr16": PCR16.hex(), "pcr22": ONES.hex()}
    assert result.report_data == bytes.fromhex("db1db298db6d60e6385b7231743e9c3056a18003")
    assert result.platform == "ak:" + ak_fingerprint(load_ak(swtpm_ak))
    assert result.debug is True  # a TPM cannot rule out a debugger
    assert result.details["signature_scheme"] == "rsassa" and result.details["hash"] == "sha256"
    assert result.details["pcr_banks"] == {"sha256": [15, 16, 22]}


def test_trustee_quote_verifies(trustee: TpmEvidence) -> None:
    assert trustee.ak_pem is not None
    result = TpmVerifier([trustee.ak_pem]).verify(encode_container(trustee), at=NOW)
    assert sorted(result.measurements, key=lambda n: int(n[3:])) == [f"pcr{i}" for i in range(24)]
    assert all(result.measurements[f"pcr{i}"] == ONES.hex() for i in range(17, 23))
    assert result.measurements["pcr23"] == ZERO.hex() and result.measurements["pcr0"] == ZERO.hex()
    assert len(result.report_data) == 64


def test_tpm2_tools_pcr_file_parses(swtpm: TpmEvidence) -> None:
    assert swtpm.pcrs == {"sha256": {15: ZERO, 16: PCR16, 22: ONES}}


def test_expected_nonce_is_checked(swtpm: TpmEvidence, swtpm_ak: bytes) -> None:
    nonce = bytes.fromhex("db1db298db6d60e6385b7231743e9c3056a18003")
    verifier = TpmVerifier([swtpm_ak])
    assert verifier.verify(encode_container(swtpm), at=NOW, collateral={"nonce": nonce}).report_data == nonce
    with pytest.raises(VerificationError) as caught:
        verifier.verify(encode_container(swtpm), at=NOW, collateral={"nonce": _flip(nonce, 0)})
    assert caught.value.check == "tpm.nonce"


# -- named defects ---------------------------------------------------------------------------------

# offsets in swtpm_quote.attest: magic 0, type 4, qualifiedSigner 6 (2+34), extraData 42 (2+20),
# clockInfo 64, firmwareVersion 81, pcrSelect 89, pcrDigest 99 (2+32)
ATTEST_DEFECTS: Dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "header_magic_flipped": (lambda a: _flip(a, 0), "tpm.parse"),
    "header_type_not_quote": (lambda a: _flip(a, 5, 0x02), "tpm.parse"),
    "header_signer_name_flipped": (lambda a: _flip(a, 20), "tpm.signature"),
    "header_clock_flipped": (lambda a: _flip(a, 70), "tpm.signature"),
    "nonce_flipped": (lambda a: _flip(a, 50), "tpm.signature"),
    "body_pcr_selection_widened": (lambda a: _flip(a, 96, 0x01), "tpm.signature"),
    "body_pcr_digest_flipped": (lambda a: _flip(a, 110), "tpm.signature"),
    "truncated_by_one_byte": (lambda a: a[:-1], "tpm.parse"),
    "trailing_byte_appended": (lambda a: a + b"\x00", "tpm.parse"),
    "extra_data_longer_than_the_quote": (lambda a: a[:42] + b"\xff\xff" + a[44:], "tpm.parse"),
}


@pytest.mark.parametrize("defect", sorted(ATTEST_DEFECTS))
def test_attest_defect_is_refused_for_its_reason(swtpm: TpmEvidence, swtpm_ak: bytes, defect: str) -> None:
    mutate, check = ATTEST_DEFECTS[defect]
    forged = dataclasses.replace(swtpm, attest=mutate(swtpm.attest))
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak]).verify(encode_container(forged), at=NOW)
    assert caught.value.check == check, caught.value.detail


SIGNATURE_DEFECTS: Dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "signature_flipped": (lambda s: _flip(s, 100), "tpm.signature"),
    "signature_last_byte_flipped": (lambda s: _flip(s, len(s) - 1), "tpm.signature"),
    "signature_hash_sha1": (lambda s: s[:2] + b"\x00\x04" + s[4:], "tpm.signature_alg"),
    "signature_scheme_hmac": (lambda s: b"\x00\x05" + s[2:], "tpm.parse"),
    "signature_scheme_ecdsa_for_an_rsa_key": (
        lambda s: b"\x00\x18" + s[2:4] + b"\x00\x01\x01\x00\x01\x01",
        "tpm.signature",
    ),
    "signature_truncated": (lambda s: s[:-1], "tpm.parse"),
}


@pytest.mark.parametrize("defect", sorted(SIGNATURE_DEFECTS))
def test_signature_defect_is_refused_for_its_reason(swtpm: TpmEvidence, swtpm_ak: bytes, defect: str) -> None:
    mutate, check = SIGNATURE_DEFECTS[defect]
    forged = dataclasses.replace(swtpm, signature=mutate(swtpm.signature))
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak]).verify(encode_container(forged), at=NOW)
    assert caught.value.check == check, caught.value.detail


def test_pcr_value_flipped_is_refused(swtpm: TpmEvidence, swtpm_ak: bytes) -> None:
    forged = dataclasses.replace(swtpm, pcrs={"sha256": {15: ZERO, 16: _flip(PCR16, 3), 22: ONES}})
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak]).verify(encode_container(forged), at=NOW)
    assert caught.value.check == "tpm.pcr_digest"


def test_quoted_pcr_without_a_value_is_refused(swtpm: TpmEvidence, swtpm_ak: bytes) -> None:
    forged = dataclasses.replace(swtpm, pcrs={"sha256": {15: ZERO, 16: PCR16}})
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak]).verify(encode_container(forged), at=NOW)
    assert caught.value.check == "tpm.pcr_values"


def test_pcr_value_the_quote_does_not_cover_is_refused(swtpm: TpmEvidence, swtpm_ak: bytes) -> None:
    forged = dataclasses.replace(swtpm, pcrs={"sha256": {0: ZERO, 15: ZERO, 16: PCR16, 22: ONES}})
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak]).verify(encode_container(forged), at=NOW)
    assert caught.value.check == "tpm.pcr_values"


def test_no_pinned_ak_is_refused(swtpm: TpmEvidence) -> None:
    with pytest.raises(VerificationError) as caught:
        TpmVerifier().verify(encode_container(swtpm), at=NOW)
    assert caught.value.check == "tpm.ak_trust"


def test_quote_naming_an_unpinned_ak_is_refused(swtpm: TpmEvidence, trustee: TpmEvidence) -> None:
    assert trustee.ak_pem is not None
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([trustee.ak_pem]).verify(encode_container(swtpm), at=NOW)
    assert caught.value.check == "tpm.ak_untrusted"


def test_quote_signed_by_another_ak_is_refused(swtpm: TpmEvidence, trustee: TpmEvidence) -> None:
    assert trustee.ak_pem is not None
    anonymous = dataclasses.replace(swtpm, ak_pem=None)
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([trustee.ak_pem]).verify(encode_container(anonymous), at=NOW)
    assert caught.value.check == "tpm.signature"


def test_quote_without_ak_is_checked_against_every_pinned_ak(swtpm: TpmEvidence, swtpm_ak: bytes, trustee) -> None:
    anonymous = dataclasses.replace(swtpm, ak_pem=None)
    result = TpmVerifier([trustee.ak_pem, swtpm_ak]).verify(encode_container(anonymous), at=NOW)
    assert result.platform == "ak:" + ak_fingerprint(load_ak(swtpm_ak))


def test_ak_swapped_into_the_container_is_refused(swtpm: TpmEvidence, trustee: TpmEvidence, swtpm_ak: bytes) -> None:
    """A quote from one TPM presented under another pinned AK's name."""
    assert trustee.ak_pem is not None
    swapped = dataclasses.replace(swtpm, ak_pem=trustee.ak_pem)
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([swtpm_ak, trustee.ak_pem]).verify(encode_container(swapped), at=NOW)
    assert caught.value.check == "tpm.signature"


def test_a_trusted_ak_that_is_not_a_key_is_refused() -> None:
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
    assert caught.value.check == "tpm.ak_trust"


# -- schemes and banks the shared vectors do not exercise ----------------------------------------


def test_ecdsa_p256_ak_quote_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    values = {L.ALG_SHA256: {0: ZERO, 7: ONES}}
    message = forge.attest(b"nonce", [(L.ALG_SHA256, [0, 7])], values, "sha256")
    evidence = TpmEvidence(
        message, forge.sign_ecdsa(key, message, hashes.SHA256(), L.ALG_SHA256), {"sha256": {0: ZERO, 7: ONES}}
    )
    result = TpmVerifier([_pem(key)]).verify(encode_container(evidence), at=NOW)
    assert result.details["signature_scheme"] == "ecdsa" and result.report_data == b"nonce"
    flipped = dataclasses.replace(evidence, signature=_flip(evidence.signature, 10))
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([_pem(key)]).verify(encode_container(flipped), at=NOW)
    assert caught.value.check == "tpm.signature"


def test_rsapss_quote_over_two_banks_verifies() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sha1_values = {10: b"\x01" * 20}
    sha256_values = {10: ONES, 16: ZERO}
    banks = [(L.ALG_SHA1, [10]), (L.ALG_SHA256, [10, 16])]
    message = forge.attest(b"n" * 32, banks, {L.ALG_SHA1: sha1_values, L.ALG_SHA256: sha256_values}, "sha256")
    evidence = TpmEvidence(message, forge.sign_rsapss(key, message), {"sha1": sha1_values, "sha256": sha256_values})
    result = TpmVerifier([_pem(key)]).verify(encode_container(evidence), at=NOW)
    assert result.measurements == {
        "sha1:pcr10": (b"\x01" * 20).hex(),
        "pcr10": ONES.hex(),
        "pcr16": ZERO.hex(),
    }
    assert result.details["signature_scheme"] == "rsapss"


def test_sha384_signature_needs_a_sha384_pcr_digest() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    values = {L.ALG_SHA256: {0: ZERO}}
    message = forge.attest(b"x", [(L.ALG_SHA256, [0])], values, "sha384")
    evidence = TpmEvidence(
        message, forge.sign_ecdsa(key, message, hashes.SHA384(), L.ALG_SHA384), {"sha256": {0: ZERO}}
    )
    assert TpmVerifier([_pem(key)]).verify(encode_container(evidence), at=NOW).details["hash"] == "sha384"
    wrong = forge.attest(b"x", [(L.ALG_SHA256, [0])], values, "sha256")
    evidence = TpmEvidence(wrong, forge.sign_ecdsa(key, wrong, hashes.SHA384(), L.ALG_SHA384), {"sha256": {0: ZERO}})
    with pytest.raises(VerificationError) as caught:
        TpmVerifier([_pem(key)]).verify(encode_container(evidence), at=NOW)
    assert caught.value.check == "tpm.pcr_digest"


def test_trusted_aks_may_be_one_pem_text_or_key(swtpm: TpmEvidence, swtpm_ak: bytes) -> None:
    """Trust files hand over PEM text; a single key need not be wrapped in a list."""
    container = encode_container(swtpm)
    for trust in (swtpm_ak, swtpm_ak.decode(), [swtpm_ak.decode()], load_ak(swtpm_ak), (load_ak(swtpm_ak),)):
        assert TpmVerifier(trust).verify(container, at=NOW).kind == "tpm"


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_every_byte_of_attest_and_signature_is_covered(swtpm: TpmEvidence, swtpm_ak: bytes, mask: int) -> None:
    """Exhaustive: no single changed byte of the quote or its signature is accepted."""
    verifier = TpmVerifier([swtpm_ak])
    accepted = []
    for field in ("attest", "signature"):
        data = getattr(swtpm, field)
        for offset in range(len(data)):
            changed = dataclasses.replace(swtpm, **{field: _flip(data, offset, mask)})
            try:
                verifier.verify(encode_container(changed), at=NOW)
            except VerificationError:
                continue
            accepted.append((field, offset))
    assert accepted == []
