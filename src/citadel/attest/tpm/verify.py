"""Verify a TPM 2.0 quote in a Citadel TPM container against pinned attestation keys (AKs).

AK trust is expressed by pinning: the verifier is given the public keys of the AKs it trusts
(PEM SubjectPublicKeyInfo). How an AK earns its pin (an EK certificate chain plus
TPM2_MakeCredential/ActivateCredential at registration, or an operator's decision for a software
TPM) happens before verification and outside this module; the verifier never trusts the AK a
piece of evidence brings along, it only uses that copy to say which pinned AK signed.

Checks, in order: tpm.container, tpm.parse, tpm.ak_trust (no AK pinned), tpm.ak_untrusted (the
container names an AK that is not pinned), tpm.signature_alg, tpm.signature, tpm.nonce (when the
collateral carries an expected nonce), tpm.pcr_values (a selected PCR has no value, or a value
was supplied that the quote does not cover), tpm.pcr_digest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.tpm.container import TpmEvidence, parse_container
from citadel.attest.tpm.layouts import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    ALG_SHA256,
    ALG_SHA384,
    ALG_SHA512,
    HASH_NAMES,
    SIG_NAMES,
    Attest,
    Signature,
    parse_attest,
    parse_signature,
)
from citadel.crypto import digests_equal
from citadel.errors import VerificationError

KIND = "tpm"
# SHA-1 quotes are refused: a collision lets a forged attest share a signature.
_HASHES: Dict[int, Callable[[], hashes.HashAlgorithm]] = {
    ALG_SHA256: hashes.SHA256,
    ALG_SHA384: hashes.SHA384,
    ALG_SHA512: hashes.SHA512,
}
AkInput = Union[bytes, str, PublicKeyTypes]


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ak_fingerprint(key: PublicKeyTypes) -> str:
    """SHA-256 of the AK's DER SubjectPublicKeyInfo, hex: how Citadel names a TPM platform."""
    return hashlib.sha256(_spki(key)).hexdigest()


def load_ak(pem: Union[bytes, str], check: str = "tpm.ak_trust") -> PublicKeyTypes:
    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise VerificationError(check, "an attestation key is not a PEM public key") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise VerificationError(check, "an attestation key is neither RSA nor ECC")
    return key


