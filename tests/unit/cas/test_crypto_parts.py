"""Envelope encryption, nonces, request signatures (cas/envelope.py, nonces.py, auth.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citadel.cas import auth, envelope, nonces
from citadel.cas.errors import Refused, StateError, Unauthenticated

KEYRING = envelope.Keyring(b"m" * 32)


def test_envelope_round_trip_and_fresh_data_keys() -> None:
    a = KEYRING.seal(b"secret", context=b"row:1")
    b = KEYRING.seal(b"secret", context=b"row:1")
    assert a != b
    assert KEYRING.open(a, context=b"row:1") == b"secret"
    assert b"secret" not in a


@pytest.mark.parametrize("defect", ["moved_to_another_row", "flipped_byte", "truncated", "wrong_master_key"])
def test_envelope_refuses(defect: str) -> None:
    blob = KEYRING.seal(b"secret", context=b"row:1")
    ring, context = KEYRING, b"row:1"
    if defect == "moved_to_another_row":
        context = b"row:2"
    elif defect == "flipped_byte":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    elif defect == "truncated":
        blob = blob[:40]
    else:
        ring = envelope.Keyring(b"n" * 32)
    with pytest.raises(StateError):
        ring.open(blob, context=context)


def test_master_key_file_is_made_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "state" / "master.key"
    key = envelope.load_master_key(path, create=True)
    assert len(key) == 32 and os.stat(path).st_mode & 0o777 == 0o600
    assert envelope.load_master_key(path, create=False) == key
    os.chmod(path, 0o644)
    with pytest.raises(StateError, match="readable by others"):
        envelope.load_master_key(path, create=False)
    with pytest.raises(StateError, match="does not exist"):
        envelope.load_master_key(tmp_path / "absent", create=False)


def test_nonce_fresh_stale_forged() -> None:
    nonce = nonces.issue(KEYRING, 1000.0)
    assert len(nonce) == nonces.NONCE_SIZE
    digest = nonces.check(KEYRING, nonce, 1010.0, ttl=60)
    assert len(digest) == 64
    with pytest.raises(Refused) as stale:
        nonces.check(KEYRING, nonce, 1100.0, ttl=60)
    assert stale.value.code == "stale_nonce"
    forged = nonce[:-1] + bytes([nonce[-1] ^ 1])
    with pytest.raises(Refused) as bad:
        nonces.check(KEYRING, forged, 1010.0, ttl=60)
    assert bad.value.code == "invalid_nonce"
    with pytest.raises(Refused):
        nonces.check(envelope.Keyring(b"z" * 32), nonce, 1010.0, ttl=60)


def test_signed_request_round_trip_and_defects() -> None:
    key = auth.Ed25519PrivateKey.generate()
    headers = auth.sign_headers(key, "PUT", "/v1/sessions/x?a=1", b'{"p":1}', now=1000.0)
    identity = auth.verify_request(headers["Authorization"], "PUT", "/v1/sessions/x?a=1", b'{"p":1}', now=1001.0)
    assert identity == auth.identity_of(auth.public_raw(key))
    assert auth.IDENTITY.match(identity)
    cases = {
        "changed_body": ("PUT", "/v1/sessions/x?a=1", b'{"p":2}', 1001.0),
        "changed_path": ("PUT", "/v1/sessions/y?a=1", b'{"p":1}', 1001.0),
        "changed_method": ("DELETE", "/v1/sessions/x?a=1", b'{"p":1}', 1001.0),
        "clock_skew": ("PUT", "/v1/sessions/x?a=1", b'{"p":1}', 1000.0 + auth.MAX_SKEW + 5),
    }
    for name, (method, path, body, now) in cases.items():
        with pytest.raises(Unauthenticated):
            auth.verify_request(headers["Authorization"], method, path, body, now=now)
        assert name
    for header in (None, "Bearer x", "Citadel-Ed25519 key=AAAA"):
        with pytest.raises(Unauthenticated):
            auth.verify_request(header, "GET", "/", b"", now=1000.0)


def test_client_key_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "c" / "client.key"
    key, created = auth.load_or_create_client_key(path)
    again, created_again = auth.load_or_create_client_key(path)
    assert created and not created_again
    assert auth.public_raw(key) == auth.public_raw(again)
    assert os.stat(path).st_mode & 0o777 == 0o600
