"""File contents as chunks: reads, writes and truncation over sealed records (engine-safe).

A file is a list of chunk references, one per ``chunk_size`` bytes of plaintext. A chunk is either
stored (a record in a segment), a hole (zeros, stored nowhere), or dirty (its plaintext held in
memory until it is sealed). Full chunks that are not the file's last are sealed as soon as they
are complete, so a sequential write holds at most one chunk per file in memory; everything else
is sealed at the next commit, or when the dirty bytes of the volume pass a limit.

Invariant: for every chunk ``i`` of a file, either ``i`` is in ``dirty`` (holding exactly the
chunk's current plaintext) or ``refs[i]`` is a stored or hole reference of that same length. A
stored record's "last" flag may be stale after the file grew or shrank; sealing fixes it.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Set, Tuple

from citadel.crypto import GCM_TAG_SIZE
from citadel.volume.errors import TamperedVolume
from citadel.volume.format import chunk_aad, chunk_count, chunk_length
from citadel.volume.segments import RecordUnreadable, Segments

# (segment id or None for a hole, offset, plaintext length, sealed as the last chunk)
Ref = Tuple[Optional[bytes], int, int, bool]
DIRTY_LIMIT = 32 * 1024 * 1024


class FileNode:
    """One file's state in a session (shared by every handle open on it, like an inode)."""

    __slots__ = ("path", "file_id", "size", "mtime_ns", "mode", "refs", "dirty", "changed")

    def __init__(self, path: str, file_id: bytes, size: int, mtime_ns: int, mode: int,
                 refs: List[Optional[Ref]]) -> None:
        self.path = path  # for error messages; follows renames
        self.file_id = file_id
        self.size = size
        self.mtime_ns = mtime_ns
        self.mode = mode
        self.refs = refs
        self.dirty: Dict[int, bytearray] = {}
        self.changed = False