class TpmVerifier:
    """TPM 2.0 quotes signed by one of the pinned attestation keys."""

    kind = KIND

    def __init__(self, trusted_aks: Union[AkInput, Sequence[AkInput]] = ()) -> None:
        # one key (PEM or key object) or several
        single = isinstance(trusted_aks, (bytes, str)) or hasattr(trusted_aks, "public_bytes")
        given: List[Any] = [trusted_aks] if single else list(trusted_aks)  # type: ignore[arg-type]
        self._aks: List[PublicKeyTypes] = [ak if not isinstance(ak, (bytes, str)) else load_ak(ak) for ak in given]

    def verify(
        self,
        evidence: bytes,
        *,
        at: _dt.datetime,
        collateral: Optional[Mapping[str, Any]] = None,
    ) -> VerifiedEvidence:
        del at  # a quote carries no certificates; its freshness is the nonce's job
        container = parse_container(evidence)
        attest = parse_attest(container.attest)
        signature = parse_signature(container.signature)
        ak = self._check_signature(container, signature)
        expected_nonce = (collateral or {}).get("nonce")
        if isinstance(expected_nonce, str):
            expected_nonce = expected_nonce.encode()
        if expected_nonce is not None and not digests_equal(bytes(expected_nonce), attest.extra_data):
            raise VerificationError(
                "tpm.nonce", f"the quote's extraData {attest.extra_data.hex()} is not the expected nonce"
            )
        measurements = self._check_pcrs(container, attest, signature.hash_alg)
        return VerifiedEvidence(
            kind=KIND,
            report_data=attest.extra_data,
            measurements=measurements,
            debug=True,  # a quote attests boot state; it cannot rule out a debugger on the host
            tcb_status="n/a",
            platform=f"ak:{ak_fingerprint(ak)}",
            details={
                "signature_scheme": SIG_NAMES[signature.sig_alg],
                "hash": HASH_NAMES[signature.hash_alg],
                "pcr_banks": {sel.bank: list(sel.pcrs) for sel in attest.pcr_select},
                "pcr_digest": attest.pcr_digest.hex(),
                "qualified_signer": attest.qualified_signer.hex(),
                "clock": attest.clock_info.clock,
                "reset_count": attest.clock_info.reset_count,
                "restart_count": attest.clock_info.restart_count,
                "clock_safe": attest.clock_info.safe,
                "firmware_version": f"0x{attest.firmware_version:016x}",
                "debug_note": "a TPM quote attests measured boot; it does not isolate memory",
            },
        )

    def _check_signature(self, container: TpmEvidence, signature: Signature) -> PublicKeyTypes:
        if not self._aks:
            raise VerificationError(
                "tpm.ak_trust",
                "no trusted attestation key (AK) is configured",
                "pin the AK's public key (PEM), e.g. `citadel evidence verify --kind tpm --ak ak.pem`",
            )
        candidates = self._aks
        if container.ak_pem is not None:
            named = load_ak(container.ak_pem, check="tpm.container")
            candidates = [ak for ak in self._aks if _spki(ak) == _spki(named)]
            if not candidates:
                raise VerificationError(
                    "tpm.ak_untrusted",
                    f"the quote names AK {ak_fingerprint(named)[:16]}..., which is not a trusted AK",
                    "pin an AK only once its provenance is shown (EK certificate, credential activation)",
                )
        if signature.hash_alg not in _HASHES:
            name = HASH_NAMES.get(signature.hash_alg, f"{signature.hash_alg:#06x}")
            raise VerificationError("tpm.signature_alg", f"signature hash {name} is not SHA-256/384/512")
        for ak in candidates:
            if _verifies(ak, signature, container.attest):
                return ak
        raise VerificationError("tpm.signature", "the quote's signature does not verify with a trusted AK")

    @staticmethod
    def _check_pcrs(container: TpmEvidence, attest: Attest, hash_alg: int) -> Dict[str, str]:
        supplied = {(bank, pcr) for bank, values in container.pcrs.items() for pcr in values}
        concatenated = b""
        measurements: Dict[str, str] = {}
        for selection in attest.pcr_select:
            values = container.pcrs.get(selection.bank, {})
            for pcr in selection.pcrs:
                if pcr not in values:
                    raise VerificationError(
                        "tpm.pcr_values", f"no value was supplied for quoted PCR {selection.bank}:{pcr}"
                    )
                concatenated += values[pcr]
                supplied.discard((selection.bank, pcr))
                name = f"pcr{pcr}" if selection.bank == "sha256" else f"{selection.bank}:pcr{pcr}"
                measurements[name] = values[pcr].hex()
        if supplied:
            extra = ", ".join(f"{bank}:{pcr}" for bank, pcr in sorted(supplied))
            raise VerificationError("tpm.pcr_values", f"PCR value(s) {extra} are not covered by the quote")
        digest = hashes.Hash(_HASHES[hash_alg]())
        digest.update(concatenated)
        if not digests_equal(digest.finalize(), attest.pcr_digest):
            raise VerificationError("tpm.pcr_digest", "the supplied PCR values do not match the quote's PCR digest")
        return measurements


def _verifies(key: PublicKeyTypes, signature: Signature, message: bytes) -> bool:
    algorithm = _HASHES[signature.hash_alg]()
    try:
        if isinstance(key, rsa.RSAPublicKey) and signature.sig_alg in (ALG_RSASSA, ALG_RSAPSS):
            scheme: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if signature.sig_alg == ALG_RSASSA
                else padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            )
            key.verify(signature.rsa, message, scheme, algorithm)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey) and signature.sig_alg == ALG_ECDSA:
            r = int.from_bytes(signature.ecdsa_r, "big")
            s = int.from_bytes(signature.ecdsa_s, "big")
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(algorithm))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
