"""The CAS's TLS identity: its own CA and server certificate, and the fingerprint clients pin.

On first start the CAS makes, in `<state>/tls/`, an ECDSA P-256 CA (`ca.pem`, `ca.key`) and a server
key and certificate signed by it (`server.key`, `server.pem` = leaf then CA). Clients pin the
SHA-256 of the server's SubjectPublicKeyInfo (`fingerprint`), so renewing the certificate (done at
start when fewer than 30 days remain, with the same key) does not change the pin. An operator's own
certificate (`--tls-cert/--tls-key`) is used as given; its fingerprint is computed the same way.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from citadel.attest.client import spki_fingerprint
from citadel.cas.errors import StateError

RENEW_BEFORE = dt.timedelta(days=30)
SERVER_VALIDITY = dt.timedelta(days=397)
CA_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM chain, leaf first
    key: Path
    fingerprint: str  # 64 hex: SHA-256 of the leaf's SubjectPublicKeyInfo
    generated: bool  # made (or renewed) by this call


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise StateError(f"{path} is not an EC private key", f"remove {path.parent} to make new TLS files")
    return key


def _names(extra: Iterable[str]) -> List[x509.GeneralName]:
    out: List[x509.GeneralName] = []
    for name in ["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra]:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            entry = x509.DNSName(name)
        if entry not in out:
            out.append(entry)
    return out


def _make_ca(tls_dir: Path, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Citadel CAS local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(tls_dir / "ca.key", _key_pem(key))
    (tls_dir / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue_server(tls_dir: Path, now: dt.datetime, sans: Iterable[str]) -> None:
    ca_key = _load_key(tls_dir / "ca.key")
    ca_cert = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    key_path = tls_dir / "server.key"
    if key_path.exists():
        key = _load_key(key_path)  # renewals keep the key: the pin stays
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(key_path, _key_pem(key))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Citadel CAS")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_names(sans)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    (tls_dir / "server.pem").write_bytes(chain)


def fingerprint_of(cert_path: Path) -> str:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise StateError(
            f"cannot read the TLS certificate {str(cert_path)!r}: {exc}",
            "give a PEM certificate (leaf first) with --tls-cert",
        ) from None
    return spki_fingerprint(cert.public_bytes(serialization.Encoding.DER))


def ensure_tls(
    state_dir: Path,
    *,
    cert: Optional[Path] = None,
    key: Optional[Path] = None,
    sans: Iterable[str] = (),
    now: Optional[dt.datetime] = None,
) -> TlsFiles:
    """The certificate and key to serve with: the operator's, or the CAS's own (made or renewed)."""
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise StateError("--tls-cert and --tls-key go together", "give both, or neither")
        if not key.is_file():
            raise StateError(f"TLS key {str(key)!r} not found", "give the server's private key in PEM")
        return TlsFiles(cert, key, fingerprint_of(cert), False)
    moment = now or dt.datetime.now(dt.timezone.utc)
    tls_dir = state_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    generated = False
    if not (tls_dir / "ca.key").exists():
        _make_ca(tls_dir, moment)
        generated = True
    server_pem = tls_dir / "server.pem"
    if not server_pem.exists() or _expires_soon(server_pem, moment):
        _issue_server(tls_dir, moment, sans)
        generated = True
    fingerprint = fingerprint_of(server_pem)
    (tls_dir / "fingerprint").write_text(fingerprint + "\n")
    return TlsFiles(server_pem, tls_dir / "server.key", fingerprint, generated)


def _expires_soon(cert_path: Path, now: dt.datetime) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc - now < RENEW_BEFORE


def format_fingerprint(fingerprint: str) -> str:
    return "sha256:" + fingerprint
