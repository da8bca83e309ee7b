"""Segments: append-only host files of sealed chunk records (engine-safe).

A session writes only to segments it created itself (with O_EXCL, under a fresh random id), at
offsets that only grow, and a record's nonce is its offset: so no (key, nonce) pair is reused,
not after a failed write, not after a crash, not in a forked child (which starts a new segment).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from citadel.crypto import GCM_TAG_SIZE
from citadel.volume.format import chunk_nonce, segment_aead
from citadel.volume.store import FILE_MODE, SEGMENTS, fsync_dir

SEGMENT_MAX = 1 << 30  # start a new segment past this size (keeps compaction granular)
_BATCH = 64  # records sealed and written per system call (4 MiB of 64 KiB chunks)
_HAS_INTO = hasattr(AESGCM, "decrypt_into")  # cryptography >= 44; PyPy's 41 lacks it
_HAS_VECTORED = hasattr(os, "preadv") and hasattr(os, "pwritev")  # PyPy 3.9 has neither


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if _HAS_VECTORED:
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


class RecordUnreadable(Exception):
    """A stored chunk record is missing or fails authentication (the caller names the file)."""


class Segment:
    __slots__ = ("sid", "path", "aead", "fd", "end", "writable", "broken")

    def __init__(self, sid: bytes, path: str, aead: AESGCM, fd: Optional[int], writable: bool) -> None:
        self.sid = sid
        self.path = path
        self.aead = aead
        self.fd = fd
        self.end = 0
        self.writable = writable
        self.broken = False


class Segments:
    """The segments a session reads and the one it appends to."""

    def __init__(self, root: str, volume_key: bytes) -> None:
        self.dir = os.path.join(root, SEGMENTS)
        self._key = volume_key
        self._by_id: Dict[bytes, Segment] = {}
        self._current: Optional[Segment] = None
        self._unsynced: Set[bytes] = set()
        self._new_files = False
        self._buf = bytearray()
        self._wbuf = bytearray()

    # --- reading ------------------------------------------------------------------------------
    def get(self, sid: bytes) -> Segment:
        seg = self._by_id.get(sid)
        if seg is None:
            seg = Segment(sid, os.path.join(self.dir, sid.hex()), segment_aead(self._key, sid), None, False)
            self._by_id[sid] = seg
        if seg.fd is None:
            try:
                seg.fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise RecordUnreadable(f"is stored in segment {sid.hex()}, which is missing") from None
        return seg

    def size_of(self, sid: bytes) -> int:
        """Bytes on disk of a segment (-1 if missing)."""
        try:
            return os.stat(os.path.join(self.dir, sid.hex())).st_size
        except FileNotFoundError:
            return -1

    def read(self, sid: bytes, offset: int, length: int) -> memoryview:
        """``length`` bytes of a segment from ``offset``, in a buffer reused by the next call."""
        fd = self.get(sid).fd
        assert fd is not None
        if len(self._buf) < length:
            self._buf = bytearray(length)
        view = memoryview(self._buf)[:length]
        done = 0
        while done < length:
            n = _pread_into(fd, view[done:], offset + done)
            if n <= 0:
                raise RecordUnreadable(f"is truncated (segment {sid.hex()} ends before offset "
                                       f"{offset + length})")
            done += n
        return view

    def decrypt(self, sid: bytes, offset: int, sealed: memoryview, aad: bytes) -> bytes:
        try:
            return self.get(sid).aead.decrypt(chunk_nonce(offset), sealed, aad)
        except InvalidTag:
            raise RecordUnreadable(f"failed authentication (segment {sid.hex()}, offset {offset})") from None

    def decrypt_into(self, sid: bytes, offset: int, sealed: memoryview, aad: bytes, out: memoryview) -> None:
        if not _HAS_INTO:
            out[:] = self.decrypt(sid, offset, sealed, aad)
            return
        try:
            self.get(sid).aead.decrypt_into(chunk_nonce(offset), sealed, aad, out)
        except InvalidTag:
            out[:] = bytes(len(out))  # never leave unauthenticated plaintext in the caller's buffer
            raise RecordUnreadable(f"failed authentication (segment {sid.hex()}, offset {offset})") from None

    # --- writing ------------------------------------------------------------------------------
    def _writer(self) -> Segment:
        seg = self._current
        if seg is None or seg.broken or seg.end >= SEGMENT_MAX:
            sid = os.urandom(16)
            path = os.path.join(self.dir, sid.hex())
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            seg = Segment(sid, path, segment_aead(self._key, sid), fd, True)
            self._by_id[sid] = seg
            self._current = seg
            self._new_files = True
        return seg

    def append(self, items: Sequence[Tuple[memoryview, bytes]]) -> Tuple[bytes, List[int]]:
        """Seal (plaintext, associated data) pairs as consecutive records; return (segment, offsets)."""
        seg = self._writer()
        offsets: List[int] = []
        for i in range(0, len(items), _BATCH):
            offsets.extend(self._append_batch(seg, items[i : i + _BATCH]))
        return seg.sid, offsets

    def _append_batch(self, seg: Segment, items: Sequence[Tuple[memoryview, bytes]]) -> List[int]:
        start = off = seg.end
        total = sum(len(plain) + GCM_TAG_SIZE for plain, _ in items)
        seg.end = start + total  # offsets are spent even if the write fails: a nonce is never used twice
        self._unsynced.add(seg.sid)
        offsets: List[int] = []
        try:
            if _HAS_INTO:  # seal straight into one reused buffer, write it with one call
                if len(self._wbuf) < total:
                    self._wbuf = bytearray(total)
                view = memoryview(self._wbuf)
                for plain, aad in items:
                    n = len(plain) + GCM_TAG_SIZE
                    seg.aead.encrypt_into(chunk_nonce(off), plain, aad, view[off - start : off - start + n])
                    offsets.append(off)
                    off += n
                _pwritev_all(seg.fd, [view[:total]], start)
            else:
                sealed = []
                for plain, aad in items:
                    offsets.append(off)
                    sealed.append(seg.aead.encrypt(chunk_nonce(off), plain, aad))
                    off += len(plain) + GCM_TAG_SIZE
                _pwritev_all(seg.fd, sealed, start)
        except OSError:
            seg.broken = True
            raise
        return offsets

    def sync(self) -> None:
        """fsync every segment written since the last sync, then the directory if files were created."""
        for sid in sorted(self._unsynced):
            seg = self._by_id[sid]
            if seg.fd is not None:
                os.fsync(seg.fd)
        self._unsynced.clear()
        if self._new_files:
            fsync_dir(self.dir)
            self._new_files = False

    def after_fork(self) -> None:
        """In a forked child: never append to the parent's segment (its offsets are the parent's)."""
        self._current = None

    def forget(self, sid: bytes) -> None:
        seg = self._by_id.pop(sid, None)
        if seg is not None and seg.fd is not None:
            os.close(seg.fd)
        if self._current is not None and self._current.sid == sid:
            self._current = None

    def close(self) -> None:
        for seg in self._by_id.values():
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
        self._by_id.clear()
        self._current = None


def _pwritev_all(fd: Optional[int], buffers: Sequence[Any], offset: int) -> int:
    assert fd is not None
    views = [memoryview(b) for b in buffers]
    while views:
        n = os.pwritev(fd, views, offset) if _HAS_VECTORED else os.pwrite(fd, views[0], offset)
        if n <= 0:
            raise OSError(5, "short write to a volume segment")
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
    return offset
