"""Collateral: Intel's signed TCB info, QE identity and CRLs, normalised and checked at a given time.

The canonical form is a mapping with these members (the JSON layout of the test vectors, which is also
what `citadel.attest.intel.store` builds from files):

    tcb_info, qe_identity                   the signed JSON text of the tcbInfo / enclaveIdentity object
    tcb_info_signature, qe_identity_signature  hex of the 64-byte ECDSA r||s over that exact text
    tcb_info_issuer_chain, qe_identity_issuer_chain  PEM: Intel SGX TCB Signing certificate (+ root)
    pck_crl, root_ca_crl                    the CRL of the PCK's issuing CA and of the root: hex DER,
                                            PEM, or DER bytes
    pck_crl_issuer_chain                    optional, unused: the PCK CRL is checked against the
                                            PCK CA certificate of the quote's verified chain

Nothing here fetches anything. Engine-safe: stdlib + `cryptography`, Python 3.9.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Union

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from citadel.attest.intel.chain import (
    PARSE_ERRORS,
    common_name,
    crl_window,
    load_pem_chain,
    p256_public_key,
    verify_chain,
    verify_raw_signature,
)
from citadel.attest.intel.pck import PckChain
from citadel.attest.intel.tcbinfo import EnclaveIdentity, TcbInfo, parse_enclave_identity, parse_tcb_info
from citadel.errors import VerificationError

REQUIRED = (
    "tcb_info",
    "tcb_info_signature",
    "tcb_info_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
    "qe_identity_issuer_chain",
    "pck_crl",
    "root_ca_crl",
)
TCB_SIGNING_CN = "SGX TCB Signing"


@dataclass(frozen=True)
class Collateral:
    """Collateral as bytes, exactly as signed; nothing in it is trusted yet."""

    tcb_info_json: bytes
    tcb_info_signature: bytes
    tcb_info_issuer_chain: bytes
    qe_identity_json: bytes
    qe_identity_signature: bytes
    qe_identity_issuer_chain: bytes
    pck_crl: bytes  # DER
    root_ca_crl: bytes  # DER


@dataclass(frozen=True)
class VerifiedCollateral:
    """Collateral whose signatures, chains and validity windows held at the verification time."""

    tcb_info: TcbInfo
    qe_identity: EnclaveIdentity
    pck_crl: x509.CertificateRevocationList
    root_crl: x509.CertificateRevocationList


def _as_bytes(value: Any, key: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise VerificationError(
                "collateral.format", f"collateral member {key!r} is not UTF-8 text"
            ) from None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise VerificationError("collateral.format", f"collateral member {key!r} is neither text nor bytes")


def _signature(value: Any, key: str) -> bytes:
    text = _as_bytes(value, key).strip()
    try:
        raw = bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise VerificationError("collateral.format", f"{key} is not hex") from None
    if len(raw) != 64:
        raise VerificationError("collateral.format", f"{key} is {len(raw)} bytes, expected 64 (r||s)")
    return raw


def crl_der(value: Union[str, bytes], key: str) -> bytes:
    """A CRL given as PEM, hex of DER, or DER, returned as DER."""
    data = _as_bytes(value, key)
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
        except PARSE_ERRORS as exc:
            raise VerificationError("collateral.format", f"{key} is not a PEM CRL: {exc}") from None
    if stripped and all(c in b"0123456789abcdefABCDEF" for c in stripped):
        try:
            return bytes.fromhex(stripped.decode("ascii"))
        except ValueError:
            raise VerificationError("collateral.format", f"{key} is not valid hex") from None
    return data


def collateral_from_mapping(collateral: Mapping[str, Any]) -> Collateral:
    """Normalise the canonical mapping; a missing member raises `collateral.missing`."""
    if not isinstance(collateral, Mapping):
        raise VerificationError("collateral.format", "collateral must be a mapping")
    missing = [key for key in REQUIRED if not collateral.get(key)]
    if missing:
        raise VerificationError(
            "collateral.missing", f"collateral lacks {', '.join(missing)}", "supply the full Intel collateral"
        )
    return Collateral(
        tcb_info_json=_as_bytes(collateral["tcb_info"], "tcb_info"),
        tcb_info_signature=_signature(collateral["tcb_info_signature"], "tcb_info_signature"),
        tcb_info_issuer_chain=_as_bytes(collateral["tcb_info_issuer_chain"], "tcb_info_issuer_chain"),
        qe_identity_json=_as_bytes(collateral["qe_identity"], "qe_identity"),
        qe_identity_signature=_signature(collateral["qe_identity_signature"], "qe_identity_signature"),
        qe_identity_issuer_chain=_as_bytes(
            collateral["qe_identity_issuer_chain"], "qe_identity_issuer_chain"
        ),
        pck_crl=crl_der(collateral["pck_crl"], "pck_crl"),
        root_ca_crl=crl_der(collateral["root_ca_crl"], "root_ca_crl"),
    )


def _in_window(start: _dt.datetime, end: _dt.datetime, at: _dt.datetime, check: str, what: str) -> None:
    if not start <= at <= end:
        raise VerificationError(
            check,
            f"{what} is valid from {start:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ}, "
            f"not at {at:%Y-%m-%dT%H:%M:%SZ}",
            "obtain current collateral from Intel PCS or a PCCS",
        )


def verify_crl(
    der: bytes, issuer: x509.Certificate, at: _dt.datetime, what: str
) -> x509.CertificateRevocationList:
    """A DER CRL issued and signed by `issuer` and current at `at`."""
    try:
        crl = x509.load_der_x509_crl(der)
        crl.issuer, crl_window(crl), list(crl)  # noqa: B018 (parse lazily decoded fields now)
    except PARSE_ERRORS as exc:
        raise VerificationError("collateral.format", f"{what} is not a DER CRL: {exc}") from None
    if crl.issuer != issuer.subject:
        raise VerificationError(
            "crl.issuer",
            f"{what} is issued by {common_name(crl.issuer)!r}, expected {common_name(issuer.subject)!r}",
        )
    try:
        valid = crl.is_signature_valid(p256_public_key(issuer, "crl.signature"))
    except PARSE_ERRORS:
        valid = False
    if not valid:
        raise VerificationError("crl.signature", f"the signature on {what} does not verify")
    this_update, next_update = crl_window(crl)
    _in_window(this_update, next_update, at, "crl.expired", what)
    return crl


def _revoked(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    try:
        return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    except PARSE_ERRORS as exc:
        raise VerificationError("collateral.format", f"a CRL entry does not parse: {exc}") from None


def _signed_json(
    text: bytes,
    signature: bytes,
    issuer_chain: bytes,
    root: x509.Certificate,
    root_crl: x509.CertificateRevocationList,
    at: _dt.datetime,
    name: str,
) -> Dict[str, Any]:
    """Check `text` is signed by an Intel TCB signing certificate that chains to `root`; parse it."""
    chain = load_pem_chain(issuer_chain, "tcb_signing.chain")
    if not chain or TCB_SIGNING_CN not in common_name(chain[0].subject):
        raise VerificationError(
            "tcb_signing.chain", f"the {name} issuer is not an Intel SGX TCB Signing certificate"
        )
    verify_chain(chain, root, at, check="tcb_signing.chain", expired_check="tcb_signing.expired")
    if _revoked(root_crl, chain[0]):
        raise VerificationError(
            "tcb_signing.revoked", "the TCB signing certificate is revoked by the root CA CRL"
        )
    key = p256_public_key(chain[0], "tcb_signing.chain")
    verify_raw_signature(key, signature, text, f"{name}.signature", f"the signature on the {name}")
    try:
        obj = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError):
        raise VerificationError(f"{name}.format", f"the {name} is not JSON") from None
    if not isinstance(obj, dict):
        raise VerificationError(f"{name}.format", f"the {name} is not a JSON object")
    return obj


def verify_tcb_info(
    text: bytes,
    signature: bytes,
    issuer_chain: bytes,
    root: x509.Certificate,
    root_crl: x509.CertificateRevocationList,
    at: _dt.datetime,
) -> TcbInfo:
    """TCB info JSON text signed by Intel's TCB signing key and current at `at`."""
    tcb_info = parse_tcb_info(_signed_json(text, signature, issuer_chain, root, root_crl, at, "tcb_info"))
    _in_window(tcb_info.issue_date, tcb_info.next_update, at, "tcb_info.expired", "the TCB info")
    return tcb_info


