"""Byte layouts of an encrypted volume (docs/volumes.md is the prose twin of this module).

Engine-safe: stdlib and `cryptography` only, importable on Python 3.9.

A volume is a host directory holding append-only *segments* of sealed chunks and a *manifest*
(a CITV container) that lists every directory and file with, for each chunk, where its record
lives. The volume tag is the SHA-256 of the manifest file, and the manifest pins every record's
place, so the tag pins the whole tree.

Keys (all HKDF-SHA256 of the 32-byte volume key, one label per use):
- manifest key = HKDF(volume key, salt = a fresh random 16 bytes per manifest, "citadel/v1/volume-manifest")
- segment key  = HKDF(volume key, salt = the segment's random 16-byte id, "citadel/v1/volume-chunk")
A chunk record's nonce is its byte offset in its segment. Segments are append-only and a new
session always starts a new segment, so no (key, nonce) pair is ever used twice, rewrites included.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from citadel.crypto import GCM_TAG_SIZE, KEY_SIZE, derive_key, sha256_hex
from citadel.volume.errors import VolumeError, VolumeWrongKey

DEFAULT_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_PATH_BYTES = 4096
HOLE = 0xFFFFFFFF  # segment index of a chunk that is all zeros and stored nowhere

# --- CITV: the manifest container -------------------------------------------------------------
# magic, version, 3 reserved zero bytes, volume id, generation, HKDF salt, GCM nonce (big-endian)
MANIFEST_HEADER = struct.Struct(">4sB3x16sQ16s12s")
MANIFEST_MAGIC = b"CITV"
MANIFEST_VERSION = 1
MANIFEST_KEY_LABEL = "citadel/v1/volume-manifest"
CHUNK_KEY_LABEL = "citadel/v1/volume-chunk"

# --- manifest body (inside the AEAD) -------------------------------------------------------------
# previous state's tag (raw, zeros for the first state), chunk size, segments, directories, files
BODY_HEADER = struct.Struct(">32sIIII")
SEGMENT_ENTRY = struct.Struct(">16s")  # segment id
DIR_ENTRY = struct.Struct(">H")  # UTF-8 path length, then the path
FILE_ENTRY = struct.Struct(">16sQqIH")  # file id, size, mtime (ns), mode bits, path length; then path
CHUNK_REF = struct.Struct(">IQ")  # segment index (HOLE for zeros), record offset in that segment

# --- a chunk record's associated data -------------------------------------------------------------
CHUNK_AAD = struct.Struct(">16s16sQB")  # volume id, file id, chunk index, 1 if last chunk else 0


def chunk_count(size: int, chunk_size: int) -> int:
    """Chunks of a file: an empty file has none (its size is pinned by the manifest)."""
    return -(-size // chunk_size)


def chunk_length(index: int, size: int, chunk_size: int) -> int:
    """Plaintext bytes of chunk ``index`` of a file of ``size`` bytes."""
    return max(0, min(chunk_size, size - index * chunk_size))


def chunk_nonce(offset: int) -> bytes:
    return offset.to_bytes(12, "big")


def chunk_aad(volume_id: bytes, file_id: bytes, index: int, last: bool) -> bytes:
    return CHUNK_AAD.pack(volume_id, file_id, index, 1 if last else 0)


def segment_aead(volume_key: bytes, segment_id: bytes) -> AESGCM:
    return AESGCM(derive_key(volume_key, salt=segment_id, label=CHUNK_KEY_LABEL))


def record_size(plain_len: int) -> int:
    return plain_len + GCM_TAG_SIZE


def volume_tag(sealed_manifest: bytes) -> str:
    """The tag the CAS records: SHA-256 of the manifest file's bytes."""
    return sha256_hex(sealed_manifest)


ChunkRef = Tuple[int, int]  # (segment index in the manifest's table or HOLE, offset)


@dataclass
class FileRecord:
    """One file as a manifest records it."""

    file_id: bytes
    size: int
    mtime_ns: int
    mode: int
    chunks: List[ChunkRef]


@dataclass
class ManifestState:
    """The decoded manifest: everything a tag pins."""

    volume_id: bytes
    generation: int
    prev_tag: str  # hex, "" for the first state
    chunk_size: int
    segments: List[bytes]
    dirs: List[str]
    files: Dict[str, FileRecord] = field(default_factory=dict)

    def referenced_segments(self) -> Set[bytes]:
        used = {ref[0] for rec in self.files.values() for ref in rec.chunks if ref[0] != HOLE}
        return {self.segments[i] for i in used}


def encode_body(state: ManifestState) -> bytes:
    prev = bytes.fromhex(state.prev_tag) if state.prev_tag else bytes(32)
    out = [BODY_HEADER.pack(prev, state.chunk_size, len(state.segments), len(state.dirs), len(state.files))]
    out.extend(SEGMENT_ENTRY.pack(seg) for seg in state.segments)
    for d in sorted(state.dirs):
        raw = d.encode("utf-8", "surrogateescape")
        out.append(DIR_ENTRY.pack(len(raw)) + raw)
    for path in sorted(state.files):
        rec = state.files[path]
        raw = path.encode("utf-8", "surrogateescape")
        out.append(FILE_ENTRY.pack(rec.file_id, rec.size, rec.mtime_ns, rec.mode, len(raw)) + raw)
        out.extend(CHUNK_REF.pack(seg, off) for seg, off in rec.chunks)
    return b"".join(out)


