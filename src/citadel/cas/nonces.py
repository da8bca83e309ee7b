"""Attestation nonces: fresh, made by this CAS (or a replica sharing its master key), used once.

A nonce is 48 bytes: NONCE_BODY (u8 version=1, u64 issue time in ms since the epoch, 23 random
bytes) followed by the first 16 bytes of HMAC-SHA256(nonce key, body). Issuing one needs no
database write; the CAS checks the MAC and the age when the nonce comes back, and records
SHA-256(nonce) as used in the same transaction that audits the attestation, so a replay fails
on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from citadel.cas.envelope import Keyring
from citadel.cas.errors import Refused

NONCE_BODY = struct.Struct(">BQ23s")
MAC_SIZE = 16
NONCE_SIZE = NONCE_BODY.size + MAC_SIZE
VERSION = 1
FUTURE_SKEW_MS = 2_000


def issue(keyring: Keyring, now: float) -> bytes:
    body = NONCE_BODY.pack(VERSION, int(now * 1000), os.urandom(23))
    return body + keyring.mac("nonce", body)[:MAC_SIZE]


def check(keyring: Keyring, nonce: bytes, now: float, ttl: float) -> str:
    """Raise Refused unless the nonce is one of ours and fresh; return its single-use digest (hex)."""
    if len(nonce) != NONCE_SIZE:
        raise Refused(
            "invalid_nonce",
            "the nonce was not issued by this CAS",
            "fetch a nonce with POST /v1/attest/nonce right before attesting",
        )
    body, mac = nonce[: NONCE_BODY.size], nonce[NONCE_BODY.size :]
    version, issued_ms, _ = NONCE_BODY.unpack(body)
    if version != VERSION or not hmac.compare_digest(mac, keyring.mac("nonce", body)[:MAC_SIZE]):
        raise Refused(
            "invalid_nonce",
            "the nonce was not issued by this CAS (or by a replica with its key)",
            "fetch a nonce from the CAS you attest to",
        )
    age_ms = now * 1000 - issued_ms
    if age_ms > ttl * 1000 or age_ms < -FUTURE_SKEW_MS:
        raise Refused(
            "stale_nonce",
            f"the nonce is {age_ms / 1000:.1f} s old; nonces are valid for {ttl:g} s",
            "attest again promptly after fetching a nonce (and check the clocks)",
        )
    return hashlib.sha256(nonce).hexdigest()


def expires_at(nonce: bytes, ttl: float) -> float:
    _, issued_ms, _ = NONCE_BODY.unpack(nonce[: NONCE_BODY.size])
    return issued_ms / 1000 + ttl + FUTURE_SKEW_MS / 1000