def verify_qe_identity(
    text: bytes,
    signature: bytes,
    issuer_chain: bytes,
    root: x509.Certificate,
    root_crl: x509.CertificateRevocationList,
    at: _dt.datetime,
) -> EnclaveIdentity:
    """QE identity JSON text signed by Intel's TCB signing key and current at `at`."""
    identity = parse_enclave_identity(
        _signed_json(text, signature, issuer_chain, root, root_crl, at, "qe_identity")
    )
    _in_window(identity.issue_date, identity.next_update, at, "qe_identity.expired", "the QE identity")
    return identity


def verify_collateral(
    collateral: Collateral, root: x509.Certificate, pck: PckChain, at: _dt.datetime
) -> VerifiedCollateral:
    """Check CRLs, revocation of the PCK chain, and the TCB info and QE identity signatures and windows."""
    root_crl = verify_crl(collateral.root_ca_crl, root, at, "the root CA CRL")
    pck_crl = verify_crl(collateral.pck_crl, pck.ca, at, "the PCK CRL")
    if _revoked(pck_crl, pck.leaf):
        raise VerificationError("pck.revoked", "the PCK certificate is revoked by its CA's CRL")
    if _revoked(root_crl, pck.ca):
        raise VerificationError("pck.revoked", "the PCK CA certificate is revoked by the root CA CRL")
    tcb_info = verify_tcb_info(
        collateral.tcb_info_json,
        collateral.tcb_info_signature,
        collateral.tcb_info_issuer_chain,
        root,
        root_crl,
        at,
    )
    qe_identity = verify_qe_identity(
        collateral.qe_identity_json,
        collateral.qe_identity_signature,
        collateral.qe_identity_issuer_chain,
        root,
        root_crl,
        at,
    )
    return VerifiedCollateral(tcb_info=tcb_info, qe_identity=qe_identity, pck_crl=pck_crl, root_crl=root_crl)