class _Reader:
    """Bounds-checked sequential reads of a manifest body."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, layout: struct.Struct) -> tuple:
        return layout.unpack(self.raw(layout.size))

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("is truncated")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def text(self, n: int) -> str:
        if n == 0 or n > MAX_PATH_BYTES:
            raise ValueError("has a path of invalid length")
        path = self.raw(n).decode("utf-8", "surrogateescape")
        parts = path.split("/")
        if any(p in ("", ".", "..") or "\0" in p for p in parts):
            raise ValueError(f"has an invalid path {path!r}")
        return path


def decode_body(body: bytes, volume_id: bytes, generation: int) -> ManifestState:
    """Parse a manifest body strictly (it was authenticated, but a bug must not pass silently)."""
    r = _Reader(body)
    prev, chunk_size, n_seg, n_dirs, n_files = r.take(BODY_HEADER)
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"has an invalid chunk size {chunk_size}")
    segments = [r.take(SEGMENT_ENTRY)[0] for _ in range(n_seg)]
    dirs = [r.text(r.take(DIR_ENTRY)[0]) for _ in range(n_dirs)]
    dir_set: Set[str] = set(dirs)
    files: Dict[str, FileRecord] = {}
    for _ in range(n_files):
        file_id, size, mtime_ns, mode, plen = r.take(FILE_ENTRY)
        path = r.text(plen)
        refs: List[ChunkRef] = []
        for _i in range(chunk_count(size, chunk_size)):
            seg, off = r.take(CHUNK_REF)
            if seg != HOLE and seg >= n_seg:
                raise ValueError(f"names segment {seg} of {n_seg} for {path!r}")
            refs.append((seg, off))
        if path in files or path in dir_set:
            raise ValueError(f"lists {path!r} twice")
        files[path] = FileRecord(file_id, size, mtime_ns, mode, refs)
    if r.pos != len(body):
        raise ValueError("has trailing bytes")
    for path in list(dir_set) + list(files):
        parent = path.rpartition("/")[0]
        if parent and parent not in dir_set:
            raise ValueError(f"lists {path!r} without its directory")
    return ManifestState(volume_id, generation, prev.hex() if any(prev) else "", chunk_size,
                         segments, sorted(dir_set), files)


def seal_manifest(state: ManifestState, volume_key: bytes) -> bytes:
    """The CITV container: header, then AES-256-GCM of the body under a fresh HKDF-derived key."""
    if len(volume_key) != KEY_SIZE:
        raise ValueError("volume key must be 32 bytes")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = MANIFEST_HEADER.pack(MANIFEST_MAGIC, MANIFEST_VERSION, state.volume_id, state.generation,
                                  salt, nonce)
    key = derive_key(volume_key, salt=salt, label=MANIFEST_KEY_LABEL)
    return header + AESGCM(key).encrypt(nonce, encode_body(state), header)


def peek_header(sealed: bytes, where: str) -> Tuple[bytes, int]:
    """(volume id, generation) from a manifest's header, before any decryption (not yet trusted)."""
    if len(sealed) < MANIFEST_HEADER.size + GCM_TAG_SIZE:
        raise VolumeError(f"the volume manifest {where} is truncated",
                          "restore the volume directory from a trusted copy")
    magic, version, volume_id, generation, _salt, _nonce = MANIFEST_HEADER.unpack_from(sealed)
    if magic != MANIFEST_MAGIC:
        raise VolumeError(f"{where} is not a Citadel volume manifest (bad magic)", "check the volume path")
    if version != MANIFEST_VERSION:
        raise VolumeError(f"volume manifest version {version} is not supported",
                          "use the version of citadel that wrote this volume")
    return volume_id, generation


def open_manifest(sealed: bytes, volume_key: bytes, where: str) -> ManifestState:
    """Decrypt and parse a CITV container; any failure to decrypt is one opaque VolumeWrongKey."""
    volume_id, generation = peek_header(sealed, where)
    if len(volume_key) != KEY_SIZE:
        raise VolumeWrongKey("the volume key must be 32 bytes (64 hex digits)", "check the key file")
    header = sealed[: MANIFEST_HEADER.size]
    salt, nonce = MANIFEST_HEADER.unpack(header)[4:]
    key = derive_key(volume_key, salt=salt, label=MANIFEST_KEY_LABEL)
    try:
        body = AESGCM(key).decrypt(nonce, sealed[MANIFEST_HEADER.size :], header)
    except InvalidTag:
        raise VolumeWrongKey(
            f"the key does not open the volume manifest {where}, or the manifest was changed",
            "use this volume's key; if the key is right, restore the volume from a trusted copy") from None
    try:
        return decode_body(body, volume_id, generation)
    except (ValueError, UnicodeError) as exc:
        raise VolumeError(f"the volume manifest {where} {exc}",
                          "the volume was written by an incompatible or faulty program; restore it") from None


def new_state(chunk_size: int = DEFAULT_CHUNK_SIZE, volume_id: Optional[bytes] = None) -> ManifestState:
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError("chunk size out of range")
    return ManifestState(volume_id or os.urandom(16), 0, "", chunk_size, [], [], {})


def parse_key(text: str) -> bytes:
    """A volume key as written in a key file: 64 hex digits (surrounding space ignored)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise VolumeWrongKey("the volume key is not 64 hex digits",
                             "pass the key file written by `citadel volume create`")
    return key
