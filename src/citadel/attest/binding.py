"""Bind evidence to one CAS nonce and one engine key, and encrypt the release to that key.

Engine-safe (standard library + `cryptography`, Python 3.9). Two constructions, both written down
byte by byte in docs/attestation-protocol.md:

* ``report_data(nonce, public_key)``: the 64 bytes an engine asks its TEE to put into the evidence
  (SGX/TDX/SNP report data, a TPM quote's qualifying data, a sim statement). SHA-512 over a label
  and the two length-prefixed values, so evidence made for one nonce or one key never matches another.
* ``seal(recipient_public, plaintext, context=)`` / ``open_sealed(private_key, blob, context=)``: an
  HPKE-style one-shot encryption (RFC 9180's base mode, composed from `cryptography` primitives):
  an ephemeral X25519 key agreement, HKDF-SHA256 with distinct labels for the AES-256-GCM key and
  nonce, and the header and the caller's context as associated data.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from citadel.crypto import digests_equal
from citadel.errors import VerificationError

REPORT_DATA_SIZE = 64
REPORT_DATA_LABEL = b"citadel/report-data/v1\x00"
PUBLIC_KEY_SIZE = 32  # raw X25519

SEAL_MAGIC = b"CREL"
SEAL_VERSION = 1
SUITE_X25519_HKDF_SHA256_AES256GCM = 1
#: magic, version, suite, reserved (zero), encapsulated (ephemeral) public key
SEAL_HEADER = struct.Struct(">4sBBH32s")
KEY_LABEL = b"citadel/seal/v1/key"
NONCE_LABEL = b"citadel/seal/v1/nonce"
GCM_TAG_SIZE = 16


def _len_prefixed(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def report_data(nonce: bytes, public_key: bytes) -> bytes:
    """The 64 report-data bytes that bind a CAS nonce and an engine's ephemeral X25519 public key.

    SHA-512( "citadel/report-data/v1\\0" || u16be(len(nonce)) || nonce || u16be(32) || public_key )
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError("the engine's public key is a raw X25519 key of 32 bytes")
    if not 0 < len(nonce) <= 0xFFFF:
        raise ValueError("the nonce must be 1 to 65535 bytes")
    return hashlib.sha512(REPORT_DATA_LABEL + _len_prefixed(nonce) + _len_prefixed(public_key)).digest()


def verify_report_data(observed: bytes, nonce: bytes, public_key: bytes) -> None:
    """Raise unless the evidence's report data is exactly the binding of this nonce and key.

    Evidence kinds with a longer field (none today) would carry the 64 bytes first; anything after
    them must be zero.
    """
    expected = report_data(nonce, public_key)
    head, tail = observed[:REPORT_DATA_SIZE], observed[REPORT_DATA_SIZE:]
    if len(head) != REPORT_DATA_SIZE or tail.strip(b"\x00") or not digests_equal(head, expected):
        raise VerificationError(
            "binding",
            "the evidence's report data does not bind this nonce and public key "
            "(evidence made for another request or another key)",
            "make fresh evidence over report_data(nonce, public key) for this request",
        )


def generate_key_pair() -> Tuple[X25519PrivateKey, bytes]:
    """A fresh ephemeral X25519 key pair: (private key, raw 32-byte public key)."""
    private = X25519PrivateKey.generate()
    return private, raw_public(private)


def raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_schedule(shared: bytes, enc: bytes, recipient: bytes, context: bytes) -> Tuple[bytes, bytes]:
    salt = enc + recipient
    ctx_digest = hashlib.sha256(context).digest()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=KEY_LABEL + ctx_digest).derive(shared)
    nonce = HKDF(algorithm=hashes.SHA256(), length=12, salt=salt, info=NONCE_LABEL + ctx_digest).derive(shared)
    return key, nonce


def seal(recipient_public: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt `plaintext` so that only the holder of the X25519 private key can read it.

    `context` (for a release: the nonce and the config id) is bound as associated data; the opener
    must give the same bytes. Each call uses a new ephemeral key, so (key, nonce) never repeats.
    """
    if len(recipient_public) != PUBLIC_KEY_SIZE:
        raise ValueError("the recipient key is a raw X25519 key of 32 bytes")
    recipient = X25519PublicKey.from_public_bytes(recipient_public)
    ephemeral = X25519PrivateKey.generate()
    enc = raw_public(ephemeral)
    shared = ephemeral.exchange(recipient)
    key, nonce = _key_schedule(shared, enc, recipient_public, context)
    header = SEAL_HEADER.pack(SEAL_MAGIC, SEAL_VERSION, SUITE_X25519_HKDF_SHA256_AES256GCM, 0, enc)
    return header + AESGCM(key).encrypt(nonce, plaintext, header + context)


def open_sealed(private_key: X25519PrivateKey, blob: bytes, *, context: bytes) -> bytes:
    """Decrypt a `seal` blob; any defect (format, key, context, a changed byte) is one error."""
    failure = VerificationError(
        "release",
        "the CAS's answer cannot be decrypted with this engine's key (corrupt, or made for another request)",
        "retry the attestation; if it persists, the connection to the CAS is being tampered with",
    )
    if len(blob) < SEAL_HEADER.size + GCM_TAG_SIZE:
        raise failure
    magic, version, suite, reserved, enc = SEAL_HEADER.unpack_from(blob)
    if (magic, version, suite, reserved) != (SEAL_MAGIC, SEAL_VERSION, SUITE_X25519_HKDF_SHA256_AES256GCM, 0):
        raise failure
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(enc))
    except ValueError:  # a low-order point gives an all-zero shared secret; cryptography refuses it
        raise failure from None
    key, nonce = _key_schedule(shared, enc, raw_public(private_key), context)
    header = blob[: SEAL_HEADER.size]
    try:
        return AESGCM(key).decrypt(nonce, blob[SEAL_HEADER.size :], header + context)
    except InvalidTag:
        raise failure from None


def release_context(nonce: bytes, config_id: str) -> bytes:
    """The associated data of a release: the request's nonce and its config id, length-prefixed."""
    return b"citadel/release/v1\x00" + _len_prefixed(nonce) + _len_prefixed(config_id.encode("utf-8"))
