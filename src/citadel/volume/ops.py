"""The os-like operations of an open volume: what the engine's file shield routes here (engine-safe).

Every method takes a volume-relative POSIX path ("" or "." is the root; the shield strips the
mount path) and behaves like the `os` function of the same name on a plain directory.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

from citadel.volume.chunks import Chunker, FileNode
from citadel.volume.fileio import VolumeRawFile, parse_mode, wrap
from citadel.volume.namespace import FILE_MODE, Namespace, node_stat, normalize, oserror

if TYPE_CHECKING:
    from citadel.volume.volume import Volume


class VolumeOps:
    """Mixed into `Volume`: files, directories and metadata."""

    lock: threading.RLock
    ns: Namespace
    chunker: Chunker
    chunk_size: int
    dev: int
    writers: int
    auto_commit: bool
    closed: bool

    def usable(self, write: bool = False) -> None:  # provided by Volume
        raise NotImplementedError

    def commit(self) -> Optional[str]:  # provided by Volume
        raise NotImplementedError

    @property
    def changed(self) -> bool:  # provided by Volume
        raise NotImplementedError

    # --- files -------------------------------------------------------------------------------
    def open_file(self, path: str, mode: str = "r", buffering: int = -1, encoding: Optional[str] = None,
                  errors: Optional[str] = None, newline: Optional[str] = None, closefd: bool = True,
                  opener: Any = None, *, name: Any = None) -> Any:
        """``open()`` for a volume file; ``name`` is what ``f.name`` shows (the program's own path)."""
        creating, reading, writing, appending, updating, binary = parse_mode(
            mode, buffering, encoding, errors, newline)
        if not closefd:
            raise ValueError("Cannot use closefd=False with file name")
        if opener is not None:
            raise ValueError("open(opener=...) is not supported for files in an encrypted volume")
        writable = creating or writing or appending or updating
        with self.lock:
            self.usable(write=writable)
            node = self._node_for_open(path, create=not reading, exclusive=creating)
            if writing and node.size:
                self.chunker.truncate(node, 0)
            raw = VolumeRawFile(self, node, path if name is None else name,  # type: ignore[arg-type]
                                readable=reading or updating, writable=writable, append=appending,
                                created=creating)
        return wrap(raw, mode, buffering, encoding, errors, newline, binary, self.chunk_size)

    def _node_for_open(self, path: str, *, create: bool, exclusive: bool) -> FileNode:
        rel, want_dir = normalize(path)
        if self.ns.is_dir(rel):
            raise oserror(errno.EEXIST if exclusive else errno.EISDIR, path)
        self.ns.check_parent(rel, path)
        node = self.ns.files.get(rel)
        if want_dir:
            code = errno.ENOTDIR if node is not None else (errno.EISDIR if create else errno.ENOENT)
            raise oserror(code, path)
        if node is not None:
            if exclusive:
                raise oserror(errno.EEXIST, path)
            return node
        if not create:
            raise oserror(errno.ENOENT, path)
        node = FileNode(rel, os.urandom(16), 0, time.time_ns(), FILE_MODE, [])
        self.ns.add_file(rel, node)
        return node

    def writer_closed(self) -> None:
        """A writable handle closed: the last one to close commits ("close of the last writer")."""
        with self.lock:
            self.writers = max(0, self.writers - 1)
            if self.writers == 0 and self.auto_commit and not self.closed and self.changed:
                self.commit()

    def read_bytes(self, path: str) -> bytes:
        with self.open_file(path, "rb") as fh:
            return fh.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.open_file(path, "wb") as fh:
            fh.write(data)

    # --- directories -------------------------------------------------------------------------
    def listdir(self, path: str = "") -> List[str]:
        with self.lock:
            self.usable()
            return self.ns.listdir(path)

    def scandir(self, path: str = "", *, display: Optional[str] = None) -> VolumeScandir:
        """Like ``os.scandir``; entries' ``path`` joins ``display`` (default: ``path``) and the name."""
        with self.lock:
            self.usable()
            names = self.ns.listdir(path)
            rel = normalize(path)[0]
            entries = [(name, f"{rel}/{name}" if rel else name) for name in names]
            kinds = [self.ns.is_dir(r) for _, r in entries]
        shown = path if display is None else display
        return VolumeScandir([VolumeDirEntry(self, name, os.path.join(shown, name), r, d)  # type: ignore[arg-type]
                              for (name, r), d in zip(entries, kinds)])

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self.lock:
            self.usable(write=True)
            self.ns.mkdir(path)

    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        with self.lock:
            self.usable(write=True)
            rel, _ = normalize(path)
            parts = rel.split("/") if rel else []
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if self.ns.is_dir(sub):
                    continue
                if sub in self.ns.files:
                    raise oserror(errno.EEXIST if i == len(parts) else errno.ENOTDIR, path)
                self.ns.mkdir(sub)
                if i == len(parts):
                    return
            if not exist_ok:
                raise oserror(errno.EEXIST, path)

    def rmdir(self, path: str) -> None:
        with self.lock:
            self.usable(write=True)
            self.ns.rmdir(path)

    def remove(self, path: str) -> None:
        with self.lock:
            self.usable(write=True)
            self.ns.remove(path)

    unlink = remove

    def rename(self, src: str, dst: str) -> None:
        with self.lock:
            self.usable(write=True)
            self.ns.rename(src, dst)

    replace = rename  # POSIX rename replaces, as os.replace does

    # --- metadata ----------------------------------------------------------------------------
    def stat(self, path: str) -> os.stat_result:
        """Like ``os.stat`` (and ``os.lstat``: volumes hold no symbolic links); sizes are plaintext sizes."""
        with self.lock:
            self.usable()
            return self.ns.stat(path, self.dev, self.chunk_size)

    lstat = stat

    def stat_node(self, node: FileNode) -> os.stat_result:
        with self.lock:
            return node_stat(node, self.dev, self.chunk_size)

    def _kind(self, path: str) -> Tuple[bool, bool]:
        try:
            with self.lock:
                _, node, is_dir = self.ns.lookup(path)
            return True, is_dir
        except (OSError, ValueError):
            return False, False

    def exists(self, path: str) -> bool:
        return self._kind(path)[0]

    def isdir(self, path: str) -> bool:
        return self._kind(path)[1]

    def isfile(self, path: str) -> bool:
        found, is_dir = self._kind(path)
        return found and not is_dir

    def chmod(self, path: str, mode: int) -> None:
        with self.lock:
            self.usable(write=True)
            _, node, _ = self.ns.lookup(path)
            if node is not None:
                node.mode = mode & 0o7777
                self.ns.changed = True
                self.ns.mutations += 1

    def utime(self, path: str, ns: Optional[Tuple[int, int]] = None) -> None:
        """Set a file's modification time (nanoseconds; now if omitted); volumes keep one time per file."""
        with self.lock:
            self.usable(write=True)
            _, node, _ = self.ns.lookup(path)
            if node is not None:
                node.mtime_ns = ns[1] if ns is not None else time.time_ns()
                self.ns.changed = True
                self.ns.mutations += 1

    def walk_files(self) -> Iterator[Tuple[str, int]]:
        """(path, size) of every file, sorted (for owner tools)."""
        with self.lock:
            self.usable()
            items = sorted((p, n.size) for p, n in self.ns.files.items())
        return iter(items)

    def directories(self) -> List[str]:
        with self.lock:
            return sorted(self.ns.dirs)

    def verify(self) -> int:
        """Authenticate every chunk of every file; returns the bytes checked. Raises TamperedVolume."""
        total = 0
        with self.lock:
            self.usable()
            for path in sorted(self.ns.files):
                node = self.ns.files[path]
                self.chunker.verify(node)
                total += node.size
        return total


class VolumeDirEntry:
    """What ``os.scandir`` yields, for a volume entry."""

    __slots__ = ("_vol", "name", "path", "_rel", "_is_dir")

    def __init__(self, vol: Volume, name: str, path: str, rel: str, is_dir: bool) -> None:
        self._vol, self.name, self.path, self._rel, self._is_dir = vol, name, path, rel, is_dir

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return self._is_dir

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return not self._is_dir

    def is_symlink(self) -> bool:
        return False

    def is_junction(self) -> bool:
        return False

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return self._vol.stat(self._rel)

    def inode(self) -> int:
        return self.stat().st_ino

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"


class VolumeScandir:
    """The iterator ``os.scandir`` returns: iterable once, closable, a context manager."""

    def __init__(self, entries: List[VolumeDirEntry]) -> None:
        self._it = iter(entries)

    def __iter__(self) -> VolumeScandir:
        return self

    def __next__(self) -> VolumeDirEntry:
        return next(self._it)

    def close(self) -> None:
        self._it = iter(())

    def __enter__(self) -> VolumeScandir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
