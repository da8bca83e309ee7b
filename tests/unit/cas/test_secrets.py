"""Secret generation, keeping across updates, and encodings (cas/secrets.py)."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from citadel.cas import secrets
from citadel.cas.policy.parse import parse_policy

from .conftest import VALID_POLICY


def _specs(text: str = VALID_POLICY) -> dict:
    return parse_policy(text).policy.secrets


def test_every_kind_is_generated_or_imported() -> None:
    stored = secrets.materialize(_specs(), {})
    assert len(stored["token"]["value"]) == 16 and stored["token"]["value"].isalnum()
    assert stored["api_key"]["value"] == "imported-api-key-value"
    assert len(bytes.fromhex(stored["image_key"]["value"])) == 32
    assert bytes.fromhex(stored["blob"]["value"]) == b"\x00\xff\x10"
    ca = x509.load_pem_x509_certificate(stored["ca"]["cert"].encode())
    cert = x509.load_pem_x509_certificate(stored["server_cert"]["cert"].encode())
    cert.verify_directly_issued_by(ca)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["app.example"]
    assert stored["server_cert"]["key"] == stored["server_key"]["key"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_unchanged_secrets_survive_an_update_and_changed_ones_are_regenerated() -> None:
    first = secrets.materialize(_specs(), {})
    same = secrets.materialize(_specs(), first)
    assert same["token"]["value"] == first["token"]["value"]
    assert same["server_cert"]["cert"] == first["server_cert"]["cert"]
    changed_text = VALID_POLICY.replace("common_name: Demo CA", "common_name: New CA")
    changed = secrets.materialize(_specs(changed_text), first)
    assert changed["token"]["value"] == first["token"]["value"]
    assert changed["ca"]["cert"] != first["ca"]["cert"]
    assert changed["server_cert"]["cert"] != first["server_cert"]["cert"]  # its issuer changed


def test_encodings() -> None:
    stored = secrets.materialize(_specs(), {})
    token = stored["token"]
    assert secrets.encode(token, "raw", stored) == token["value"]
    assert secrets.encode(token, "hex", stored) == token["value"].encode().hex()
    assert base64.b64decode(secrets.encode(token, "base64", stored)) == token["value"].encode()
    assert secrets.encode(stored["blob"], "raw", stored) == b"\x00\xff\x10"
    chain = secrets.encode(stored["server_cert"], "chain", stored)
    assert isinstance(chain, str) and chain.count("BEGIN CERTIFICATE") == 2
    assert "PRIVATE KEY" in str(secrets.encode(stored["server_cert"], "key", stored))
    assert "PUBLIC KEY" in str(secrets.encode(stored["server_key"], "public", stored))


def test_redacted_hides_imported_values() -> None:
    spec = {"name": "k", "kind": "ascii", "value": "hunter2"}
    assert "hunter2" not in str(secrets.redacted(spec))
