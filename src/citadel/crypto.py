"""Small compositions of `cryptography` primitives used across Citadel (engine-safe).

Nothing here invents cryptography: HKDF-SHA256 for derived keys (each use has its own
label), AES-256-GCM for content, SHA-256 for digests, constant-time comparison for tags.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32
GCM_TAG_SIZE = 16


def derive_key(ikm: bytes, *, salt: bytes, label: str, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256 with a distinct label per use, so no two uses share a key."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=label.encode()).derive(ikm)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digests_equal(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two tags or digests (hex strings or raw bytes)."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)
