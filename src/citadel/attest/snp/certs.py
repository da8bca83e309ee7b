"""AMD certificates: the VCEK/VLEK's KDS extensions, ASK/ARK bundles, and RSA-PSS chain checks.

AMD's key distribution service (KDS, spec 57230) issues each chip a VCEK (or each cloud provider
a VLEK) certified by the product's ASK (or ASVK), which the product's self-signed ARK certifies.
ASK and ARK sign with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48. The VCEK carries the chip id
(hwID) and the TCB it was derived for as private extensions under 1.3.6.1.4.1.3704.1.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cryptography
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from citadel.errors import VerificationError

KDS_OID = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = KDS_OID + ".1"
OID_PRODUCT_NAME = KDS_OID + ".2"
OID_HWID = KDS_OID + ".4"
OID_CSP_ID = KDS_OID + ".5"
# 1.3.6.1.4.1.3704.1.3.x: security patch levels, by short name.
SPL_OIDS = {
    KDS_OID + ".3.1": "bl",
    KDS_OID + ".3.2": "tee",
    KDS_OID + ".3.3": "snp",
    KDS_OID + ".3.4": "spl4",
    KDS_OID + ".3.5": "spl5",
    KDS_OID + ".3.6": "spl6",
    KDS_OID + ".3.7": "spl7",
    KDS_OID + ".3.8": "ucode",
    KDS_OID + ".3.9": "fmc",
}
REQUIRED_SPLS = ("bl", "tee", "snp", "ucode")
TURIN_HWID_SIZE = 8
CHIP_ID_SIZE = 64

AMD_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
ROOTS_DIR = Path(__file__).resolve().parent.parent / "roots"
# bundle key -> file in ROOTS_DIR (copies of AMD KDS /vcek/v1/<product>/cert_chain, /vlek/v1/...)
DEFAULT_BUNDLE_FILES = {
    "milan": "ask_ark_milan.pem",
    "genoa": "ask_ark_genoa.pem",
    "turin": "ask_ark_turin_vcek.pem",
    "milan_vlek": "ask_ark_milan_vlek.pem",
    "genoa_vlek": "ask_ark_genoa_vlek.pem",
    "turin_vlek": "ask_ark_turin_vlek.pem",
}


def bundle_key(product: str, vlek: bool) -> str:
    return product.lower() + ("_vlek" if vlek else "")


# Everything cryptography raises for a certificate it cannot read (some fields are parsed lazily).
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

# AMD encodes RSA-PSS parameters with an explicit default trailer field, which cryptography < 43 refuses.
_REMEDY = (
    "AMD certificates need cryptography 43 or newer (this is " + cryptography.__version__ + ")"
    if int(cryptography.__version__.split(".")[0]) < 43
    else "supply the certificate AMD's KDS issued, unchanged"
)


def load_cert(data: bytes, what: str, check: str = "snp.chain") -> x509.Certificate:
    """One certificate from DER or PEM; AMD's serial-number quirks only warn, so silence that."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if data.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
            _parse_fully(cert)
    except _PARSE_ERRORS as exc:
        raise VerificationError(check, f"the {what} is not a readable X.509 certificate ({exc})", _REMEDY) from None
    return cert


def _parse_fully(cert: x509.Certificate) -> None:
    """cryptography parses some fields lazily; touch them all now, so later reads cannot raise."""
    for name in (
        "issuer",
        "subject",
        "extensions",
        "signature",
        "tbs_certificate_bytes",
        "signature_algorithm_oid",
        "serial_number",
    ):
        getattr(cert, name)
    _utc_attr(cert, "not_valid_before")
    _utc_attr(cert, "not_valid_after")
    cert.public_key()
    for ext in cert.extensions:
        ext.value  # noqa: B018 (forces parsing)


