"""Session secrets: generating them, checking imported ones, and encoding them for references.

Kinds: ascii (random letters and digits), binary (random bytes), private-key (EC, Ed25519 or
RSA), x509-ca (a CA certificate with its key; self-signed, or issued by another x509-ca) and x509
(a certificate issued by an x509-ca secret, for a private-key secret or a key of its own). A
generated secret keeps its value across session updates while its specification (and what it
depends on) is unchanged. Stored values are only ever written encrypted (envelope.py).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import json
import secrets as _random
import string
from typing import Any, Dict, List, Mapping, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Stored = Dict[str, Any]
ALPHABET = string.ascii_letters + string.digits
DEFAULT_SIZE = 32


def spec_digest(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dependencies(spec: Mapping[str, Any]) -> List[str]:
    if spec["kind"] in ("x509", "x509-ca"):
        return [n for n in (spec.get("issuer"), spec.get("private_key")) if n]
    return []


def decode_binary(spec: Mapping[str, Any]) -> bytes:
    text = str(spec["value"])
    if spec.get("encoding", "hex") == "base64":
        return base64.b64decode(text, validate=True)
    return bytes.fromhex(text)


def check_import(spec: Mapping[str, Any]) -> Optional[str]:
    """Why an imported value is unusable, or None."""
    kind, value = spec["kind"], spec.get("value")
    if value is None:
        return None
    try:
        if kind == "binary":
            decode_binary(spec)
        elif kind == "private-key":
            _load_key(str(value))
        elif kind in ("x509", "x509-ca"):
            x509.load_pem_x509_certificate(str(value).encode())
    except (ValueError, TypeError, binascii.Error) as exc:
        return f"the imported {kind} value cannot be read: {str(exc).splitlines()[0] if str(exc) else 'invalid'}"
    return None


def _load_key(pem: str) -> Any:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)):
        raise ValueError("only EC, Ed25519 and RSA private keys are supported")
    return key


def _key_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _new_key(algorithm: str) -> Any:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    return ec.generate_private_key(ec.SECP384R1() if algorithm == "ec-p384" else ec.SECP256R1())


def _sign_hash(key: Any) -> Optional[hashes.SHA256]:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _certificate(spec: Mapping[str, Any], key: Any, issuer: Optional[Stored], now: dt.datetime) -> str:
    is_ca = spec["kind"] == "x509-ca"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.get("common_name") or spec["name"])])
    if issuer is not None:
        issuer_cert = x509.load_pem_x509_certificate(issuer["cert"].encode())
        issuer_name, signer = issuer_cert.subject, _load_key(issuer["key"])
    else:
        issuer_name, signer = subject, key
    days = int(spec.get("valid_days", 3650 if is_ca else 365))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = spec.get("usage") or ["server"]
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH if u == "server" else ExtendedKeyUsageOID.CLIENT_AUTH for u in usage]
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        names: List[x509.GeneralName] = [x509.DNSName(d) for d in spec.get("dns", [])]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.get("ip", [])]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer, _sign_hash(signer))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _make(spec: Mapping[str, Any], done: Mapping[str, Stored], now: dt.datetime) -> Stored:
    kind, value = spec["kind"], spec.get("value")
    out: Stored = {"kind": kind}
    if kind == "ascii":
        out["value"] = (
            str(value)
            if value is not None
            else "".join(_random.choice(ALPHABET) for _ in range(int(spec.get("size", DEFAULT_SIZE))))
        )
    elif kind == "binary":
        raw = decode_binary(spec) if value is not None else _random.token_bytes(int(spec.get("size", DEFAULT_SIZE)))
        out["value"] = raw.hex()
    elif kind == "private-key":
        out["key"] = (
            _key_pem(_load_key(str(value)))
            if value is not None
            else _key_pem(_new_key(spec.get("algorithm", "ec-p256")))
        )
    else:
        key_pem = done[spec["private_key"]]["key"] if spec.get("private_key") else None
        if value is not None:
            out["cert"], out["key"] = str(value), key_pem
        else:
            key = _load_key(key_pem) if key_pem else _new_key(spec.get("algorithm", "ec-p256"))
            issuer = done[spec["issuer"]] if spec.get("issuer") else None
            out["cert"], out["key"] = _certificate(spec, key, issuer, now), _key_pem(key)
        out["issuer"] = spec.get("issuer")
    return out


def materialize(
    specs: Mapping[str, Mapping[str, Any]], previous: Mapping[str, Stored], now: Optional[dt.datetime] = None
) -> Dict[str, Stored]:
    """Values for every secret: kept from `previous` where the spec and its dependencies are unchanged.

    `specs` must be validated (parse.py checks references and cycles).
    """
    moment = now or dt.datetime.now(dt.timezone.utc)
    done: Dict[str, Stored] = {}
    kept: Dict[str, bool] = {}

    def visit(name: str) -> None:
        if name in done:
            return
        spec = specs[name]
        deps = dependencies(spec)
        for dep in deps:
            visit(dep)
        digest = spec_digest(spec)
        old = previous.get(name)
        if old is not None and old.get("spec") == digest and all(kept[d] for d in deps):
            done[name], kept[name] = dict(old), True
            return
        stored = _make(spec, done, moment)
        stored["spec"] = digest
        done[name], kept[name] = stored, False

    for name in specs:
        visit(name)
    return done


def _chain(stored: Stored, all_stored: Mapping[str, Stored]) -> str:
    parts, seen, current = [stored["cert"]], set(), stored
    while current.get("issuer") and current["issuer"] not in seen:
        seen.add(current["issuer"])
        current = all_stored[current["issuer"]]
        parts.append(current["cert"])
    return "".join(parts)


def encode(stored: Stored, encoding: str, all_stored: Mapping[str, Stored]) -> Union[str, bytes]:
    """The value of a secret in one encoding (refs.ENCODINGS lists which exist for each kind)."""
    kind = stored["kind"]
    if kind in ("ascii", "binary"):
        raw = stored["value"].encode("utf-8") if kind == "ascii" else bytes.fromhex(stored["value"])
        if encoding == "hex":
            return raw.hex()
        if encoding == "base64":
            return base64.b64encode(raw).decode()
        return stored["value"] if kind == "ascii" else raw
    if kind == "private-key":
        if encoding == "public":
            return (
                _load_key(stored["key"])
                .public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                .decode()
            )
        return str(stored["key"])
    if encoding == "key":
        return str(stored["key"] or "")
    if encoding == "chain":
        return _chain(stored, all_stored)
    return str(stored["cert"])


def redacted(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """A secret's specification without its value (what `session show` prints)."""
    out = {k: v for k, v in spec.items() if k != "value"}
    if "value" in spec:
        out["value"] = "<imported, hidden>"
    return out
