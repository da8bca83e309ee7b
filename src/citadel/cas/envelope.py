"""Envelope encryption under the CAS master key: every record has its own data key.

The master key (32 random bytes) never encrypts data itself. HKDF-SHA256 derives from it, with
distinct labels, a key-encryption key (KEK) and the MAC keys the CAS needs (nonces, session hashes,
the audit head). Each record is encrypted with a fresh 32-byte data key (AES-256-GCM); the data key
is wrapped with the KEK (AES-256-GCM). Both layers take the record's context (table, name, version)
as associated data, so a ciphertext moved to another row does not decrypt.

Record layout (ENVELOPE_HEADER, then the data ciphertext with its 16-byte tag):
    "CENV" | u8 version=1 | u8 reserved=0 | 8-byte KEK id | 12-byte wrap nonce |
    48-byte wrapped data key (32 + tag) | 12-byte data nonce | ciphertext+tag

Where the master key lives is the operator's choice (docs/cas.md): by default a file `master.key`
in the state directory with mode 0600 (64 hex digits); `--master-key-file` points elsewhere (a
tmpfs a secret manager fills, a mounted Kubernetes secret); several replicas share one master key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from citadel.cas.errors import StateError
from citadel.crypto import derive_key

MASTER_KEY_SIZE = 32
MAGIC = b"CENV"
VERSION = 1
ENVELOPE_HEADER = struct.Struct(">4sBB8s12s48s12s")
_WRAP_PREFIX = struct.Struct(">4sBB8s12s")  # what the wrap layer authenticates besides the context
SALT = b"citadel/cas/master/v1"


class Keyring:
    """Keys derived from one master key; the master key itself is not kept."""

    def __init__(self, master: bytes) -> None:
        if len(master) != MASTER_KEY_SIZE:
            raise StateError("the CAS master key must be 32 bytes", "restore the master key file")
        self._kek = derive_key(master, salt=SALT, label="citadel/cas/kek/v1")
        self.key_id = hashlib.sha256(b"citadel/cas/kek-id/v1" + self._kek).digest()[:8]
        self._macs = {
            purpose: derive_key(master, salt=SALT, label=f"citadel/cas/mac/{purpose}/v1")
            for purpose in ("nonce", "session-hash", "audit-head")
        }

    def mac(self, purpose: str, data: bytes) -> bytes:
        """HMAC-SHA256 with the key for `purpose` (nonce, session-hash, audit-head)."""
        return hmac.new(self._macs[purpose], data, hashlib.sha256).digest()

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce, data_nonce = os.urandom(12), os.urandom(12)
        prefix = _WRAP_PREFIX.pack(MAGIC, VERSION, 0, self.key_id, wrap_nonce)
        wrapped = AESGCM(self._kek).encrypt(wrap_nonce, data_key, prefix + context)
        header = prefix + wrapped + data_nonce
        return header + AESGCM(data_key).encrypt(data_nonce, plaintext, header + context)

    def open(self, blob: bytes, *, context: bytes) -> bytes:
        if len(blob) < ENVELOPE_HEADER.size + 16:
            raise _corrupt()
        magic, version, reserved, key_id, wrap_nonce, wrapped, data_nonce = ENVELOPE_HEADER.unpack_from(blob)
        if (magic, version, reserved) != (MAGIC, VERSION, 0):
            raise _corrupt()
        if not hmac.compare_digest(key_id, self.key_id):
            raise StateError(
                "a stored record was encrypted under another master key",
                "start the CAS with the master key this database was made with",
            )
        prefix = blob[: _WRAP_PREFIX.size]
        header = blob[: ENVELOPE_HEADER.size]
        try:
            data_key = AESGCM(self._kek).decrypt(wrap_nonce, wrapped, prefix + context)
            return AESGCM(data_key).decrypt(data_nonce, blob[ENVELOPE_HEADER.size :], header + context)
        except InvalidTag:
            raise _corrupt() from None


def _corrupt() -> StateError:
    return StateError(
        "a stored record does not decrypt: it was changed or moved in the database",
        "restore the database from a backup; the audit log shows the last good change",
    )


def load_master_key(path: Path, *, create: bool) -> bytes:
    """Read the master key file (64 hex digits); make one (mode 0600) if allowed and absent."""
    if not path.exists():
        if not create:
            raise StateError(
                f"the CAS master key {str(path)!r} does not exist",
                "give --master-key-file, or start the CAS once with this state directory",
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(MASTER_KEY_SIZE) + "\n")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StateError(
            f"the CAS master key {str(path)!r} is readable by others (mode {oct(mode & 0o777)})",
            f"chmod 600 {path}",
        )
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError, UnicodeDecodeError):
        raise StateError(
            f"the CAS master key {str(path)!r} is not 64 hex digits",
            "restore the master key file from its backup",
        ) from None
    if len(key) != MASTER_KEY_SIZE:
        raise StateError(
            f"the CAS master key {str(path)!r} is not 64 hex digits",
            "restore the master key file from its backup",
        )
    return key
