"""X.509 and ECDSA building blocks shared by the PCK and collateral checks.

Certificate paths are short and fixed (leaf -> Intel CA -> Intel SGX Root CA), so they are checked
directly: names chain, each signature verifies under its issuer, issuers are CAs, every certificate is
valid at the verification time, and the path ends at the trusted root given by the caller, byte for
byte. Engine-safe: stdlib + `cryptography` (41+), Python 3.9.
"""

from __future__ import annotations

import datetime as _dt
from typing import List, Sequence, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from citadel.errors import VerificationError

#: what `cryptography` raises for a malformed certificate or CRL field (decoded lazily, on access);
#: KeyError: release 41 looks up an unknown ASN.1 string tag in a name that way
PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.InvalidVersion,
)


def require_aware(at: _dt.datetime) -> _dt.datetime:
    """The verification time in UTC; a naive time is a programming error, not bad evidence."""
    if not isinstance(at, _dt.datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the verification time must be a timezone-aware datetime")
    return at.astimezone(_dt.timezone.utc)


def _utc(obj: object, name: str) -> _dt.datetime:
    """`obj.<name>_utc` (cryptography >= 42) or the naive UTC `obj.<name>` of older releases."""
    value = getattr(obj, name + "_utc", None)
    if value is None:
        value = getattr(obj, name)
        if value is None:
            raise VerificationError("collateral.format", f"missing {name}")
        value = value.replace(tzinfo=_dt.timezone.utc)
    assert isinstance(value, _dt.datetime)
    return value


def not_before(cert: x509.Certificate) -> _dt.datetime:
    return _utc(cert, "not_valid_before")


def not_after(cert: x509.Certificate) -> _dt.datetime:
    return _utc(cert, "not_valid_after")


def crl_window(crl: x509.CertificateRevocationList) -> Tuple[_dt.datetime, _dt.datetime]:
    """(thisUpdate, nextUpdate); a CRL without nextUpdate is refused."""
    return _utc(crl, "last_update"), _utc(crl, "next_update")


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def load_pem_chain(pem: bytes, check: str) -> List[x509.Certificate]:
    """Every PEM certificate in `pem` (NUL padding tolerated), leaf first, each fully parsed.

    `cryptography` decodes some fields lazily; touching every field used later here turns a
    malformed certificate into one `VerificationError(check)` instead of a ValueError elsewhere.
    """
    try:
        certs = x509.load_pem_x509_certificates(pem.rstrip(b"\x00"))
        for cert in certs:
            cert.subject, cert.issuer, cert.extensions, not_before(cert), not_after(cert)  # noqa: B018
    except PARSE_ERRORS as exc:
        raise VerificationError(check, f"a certificate does not parse: {exc}") from None
    return certs


def load_root(pem: bytes) -> x509.Certificate:
    """A trust anchor: one PEM certificate."""
    certs = load_pem_chain(pem, "trust.root")
    if len(certs) != 1:
        raise VerificationError("trust.root", f"expected one root certificate, found {len(certs)}")
    return certs[0]


def p256_public_key(cert: x509.Certificate, check: str) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except PARSE_ERRORS as exc:
        raise VerificationError(check, f"unreadable public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError(check, f"{common_name(cert.subject)!r} does not hold a P-256 key")
    return key


def raw_p256_key(raw: bytes, check: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from its 64-byte x||y encoding (as in quotes)."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        raise VerificationError(check, "the key is not a point on the P-256 curve") from None


def verify_raw_signature(
    key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, check: str, what: str
) -> None:
    """Verify an ECDSA-P256-SHA256 signature given as 64 bytes r||s (big-endian)."""
    if len(signature) != 64:
        raise VerificationError(check, f"{what}: a P-256 signature is 64 bytes, not {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationError(check, f"{what} does not verify") from None


def _check_window(cert: x509.Certificate, at: _dt.datetime, check: str) -> None:
    if not not_before(cert) <= at <= not_after(cert):
        raise VerificationError(
            check,
            f"certificate {common_name(cert.subject)!r} is valid from {not_before(cert):%Y-%m-%dT%H:%M:%SZ} "
            f"to {not_after(cert):%Y-%m-%dT%H:%M:%SZ}, not at {at:%Y-%m-%dT%H:%M:%SZ}",
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def verify_chain(
    chain: Sequence[x509.Certificate],
    root: x509.Certificate,
    at: _dt.datetime,
    *,
    check: str,
    expired_check: str,
) -> None:
    """Verify `chain` (leaf first; it may end with a copy of `root`) up to the trusted `root`.

    A last certificate that names itself as issuer must be the trusted root, byte for byte; a path that
    ends anywhere else (a self-made root, a foreign CA) is refused with `check`.
    """
    path = list(chain)
    if not path:
        raise VerificationError(check, "the certificate chain is empty")
    if path[-1].issuer == path[-1].subject:
        if path[-1] != root:
            raise VerificationError(
                check,
                f"the chain ends in {common_name(path[-1].subject)!r}, which is not the trusted root",
            )
        path = path[:-1]
    path.append(root)
    for child, parent in zip(path, path[1:]):
        if child.issuer != parent.subject:
            raise VerificationError(
                check,
                f"{common_name(child.subject)!r} is issued by {common_name(child.issuer)!r}, "
                f"not by {common_name(parent.subject)!r}",
            )
        if not _is_ca(parent):
            raise VerificationError(check, f"{common_name(parent.subject)!r} is not a CA certificate")
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, *PARSE_ERRORS):
            raise VerificationError(
                check,
                f"the signature on {common_name(child.subject)!r} does not verify under "
                f"{common_name(parent.subject)!r}",
            ) from None
    for cert in path:
        _check_window(cert, at, expired_check)