def load_bundle(pem: bytes, what: str) -> Tuple[x509.Certificate, x509.Certificate]:
    """(ASK, ARK) from a KDS cert_chain PEM: the ASK (or ASVK) first, then the ARK."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(pem)
            for cert in certs:
                _parse_fully(cert)
    except _PARSE_ERRORS as exc:
        raise VerificationError("snp.chain", f"the {what} is not a PEM certificate bundle ({exc})") from None
    if len(certs) != 2:
        raise VerificationError("snp.chain", f"the {what} must hold exactly ASK then ARK, found {len(certs)}")
    return certs[0], certs[1]


def bundle_key_of(pem: bytes) -> str:
    """The bundle key of a KDS cert_chain, from its ASK: SEV-Milan gives milan, SEV-VLEK-Genoa genoa_vlek."""
    ask, _ = load_bundle(pem, "ASK/ARK bundle")
    name = common_name(ask.subject)
    product = name.rsplit("-", 1)[-1]
    if not name.startswith("SEV-") or product not in ("Milan", "Genoa", "Turin"):
        raise VerificationError("snp.chain", f"the bundle's ASK {name!r} is not an AMD SEV ASK or ASVK")
    return bundle_key(product, vlek="-VLEK-" in name)


def default_bundles() -> Dict[str, bytes]:
    """The AMD ASK/ARK bundles shipped with Citadel, by key (milan, genoa, turin, *_vlek)."""
    return {key: (ROOTS_DIR / name).read_bytes() for key, name in DEFAULT_BUNDLE_FILES.items()}


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _utc_attr(cert: x509.Certificate, name: str) -> _dt.datetime:
    """`cert.<name>_utc` (cryptography >= 42) or the naive UTC `cert.<name>` of cryptography 41."""
    value = getattr(cert, name + "_utc", None)
    if value is None:
        value = getattr(cert, name).replace(tzinfo=_dt.timezone.utc)
    assert isinstance(value, _dt.datetime)
    return value


def check_validity(cert: x509.Certificate, what: str, at: _dt.datetime) -> None:
    start, end = _utc_attr(cert, "not_valid_before"), _utc_attr(cert, "not_valid_after")
    if not start <= at <= end:
        raise VerificationError(
            "snp.cert_validity",
            f"the {what} is valid from {start:%Y-%m-%d} to {end:%Y-%m-%d}, not at {at:%Y-%m-%dT%H:%M:%SZ}",
        )


def check_is_ca(cert: x509.Certificate, what: str) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        constraints = None
    if constraints is None or not constraints.ca:
        raise VerificationError("snp.chain", f"the {what} is not a CA certificate")


def verify_pss(child: x509.Certificate, issuer: x509.Certificate, check: str, what: str) -> None:
    """`issuer` signed `child` with RSASSA-PSS SHA-384 salt 48, and the names chain."""
    if child.issuer != issuer.subject:
        raise VerificationError(
            "snp.chain",
            f"the {what} names issuer {child.issuer.rfc4514_string()!r}, not {issuer.subject.rfc4514_string()!r}",
        )
    try:
        sha384 = isinstance(child.signature_hash_algorithm, hashes.SHA384)
    except UnsupportedAlgorithm:
        sha384 = False
    if child.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS or not sha384:
        raise VerificationError("snp.chain", f"the {what} is not signed with RSASSA-PSS SHA-384")
    if not _same_algorithm_inside_and_out(child):
        raise VerificationError(check, f"the {what}'s signature algorithm differs from the one it signed")
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationError("snp.chain", f"the issuer of the {what} has no RSA key")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, AMD_PSS, hashes.SHA384())
    except InvalidSignature:
        raise VerificationError(check, f"the {what}'s signature does not verify") from None


def _der_elements(data: bytes) -> List[Tuple[int, bytes, bytes]]:
    """The (tag, whole element, contents) of each DER element in `data`, in order."""
    elements = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("short DER element")
        first = data[pos + 1]
        start, length = pos + 2, first
        if first >= 0x80:
            count = first & 0x7F
            if count == 0 or count > 4:
                raise ValueError("bad DER length")
            start, length = pos + 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
        end = start + length
        if end > len(data):
            raise ValueError("DER element runs past its container")
        elements.append((data[pos], data[pos:end], data[start:end]))
        pos = end
    return elements


def _same_algorithm_inside_and_out(cert: x509.Certificate) -> bool:
    """RFC 5280: the unsigned signatureAlgorithm equals the signed TBS signature field, byte for byte."""
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        ((_, _, body),) = _der_elements(cert.public_bytes(Encoding.DER))
        (_, _, tbs), (_, outer, _), _ = _der_elements(body)
        fields = _der_elements(tbs)
        inner = fields[2 if fields[0][0] == 0xA0 else 1][1]  # after [0] version (if any) and serialNumber
    except ValueError:
        return False
    return inner == outer


@dataclass(frozen=True)
class KdsExtensions:
    """What a VCEK or VLEK certificate says about the key it certifies."""

    product_name: str  # e.g. "Milan-B0"
    spl: Dict[str, int]  # bl, tee, snp, ucode, spl4..7, fmc (as present)
    hwid: Optional[bytes]  # VCEK only: the chip id (64 bytes, 8 on Turin)
    csp_id: Optional[str]  # VLEK only: the cloud provider

    @property
    def product(self) -> str:
        return self.product_name.split("-", 1)[0]


def _der_tlv(data: bytes) -> Tuple[int, bytes]:
    """The (tag, value) of one complete DER element; VerificationError on anything else."""
    if len(data) < 2:
        raise ValueError("short DER element")
    tag, first = data[0], data[1]
    if first < 0x80:
        length, start = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise ValueError("bad DER length")
        length, start = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if start + length != len(data):
        raise ValueError("DER length does not match the extension")
    return tag, data[start:]


def _ext_int(value: bytes, name: str) -> int:
    tag, body = _der_tlv(value)
    if tag != 0x02 or not 1 <= len(body) <= 2:
        raise ValueError(f"{name} is not a small INTEGER")
    number = int.from_bytes(body, "big", signed=True)
    if not 0 <= number <= 255:
        raise ValueError(f"{name} = {number} is not 0-255")
    return number


def _ext_ia5(value: bytes, name: str) -> str:
    tag, body = _der_tlv(value)
    if tag != 0x16:
        raise ValueError(f"{name} is not an IA5String")
    return body.decode("ascii")


def parse_kds_extensions(cert: x509.Certificate, vlek: bool) -> KdsExtensions:
    """The KDS extensions of a VCEK (vlek=False) or VLEK; VerificationError('snp.vcek_extensions')."""
    raw: Dict[str, bytes] = {}
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if oid.startswith(KDS_OID + ".") and isinstance(ext.value, x509.UnrecognizedExtension):
            raw[oid] = ext.value.value
    try:
        if OID_PRODUCT_NAME not in raw:
            raise ValueError("no productName extension")
        product_name = _ext_ia5(raw[OID_PRODUCT_NAME], "productName")
        spl = {name: _ext_int(raw[oid], name) for oid, name in SPL_OIDS.items() if oid in raw}
        missing = [name for name in REQUIRED_SPLS if name not in spl]
        if product_name.startswith("Turin") and "fmc" not in spl:
            missing.append("fmc")
        if missing:
            raise ValueError("missing security patch level(s): " + ", ".join(missing))
        hwid = csp_id = None
        if OID_HWID in raw:
            hwid = _hwid(raw[OID_HWID])
        if OID_CSP_ID in raw:
            csp_id = _ext_ia5(raw[OID_CSP_ID], "cspID")
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(
            "snp.vcek_extensions", f"the certificate's KDS extensions are malformed: {exc}"
        ) from None
    kind = "VLEK" if vlek else "VCEK"
    if vlek and (csp_id is None or hwid is not None):
        raise VerificationError("snp.vcek_extensions", "a VLEK must carry a cspID and no hwID")
    if not vlek and (hwid is None or csp_id is not None):
        raise VerificationError("snp.vcek_extensions", f"a {kind} must carry a hwID and no cspID")
    return KdsExtensions(product_name=product_name, spl=spl, hwid=hwid, csp_id=csp_id)


def _hwid(value: bytes) -> bytes:
    # The KDS stores the hwID as the raw bytes (no DER tag); accept a DER OCTET STRING too.
    if len(value) in (CHIP_ID_SIZE, TURIN_HWID_SIZE):
        return value
    tag, body = _der_tlv(value)
    if tag != 0x04 or len(body) not in (CHIP_ID_SIZE, TURIN_HWID_SIZE):
        raise ValueError("hwID is neither 64 nor 8 raw bytes nor an OCTET STRING of that size")
    return body


def chain_summary(certs: List[x509.Certificate]) -> List[str]:
    return [common_name(cert.subject) for cert in certs]
