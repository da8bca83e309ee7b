"""Byte layouts of a sealed image (docs/formats.md is the prose twin of this module).

Engine-safe: stdlib and `cryptography` only, importable on Python 3.9.

An image is a directory: the application's files at their relative paths (encrypted files as
CITF containers, authenticated and unprotected files as plain copies) plus the protection
manifest at ``.citadel/manifest`` (a CITM container). The image tag is the SHA-256 of the
manifest file's bytes; the manifest pins every protected file, so the tag pins the whole tree.
"""

from __future__ import annotations

import io
import json
import os
import struct
from typing import BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from citadel.crypto import GCM_TAG_SIZE, KEY_SIZE, derive_key, sha256_hex
from citadel.errors import ImageError, WrongKey
from citadel.seal.keytext import parse_key  # noqa: F401  (re-exported: the key's text form)

MANIFEST_PATH = ".citadel/manifest"
PYTHON_PATH_DIR = ".citadel/python-path"
DEFAULT_CHUNK_SIZE = 64 * 1024

ENCRYPTED = "encrypted"
AUTHENTICATED = "authenticated"
UNPROTECTED = "unprotected"
REGIONS = (ENCRYPTED, AUTHENTICATED, UNPROTECTED)

# --- CITF: one encrypted file -------------------------------------------------------------------
# magic, version, 3 reserved zero bytes, file id, chunk size, plaintext size (big-endian)
FILE_HEADER = struct.Struct(">4sB3x16sIQ")
FILE_MAGIC = b"CITF"
FILE_VERSION = 1
CHUNK_AAD = struct.Struct(">QB")  # chunk index, 1 if this is the last chunk else 0

# --- CITM: the protection manifest --------------------------------------------------------------
# magic, version, 3 reserved zero bytes, HKDF salt, GCM nonce
MANIFEST_HEADER = struct.Struct(">4sB3x16s12s")
MANIFEST_MAGIC = b"CITM"
MANIFEST_VERSION = 1
MANIFEST_KEY_LABEL = "citadel/v1/image-manifest"
MANIFEST_FORMAT = "citadel-manifest"


