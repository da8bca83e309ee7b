"""An open encrypted volume: its life cycle, the commit protocol and rollback checks (engine-safe).

Commit protocol (docs/volumes.md has the full argument):
1. seal every dirty chunk into this session's segment; fsync the segments written since the
   last commit, and the segments/ directory if a segment file was created;
2. seal the new manifest (generation + 1, naming the previous tag) and take commit.lock;
3. check the host's current manifest is still the state this session began from (else: conflict);
4. with a tag store (``on_commit``): write pending/<tag> and fsync it and pending/; call
   ``on_commit(old_tag, new_tag)``; a CitadelError from it refuses the commit: the pending state
   moves to conflicts/ and VolumeConflict is raised. Without one (local mode), write
   manifest.tmp-<random> and fsync it;
5. rename the new manifest over ``manifest`` and fsync the volume directory.
A crash before 5 leaves the old manifest in place; a crash between the tag store's acceptance
and 5 is rolled forward at the next open (pending/<expected tag> is promoted).
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from typing import Callable, Dict, List, Optional

from citadel.crypto import digests_equal
from citadel.errors import CitadelError
from citadel.volume import store
from citadel.volume.chunks import Chunker, FileNode, Ref
from citadel.volume.errors import TamperedVolume, VolumeClosed, VolumeConflict, VolumeError, VolumeRollback
from citadel.volume.format import (
    DEFAULT_CHUNK_SIZE,
    HOLE,
    FileRecord,
    ManifestState,
    chunk_length,
    new_state,
    open_manifest,
    record_size,
    seal_manifest,
    volume_tag,
)
from citadel.volume.namespace import Namespace
from citadel.volume.ops import VolumeOps
from citadel.volume.recovery import collect, current_state, read_optional
from citadel.volume.segments import Segments

OnCommit = Callable[[str, str], None]
_LIVE: weakref.WeakSet[Volume] = weakref.WeakSet()


class Volume(VolumeOps):
    """A session on one volume. Create with `Volume.open` or `Volume.create`; use as a context manager."""

    def __init__(self, root: str, key: bytes, state: ManifestState, tag: str, *,
                 on_commit: Optional[OnCommit], read_only: bool, auto_commit: bool,
                 lock: store.SessionLock, verified: bool) -> None:
        self.root = root
        self._key = key
        self._on_commit = on_commit
        self.read_only = read_only
        self.auto_commit = auto_commit
        self._session = lock
        self._verified = verified  # the host's manifest is known to be the tag store's latest
        self.tag = tag
        self.generation = state.generation
        self.volume_id = state.volume_id
        self.chunk_size = state.chunk_size
        self.dev = int.from_bytes(state.volume_id[:4], "big")
        self.lock = threading.RLock()
        self.segments = Segments(root, key)
        self.chunker = Chunker(self.segments, state.volume_id, state.chunk_size)
        self.ns = Namespace(list(state.dirs), _nodes_of(state))
        self.writers = 0
        self._failure: Optional[VolumeError] = None
        self._fork_mark: Optional[int] = None
        self.closed = False
        _LIVE.add(self)

    # --- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str, key: bytes, *, expected_tag: Optional[str] = None,
             on_commit: Optional[OnCommit] = None, read_only: bool = False, create: bool = False,
             auto_commit: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Volume:
        """Open (or with ``create``, create if absent) the volume at host directory ``root``.

        ``expected_tag`` is the latest tag the tag store (the CAS) records: any other state is
        refused with VolumeRollback. ``on_commit(old_tag, new_tag)`` is called at every commit and
        refuses it by raising a CitadelError; without it the volume has no rollback protection.
        """
        root = os.path.abspath(root)
        manifest = os.path.join(root, store.MANIFEST)
        if not os.path.exists(manifest):
            if expected_tag:
                raise VolumeRollback(root, "", expected_tag, " (the directory holds no volume)")
            if create and not read_only:
                return cls.create(root, key, on_commit=on_commit, auto_commit=auto_commit,
                                  chunk_size=chunk_size)
            raise VolumeError(f"{root!r} is not a Citadel volume (no {store.MANIFEST})",
                              "create it with `citadel volume create`, or check the path")
        lock = store.SessionLock(root, writable=not read_only)
        try:
            if not read_only:
                store.ensure_subdirs(root)
            sealed, tag = current_state(root, expected_tag, key, promote=not read_only)
            state = open_manifest(sealed, key, repr(root))
            vol = cls(root, key, state, tag, on_commit=on_commit, read_only=read_only,
                      auto_commit=auto_commit, lock=lock, verified=expected_tag is not None)
        except BaseException:
            lock.release()
            raise
        try:
            vol._check_segments(state)
            if not read_only:
                vol._cleanup()
        except BaseException:
            vol._release()
            raise
        return vol

    @classmethod
    def create(cls, root: str, key: bytes, *, on_commit: Optional[OnCommit] = None, auto_commit: bool = True,
               chunk_size: int = DEFAULT_CHUNK_SIZE) -> Volume:
        """Make a new, empty volume in ``root`` (absent or empty) and commit its first state."""
        root = os.path.abspath(root)
        ours = {store.SEGMENTS, store.PENDING, store.CONFLICTS, store.LOCK, store.COMMIT_LOCK}
        if os.path.isdir(root) and any(n not in ours and not n.startswith(store.TMP_PREFIX)
                                       for n in os.listdir(root)):
            raise VolumeError(f"cannot create a volume in {root!r}: the directory is not empty",
                              "choose a new or empty directory")
        if os.path.exists(root) and not os.path.isdir(root):
            raise VolumeError(f"cannot create a volume in {root!r}: it is a file, not a directory",
                              "choose a new or empty directory")
        try:
            store.make_layout(root)
        except OSError as exc:
            raise VolumeError(f"cannot create a volume in {root!r}: {exc.strerror or exc}",
                              "choose a directory you can write to") from None
        state = new_state(chunk_size)
        lock = store.SessionLock(root, writable=True)
        vol = cls(root, key, state, "", on_commit=on_commit, read_only=False, auto_commit=auto_commit,
                  lock=lock, verified=False)
        try:
            vol.ns.changed = True
            vol.commit()
        except BaseException:
            vol._release()
            raise
        return vol

    def _check_segments(self, state: ManifestState) -> None:
        """Every record the manifest names lies within a present segment (a clear error up front)."""
        ends: Dict[bytes, Dict[str, int]] = {}  # segment -> file -> end of its last record there
        for path, rec in state.files.items():
            for i, (seg, off) in enumerate(rec.chunks):
                if seg != HOLE:
                    end = off + record_size(chunk_length(i, rec.size, state.chunk_size))
                    per_file = ends.setdefault(state.segments[seg], {})
                    per_file[path] = max(end, per_file.get(path, 0))
        for sid in sorted(ends):
            have = self.segments.size_of(sid)
            hit = sorted(p for p, end in ends[sid].items() if end > have)
            if not hit:
                continue
            others = f" (and {len(hit) - 1} more file(s))" if len(hit) > 1 else ""
            if have < 0:
                raise TamperedVolume(hit[0], f"is stored in segment {sid.hex()}, which is missing{others}")
            raise TamperedVolume(hit[0], f"is truncated: segment {sid.hex()} ends at byte {have}{others}")

    # --- state -------------------------------------------------------------------------------
    def usable(self, write: bool = False) -> None:
        if self._failure is not None:
            raise self._failure
        if self.closed:
            raise VolumeClosed(f"volume {self.root!r} is closed", "open it again")
        if write and self.read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), self.root)

    @property
    def changed(self) -> bool:
        if self._fork_mark is not None and self._fork_mark == self.ns.mutations + self.chunker.mutations:
            return False  # a forked child that changed nothing itself must not commit its parent's work
        return self.ns.changed or bool(self.chunker.changed_nodes) or bool(self.chunker.dirty_nodes)

    def snapshot(self) -> ManifestState:
        """The session's current tree as a manifest state (the next generation)."""
        table: List[bytes] = []
        index: Dict[bytes, int] = {}
        files: Dict[str, FileRecord] = {}
        for path, node in self.ns.files.items():
            refs = []
            for ref in node.refs:
                assert ref is not None, "snapshot of unsealed chunks"
                sid = ref[0]
                if sid is None:
                    refs.append((HOLE, 0))
                    continue
                if sid not in index:
                    index[sid] = len(table)
                    table.append(sid)
                refs.append((index[sid], ref[1]))
            files[path] = FileRecord(node.file_id, node.size, node.mtime_ns, node.mode, refs)
        generation = self.generation + 1 if self.tag else 0
        return ManifestState(self.volume_id, generation, self.tag, self.chunk_size, table,
                             sorted(self.ns.dirs), files)

    # --- committing --------------------------------------------------------------------------
    def commit(self) -> Optional[str]:
        """Make every change so far durable and current; returns the new tag (None if nothing changed)."""
        with self.lock:
            self.usable(write=True)
            if not self.changed:
                return None
            try:
                self.chunker.seal_changed()
                self.segments.sync()
            except OSError as exc:
                raise _save_error(self.root, exc) from None
            state = self.snapshot()
            sealed = seal_manifest(state, self._key)
            tag = volume_tag(sealed)
            self._publish(sealed, tag)
            self.tag, self.generation = tag, state.generation
            self.ns.changed = False
            for node in self.chunker.changed_nodes:
                node.changed = False
            self.chunker.changed_nodes.clear()
            return tag

    def _publish(self, sealed: bytes, tag: str) -> None:
        root, old = self.root, self.tag
        with store.commit_lock(root):
            current = read_optional(os.path.join(root, store.MANIFEST))
            found = volume_tag(current) if current is not None else ""
            if not digests_equal(found, old):
                kept = self._keep_conflict(sealed, tag)
                self._fail(VolumeConflict(root, f"its state is now {found[:16]}..., this engine's changes "
                                                f"were based on {old[:16] or '(new)'}...", kept))
            if self._on_commit is None:
                tmp = os.path.join(root, store.TMP_PREFIX + os.urandom(8).hex())
                try:
                    store.write_durable(tmp, sealed)
                    os.replace(tmp, os.path.join(root, store.MANIFEST))
                    store.fsync_dir(root)
                except OSError as exc:
                    store.unlink_quietly(tmp)
                    raise _save_error(root, exc) from None
                return
            pending = os.path.join(root, store.PENDING, tag)
            try:
                store.write_durable(pending, sealed)
                store.fsync_dir(os.path.dirname(pending))
            except OSError as exc:
                store.unlink_quietly(pending)
                raise _save_error(root, exc) from None
            try:
                self._on_commit(old, tag)
            except CitadelError as exc:
                conflict = os.path.join(root, store.CONFLICTS, tag)
                os.replace(pending, conflict)
                store.fsync_dir(os.path.dirname(conflict))
                self._fail(VolumeConflict(root, exc.cause, tag), exc)
            except Exception as exc:  # the tag store's transport failed: the outcome is unknown
                self._fail(self._unknown_outcome(f"{type(exc).__name__}: {exc}"), exc)
            except BaseException:
                self._unknown_outcome("interrupted")
                raise
            try:
                os.replace(pending, os.path.join(root, store.MANIFEST))
                store.fsync_dir(root)
            except OSError as exc:
                self._fail(self._unknown_outcome(exc.strerror or str(exc)), exc)
            self._verified = True

    def _unknown_outcome(self, why: str) -> VolumeError:
        """The tag store may or may not have recorded the new tag: the next open decides."""
        self._verified = False
        self._failure = VolumeError(
            f"the commit of volume {self.root!r} did not complete ({why}), so this session cannot go on",
            "open the volume again: the latest state the tag store recorded will be used")
        return self._failure

    def _keep_conflict(self, sealed: bytes, tag: str) -> str:
        path = os.path.join(self.root, store.CONFLICTS, tag)
        if not os.path.exists(path):
            store.write_durable(path, sealed)
            store.fsync_dir(os.path.dirname(path))
        return tag

    def _fail(self, error: VolumeError, cause: Optional[BaseException] = None) -> None:
        self._failure = error
        raise error from cause

    # --- clean-up ----------------------------------------------------------------------------
    def _cleanup(self) -> None:
        """When no other session is open: delete debris and segments no kept state references."""
        if not self._session.try_exclusive():
            return
        try:
            with store.commit_lock(self.root):
                collect(self.root, self._key, drop_pending=self._verified and self._on_commit is not None,
                         tag=self.tag)
        finally:
            self._session.shared()

    def close(self) -> None:
        """Commit what changed (unless the session failed), clean up when alone, release everything."""
        with self.lock:
            if self.closed:
                return
            try:
                if self._failure is None and not self.read_only and self.changed:
                    self.commit()
                if self._failure is None and not self.read_only:
                    self._cleanup()
            finally:
                self._release()

    def abandon(self) -> None:
        """Release the session without committing: its changes are dropped, the volume keeps its state.

        For the owner's tools, whose command failed half-way (the segment data it wrote is
        unreferenced and removed by a later clean-up).
        """
        with self.lock:
            if not self.closed:
                self._release()

    def _release(self) -> None:
        self.closed = True
        self.segments.close()
        self._session.release()
        _LIVE.discard(self)

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- fork --------------------------------------------------------------------------------
    def _after_fork_child(self) -> None:
        self.lock = threading.RLock()
        self.segments.after_fork()
        self.writers = 0
        self._fork_mark = self.ns.mutations + self.chunker.mutations


def _save_error(root: str, exc: OSError) -> VolumeError:
    return VolumeError(f"cannot save volume {root!r}: {exc.strerror or exc}",
                       "free disk space or fix the volume directory, then sync again")


def _nodes_of(state: ManifestState) -> Dict[str, FileNode]:
    nodes = {}
    cs = state.chunk_size
    for path, rec in state.files.items():
        last = len(rec.chunks) - 1
        refs: List[Optional[Ref]] = [
            (None if seg == HOLE else state.segments[seg], off, chunk_length(i, rec.size, cs), i == last)
            for i, (seg, off) in enumerate(rec.chunks)]
        nodes[path] = FileNode(path, rec.file_id, rec.size, rec.mtime_ns, rec.mode, refs)
    return nodes


def _before_fork() -> None:
    for vol in list(_LIVE):
        vol.lock.acquire()


def _after_fork_parent() -> None:
    for vol in list(_LIVE):
        vol.lock.release()


def _after_fork_child() -> None:
    for vol in list(_LIVE):
        vol._after_fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                        after_in_child=_after_fork_child)