class Chunker:
    """Chunk-level I/O of every file of one volume session."""

    def __init__(self, segments: Segments, volume_id: bytes, chunk_size: int,
                 dirty_limit: int = DIRTY_LIMIT) -> None:
        self.segments = segments
        self.volume_id = volume_id
        self.cs = chunk_size
        self.dirty_limit = dirty_limit
        self.dirty_nodes: Set[FileNode] = set()
        self.changed_nodes: Set[FileNode] = set()  # since the last commit
        self.mutations = 0
        self.dirty_bytes = 0
        self._cache_key: Optional[Tuple[bytes, int]] = None
        self._cache_val = b""

    # --- reading ------------------------------------------------------------------------------
    def _plain(self, node: FileNode, index: int, ref: Ref) -> bytes:
        sid, off, length, last = ref
        if sid is None:
            return bytes(length)
        key = (sid, off)
        if key == self._cache_key:
            return self._cache_val
        try:
            sealed = self.segments.read(sid, off, length + GCM_TAG_SIZE)
            plain = self.segments.decrypt(sid, off, sealed,
                                          chunk_aad(self.volume_id, node.file_id, index, last))
        except RecordUnreadable as exc:
            raise TamperedVolume(node.path, f"chunk {index} {exc}") from None
        self._cache_key, self._cache_val = key, plain
        return plain

    def read_into(self, node: FileNode, pos: int, out: memoryview) -> int:
        """Copy plaintext from ``pos`` into ``out``; returns bytes copied (0 at or past the end)."""
        total = min(len(out), node.size - pos)
        if total <= 0:
            return 0
        cs, done = self.cs, 0
        while done < total:
            p = pos + done
            i, within = divmod(p, cs)
            take = min(cs - within, total - done)
            dirty = node.dirty.get(i)
            if dirty is not None:
                out[done : done + take] = dirty[within : within + take]
            else:
                ref = node.refs[i]
                assert ref is not None
                if ref[0] is None:
                    out[done : done + take] = bytes(take)
                elif within == 0 and take == ref[2]:
                    take = self._read_run(node, i, out[done:total])
                else:
                    out[done : done + take] = self._plain(node, i, ref)[within : within + take]
            done += take
        return total

    def _read_run(self, node: FileNode, first: int, out: memoryview) -> int:
        """Whole stored chunks from ``first`` that lie back to back in one segment: one read, no copies."""
        refs, dirty = node.refs, node.dirty
        sid, off, length, _ = refs[first]  # type: ignore[misc]
        end, count, span = off + length + GCM_TAG_SIZE, 1, length
        while first + count < len(refs) and first + count not in dirty:
            nxt = refs[first + count]
            if nxt is None or nxt[0] != sid or nxt[1] != end or span + nxt[2] > len(out):
                break
            end += nxt[2] + GCM_TAG_SIZE
            span += nxt[2]
            count += 1
        k = 0
        try:
            sealed = self.segments.read(sid, off, end - off)  # type: ignore[arg-type]
            pos = 0
            for k in range(count):
                _, roff, rlen, rlast = refs[first + k]  # type: ignore[misc]
                at = roff - off
                self.segments.decrypt_into(sid, roff, sealed[at : at + rlen + GCM_TAG_SIZE],  # type: ignore[arg-type]
                                           chunk_aad(self.volume_id, node.file_id, first + k, rlast),
                                           out[pos : pos + rlen])
                pos += rlen
        except RecordUnreadable as exc:
            raise TamperedVolume(node.path, f"chunk {first + k} {exc}") from None
        return span

    def verify(self, node: FileNode) -> None:
        """Authenticate every stored chunk of a file (raises TamperedVolume naming it)."""
        buf = bytearray(min(node.size, 64 * self.cs))
        pos = 0
        while pos < node.size:
            pos += self.read_into(node, pos, memoryview(buf))

    # --- writing ------------------------------------------------------------------------------
    def _load(self, node: FileNode, index: int) -> bytearray:
        found = node.dirty.get(index)
        if found is not None:
            return found
        ref = node.refs[index]
        assert ref is not None
        buf = bytearray(self._plain(node, index, ref))
        self._set_dirty(node, index, buf)
        return buf

    def _set_dirty(self, node: FileNode, index: int, buf: bytearray) -> None:
        old = node.dirty.get(index)
        self.dirty_bytes += len(buf) - (len(old) if old is not None else 0)
        node.dirty[index] = buf
        self.dirty_nodes.add(node)

    def _touch(self, node: FileNode) -> None:
        node.changed = True
        self.changed_nodes.add(node)
        self.mutations += 1
        node.mtime_ns = time.time_ns()

    def write(self, node: FileNode, pos: int, data: memoryview) -> int:
        n = len(data)
        if n == 0:
            return 0
        if pos > node.size:
            self.truncate(node, pos)
        self._touch(node)
        cs, old_size = self.cs, node.size
        end = pos + n
        new_size = max(old_size, end)
        new_last = chunk_count(new_size, cs) - 1
        while len(node.refs) <= new_last:
            node.refs.append(None)
        ready: List[Tuple[int, memoryview]] = []
        for i in range(pos // cs, (end - 1) // cs + 1):
            cstart = i * cs
            lo, hi = max(pos, cstart) - cstart, min(end, cstart + cs) - cstart
            piece = data[cstart + lo - pos : cstart + hi - pos]
            if lo == 0 and hi >= chunk_length(i, old_size, cs):
                if hi == cs and i != new_last:
                    ready.append((i, piece))  # a whole chunk: seal straight from the caller's buffer
                    self._drop_dirty(node, i)
                else:
                    self._set_dirty(node, i, bytearray(piece))
                    node.refs[i] = None
            else:
                buf = self._load(node, i)
                before = len(buf)
                buf[lo:hi] = piece
                self.dirty_bytes += len(buf) - before
        node.size = new_size
        old_last = chunk_count(old_size, cs) - 1
        for i in sorted({old_last, *range(pos // cs, (end - 1) // cs + 1)}):
            done = node.dirty.get(i)  # complete chunks that are no longer the last one
            if done is not None and i != new_last and len(done) == cs:
                ready.append((i, memoryview(done)))
        if ready:
            ready.sort(key=lambda item: item[0])
            self._seal(node, ready, new_last)
        if self.dirty_bytes > self.dirty_limit:
            self.seal_all()
        return n

    def _drop_dirty(self, node: FileNode, index: int) -> None:
        old = node.dirty.pop(index, None)
        if old is not None:
            self.dirty_bytes -= len(old)

    def truncate(self, node: FileNode, size: int) -> None:
        old, cs = node.size, self.cs
        if size == old:
            return
        self._touch(node)
        old_n, new_n = chunk_count(old, cs), chunk_count(size, cs)
        if size < old:
            for i in [i for i in node.dirty if i >= new_n]:
                self._drop_dirty(node, i)
            del node.refs[new_n:]
            if size % cs:
                buf = self._load(node, new_n - 1)
                before = len(buf)
                del buf[size - (new_n - 1) * cs :]
                self.dirty_bytes += len(buf) - before
        else:
            if old % cs:
                buf = self._load(node, old_n - 1)
                before = len(buf)
                buf.extend(bytes(chunk_length(old_n - 1, size, cs) - len(buf)))
                self.dirty_bytes += len(buf) - before
            for i in range(old_n, new_n):
                node.refs.append((None, 0, chunk_length(i, size, cs), False))
        node.size = size
        if not node.dirty:
            self.dirty_nodes.discard(node)

    # --- sealing ------------------------------------------------------------------------------
    def _seal(self, node: FileNode, items: List[Tuple[int, memoryview]], last: int) -> None:
        sid, offsets = self.segments.append(
            [(plain, chunk_aad(self.volume_id, node.file_id, i, i == last)) for i, plain in items])
        for (i, plain), off in zip(items, offsets):
            node.refs[i] = (sid, off, len(plain), i == last)
            self._drop_dirty(node, i)
        if not node.dirty:
            self.dirty_nodes.discard(node)

    def seal_node(self, node: FileNode) -> None:
        """Seal every dirty chunk and re-seal stored chunks whose "last" flag went stale."""
        last = chunk_count(node.size, self.cs) - 1
        items = [(i, memoryview(node.dirty[i])) for i in sorted(node.dirty)]
        for i, ref in enumerate(node.refs):
            if ref is not None and ref[0] is not None and ref[3] != (i == last) and i not in node.dirty:
                items.append((i, memoryview(self._plain(node, i, ref))))
        if items:
            self._seal(node, sorted(items, key=lambda item: item[0]), last)

    def seal_all(self) -> None:
        """Seal the dirty chunks of every file (memory pressure)."""
        for node in list(self.dirty_nodes):
            self.seal_node(node)

    def seal_changed(self) -> None:
        """Before a commit: every changed file's records final, with the right "last" flags."""
        for node in list(self.changed_nodes | self.dirty_nodes):
            self.seal_node(node)