def chunk_count(size: int, chunk_size: int) -> int:
    """Every file has at least one chunk, so an emptied file still carries an authenticated end."""
    return max(1, -(-size // chunk_size))


def chunk_nonce(index: int) -> bytes:
    # Each file has its own random key, never reused for other content, so the chunk index is a
    # unique nonce under it.
    return index.to_bytes(12, "big")


def encrypt_chunks(
    key: bytes, file_id: bytes, size: int, chunks: Iterator[bytes], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield a CITF container piece by piece: header, then each sealed chunk.

    ``chunks`` must yield the plaintext in pieces of exactly ``chunk_size`` bytes (the last may
    be shorter, and an empty file yields one empty piece), adding up to ``size``.
    """
    header = FILE_HEADER.pack(FILE_MAGIC, FILE_VERSION, file_id, chunk_size, size)
    yield header
    aead = AESGCM(key)
    total = chunk_count(size, chunk_size)
    seen = 0
    for index, plain in enumerate(chunks):
        if index >= total:
            raise ValueError("more plaintext than the declared size")
        last = index == total - 1
        seen += len(plain)
        yield aead.encrypt(chunk_nonce(index), plain, header + CHUNK_AAD.pack(index, last))
    if seen != size:
        raise ValueError("plaintext does not add up to the declared size")


def decrypt_file(data: bytes, key: bytes, file_id: bytes, size: int) -> bytes:
    """Open a whole CITF container; raises ValueError naming what is wrong (the caller names the path)."""
    return b"".join(iter_decrypt(io.BytesIO(data), key, file_id, size))


def iter_decrypt(source: BinaryIO, key: bytes, file_id: bytes, size: int) -> Iterator[bytes]:
    """Yield the verified plaintext of a CITF container chunk by chunk, reading ``source`` as it goes.

    Each chunk is authenticated before it is yielded; a chunk that fails, a header that does not
    match the manifest's entry, or a container that is cut short or runs on raises ValueError.
    """
    header = _read_exact(source, FILE_HEADER.size)
    if header is None:
        raise ValueError("is shorter than its header")
    magic, version, found_id, chunk_size, found_size = FILE_HEADER.unpack(header)
    if magic != FILE_MAGIC or version != FILE_VERSION:
        raise ValueError("is not an encrypted Citadel file (bad magic or version)")
    if found_id != file_id or found_size != size or chunk_size <= 0:
        raise ValueError("has a header that does not match the manifest")
    total = chunk_count(size, chunk_size)
    aead = AESGCM(key)
    for index in range(total):
        sealed = _read_exact(source, min(chunk_size, size - index * chunk_size) + GCM_TAG_SIZE)
        if sealed is None:
            raise ValueError("has the wrong length (truncated or extended)")
        try:
            yield aead.decrypt(chunk_nonce(index), sealed, header + CHUNK_AAD.pack(index, index == total - 1))
        except InvalidTag:
            raise ValueError(f"failed authentication in chunk {index}") from None
    if source.read(1):
        raise ValueError("has the wrong length (truncated or extended)")


def _read_exact(source: BinaryIO, count: int) -> Optional[bytes]:
    """Exactly ``count`` bytes from ``source``, or None if it ends first."""
    parts = []
    remaining = count
    while remaining > 0:
        piece = source.read(remaining)
        if not piece:
            return None
        parts.append(piece)
        remaining -= len(piece)
    return b"".join(parts) if len(parts) != 1 else parts[0]


class FileEntry(NamedTuple):
    """What the manifest records for one protected file.

    A NamedTuple rather than a dataclass: the engine imports this at every start, and
    ``dataclasses`` (through ``inspect``) would add milliseconds to each one.
    """

    path: str
    region: str
    size: int
    sha256: str = ""  # plaintext digest (authenticated files)
    file_id: bytes = b""  # CITF file id (encrypted files)
    key: bytes = b""  # per-file content key (encrypted files); never shown by repr

    def __repr__(self) -> str:
        return (f"FileEntry(path={self.path!r}, region={self.region!r}, size={self.size}, "
                f"sha256={self.sha256!r}, file_id={self.file_id.hex()!r})")

    def to_json(self) -> dict:
        doc: dict = {"region": self.region, "size": self.size}
        if self.region == ENCRYPTED:
            doc["file_id"] = self.file_id.hex()
            doc["key"] = self.key.hex()
        else:
            doc["sha256"] = self.sha256
        return doc

    @classmethod
    def from_json(cls, path: str, doc: dict) -> FileEntry:
        region = doc["region"]
        if region == ENCRYPTED:
            return cls(path, region, int(doc["size"]), file_id=bytes.fromhex(doc["file_id"]),
                       key=bytes.fromhex(doc["key"]))
        if region == AUTHENTICATED:
            return cls(path, region, int(doc["size"]), sha256=str(doc["sha256"]))
        raise ValueError(f"unknown region {region!r}")


class Manifest:
    """The protection manifest (FSPF): every protected file, the region rules, the python path."""

    def __init__(self, files: Dict[str, FileEntry], rules: Optional[List[Tuple[str, str]]] = None,
                 python_path: Optional[List[str]] = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 created_by: str = "") -> None:
        self.files = files
        # The sealer's ordered (pattern, region) rules, last match wins: a path the manifest does
        # not list is acceptable only if these rules put it in the unprotected region.
        self.rules: List[Tuple[str, str]] = list(rules or [])
        self.python_path: List[str] = list(python_path or [])
        self.chunk_size = chunk_size
        self.created_by = created_by

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (self.files, self.rules, self.python_path, self.chunk_size, self.created_by) == (
            other.files, other.rules, other.python_path, other.chunk_size, other.created_by)

    def __repr__(self) -> str:
        return f"Manifest({len(self.files)} files, rules={self.rules!r}, python_path={self.python_path!r})"

    @property
    def unprotected(self) -> list[str]:
        """The patterns of the unprotected rules (for display; region checks use all rules)."""
        return [pattern for pattern, region in self.rules if region == UNPROTECTED]

    def is_unprotected(self, relpath: str) -> bool:
        from citadel.seal.regions import region_for

        return region_for(relpath, self.rules) == UNPROTECTED

    def to_bytes(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "created_by": self.created_by,
            "chunk_size": self.chunk_size,
            "python_path": self.python_path,
            "rules": [[pattern, region] for pattern, region in self.rules],
            "files": {p: e.to_json() for p, e in sorted(self.files.items())},
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            doc = json.loads(raw)
            if doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
                raise ValueError("unknown manifest format or version")
            files = {p: FileEntry.from_json(p, e) for p, e in doc["files"].items()}
            rules = [(str(pattern), str(region)) for pattern, region in doc["rules"]]
            if any(region not in REGIONS for _, region in rules):
                raise ValueError("unknown region in rules")
            return cls(files=files, rules=rules,
                       python_path=list(doc["python_path"]), chunk_size=int(doc["chunk_size"]),
                       created_by=str(doc.get("created_by", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ImageError(f"the image manifest is malformed ({exc})",
                             "re-seal the application with this version of citadel") from None


def seal_manifest(manifest: Manifest, image_key: bytes) -> bytes:
    """The CITM container: header, then AES-256-GCM of the manifest JSON under an HKDF-derived key."""
    if len(image_key) != KEY_SIZE:
        raise ValueError("image key must be 32 bytes")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = MANIFEST_HEADER.pack(MANIFEST_MAGIC, MANIFEST_VERSION, salt, nonce)
    key = derive_key(image_key, salt=salt, label=MANIFEST_KEY_LABEL)
    return header + AESGCM(key).encrypt(nonce, manifest.to_bytes(), header)


def open_manifest(sealed: bytes, image_key: bytes) -> Manifest:
    """Decrypt and parse a CITM container; any failure to decrypt is one opaque WrongKey."""
    if len(sealed) < MANIFEST_HEADER.size + GCM_TAG_SIZE:
        raise ImageError("the image manifest is truncated", "copy the whole image again")
    header = sealed[: MANIFEST_HEADER.size]
    magic, version, salt, nonce = MANIFEST_HEADER.unpack(header)
    if magic != MANIFEST_MAGIC:
        raise ImageError("this is not a Citadel image manifest (bad magic)", "check the --image path")
    if version != MANIFEST_VERSION:
        raise ImageError(f"image manifest version {version} is not supported",
                         "re-seal the application with this version of citadel")
    if len(image_key) != KEY_SIZE:
        raise WrongKey("the image key must be 32 bytes (64 hex digits)", "check the key file")
    key = derive_key(image_key, salt=salt, label=MANIFEST_KEY_LABEL)
    try:
        raw = AESGCM(key).decrypt(nonce, sealed[MANIFEST_HEADER.size :], header)
    except InvalidTag:
        raise WrongKey("the key does not open this image, or its manifest was changed",
                       "use the key printed when this image was sealed") from None
    return Manifest.from_bytes(raw)


def image_tag(sealed_manifest: bytes) -> str:
    """The tag a policy pins: SHA-256 of the manifest container."""
    return sha256_hex(sealed_manifest)
