"""The directory tree of a volume session, with POSIX semantics for ordinary programs (engine-safe).

Paths here are volume-relative POSIX strings ("" is the volume's root). Failures are raised as
the `OSError` subclasses, with the errno values, that Linux gives for the same call on a plain
directory, so code that handles `FileNotFoundError` or `errno.ENOTEMPTY` works unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_mod
import time
from typing import Dict, List, Optional, Set, Tuple

from citadel.volume.chunks import FileNode

DIR_MODE = 0o755
FILE_MODE = 0o644


def oserror(code: int, path: str, path2: Optional[str] = None) -> OSError:
    """The same exception os raises: the errno's subclass, message and file name(s)."""
    if path2 is None:
        return OSError(code, os.strerror(code), path)
    return OSError(code, os.strerror(code), path, None, path2)


def normalize(path: str) -> Tuple[str, bool]:
    """A volume path's canonical form, and whether it ended with "/" (it must then be a directory)."""
    if not isinstance(path, str):
        raise TypeError(f"volume paths are str, not {type(path).__name__}")
    if "\0" in path:
        raise ValueError("embedded null byte")
    parts: List[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise oserror(errno.EACCES, path)  # outside the volume
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts), path.endswith("/") and bool(parts)


def parent_of(rel: str) -> str:
    return rel.rpartition("/")[0]


def name_of(rel: str) -> str:
    return rel.rpartition("/")[2]


class Namespace:
    """Directories and files (FileNode) of one session, with a child index for fast listings."""

    def __init__(self, dirs: List[str], files: Dict[str, FileNode]) -> None:
        self.files = files
        self.dirs: Set[str] = set(dirs)
        self.dir_mtime: Dict[str, int] = {}
        self.children: Dict[str, Set[str]] = {"": set()}
        for d in sorted(self.dirs):
            self.children[d] = set()
        for entry in list(self.dirs) + list(files):
            self.children[parent_of(entry)].add(name_of(entry))
        self.changed = False
        self.mutations = 0  # every change to the tree counts (a forked child's own changes show)

    # --- lookup ------------------------------------------------------------------------------
    def is_dir(self, rel: str) -> bool:
        return rel == "" or rel in self.dirs

    def check_parent(self, rel: str, shown: str) -> None:
        """Every ancestor of ``rel`` must be an existing directory (ENOTDIR / ENOENT otherwise)."""
        parent = parent_of(rel)
        if self.is_dir(parent):
            return
        probe = ""
        for part in parent.split("/"):
            probe = f"{probe}/{part}" if probe else part
            if probe in self.files:
                raise oserror(errno.ENOTDIR, shown)
            if probe not in self.dirs:
                raise oserror(errno.ENOENT, shown)

    def lookup(self, path: str) -> Tuple[str, Optional[FileNode], bool]:
        """(rel, file node or None, is a directory); raises if the path does not exist."""
        rel, want_dir = normalize(path)
        if self.is_dir(rel):
            return rel, None, True
        self.check_parent(rel, path)
        node = self.files.get(rel)
        if node is None:
            raise oserror(errno.ENOENT, path)
        if want_dir:
            raise oserror(errno.ENOTDIR, path)
        return rel, node, False

    def listdir(self, path: str) -> List[str]:
        rel, node, is_dir = self.lookup(path)
        if not is_dir:
            raise oserror(errno.ENOTDIR, path)
        return sorted(self.children.get(rel, ()))

    # --- changes -----------------------------------------------------------------------------
    def _link(self, rel: str) -> None:
        self.children[parent_of(rel)].add(name_of(rel))
        self.dir_mtime[parent_of(rel)] = time.time_ns()
        self.changed = True
        self.mutations += 1

    def _unlink(self, rel: str) -> None:
        self.children[parent_of(rel)].discard(name_of(rel))
        self.dir_mtime[parent_of(rel)] = time.time_ns()
        self.changed = True
        self.mutations += 1

    def add_file(self, rel: str, node: FileNode) -> None:
        self.files[rel] = node
        self._link(rel)

    def mkdir(self, path: str) -> None:
        rel, _ = normalize(path)
        if self.is_dir(rel) or rel in self.files:
            raise oserror(errno.EEXIST, path)
        self.check_parent(rel, path)
        self.dirs.add(rel)
        self.children[rel] = set()
        self.dir_mtime[rel] = time.time_ns()
        self._link(rel)

    def rmdir(self, path: str) -> None:
        rel, node, is_dir = self.lookup(path)
        if rel == "":
            raise oserror(errno.EBUSY, path)
        if not is_dir:
            raise oserror(errno.ENOTDIR, path)
        if self.children.get(rel):
            raise oserror(errno.ENOTEMPTY, path)
        self.dirs.discard(rel)
        del self.children[rel]
        self.dir_mtime.pop(rel, None)
        self._unlink(rel)

    def remove(self, path: str) -> FileNode:
        rel, node, is_dir = self.lookup(path)
        if is_dir or node is None:
            raise oserror(errno.EISDIR, path)
        del self.files[rel]
        self._unlink(rel)
        return node

    def rename(self, src: str, dst: str) -> Optional[FileNode]:
        """POSIX rename(2): replaces a file or an empty directory; returns a replaced file's node."""
        # Linux resolves both parent directories before it looks for the source itself.
        srel, drel, d_want_dir = normalize(src)[0], *normalize(dst)
        if srel:
            self.check_parent(srel, src)
        if drel:
            self.check_parent(drel, dst)
        srel, snode, s_is_dir = self.lookup(src)
        if srel == "" or drel == "":
            raise oserror(errno.EBUSY, src, dst)
        if srel == drel:
            return None
        if snode is not None and d_want_dir:
            raise oserror(errno.ENOTDIR, src, dst)
        if drel.startswith(srel + "/"):
            raise oserror(errno.EINVAL, src, dst)  # a directory into itself
        if srel.startswith(drel + "/"):
            raise oserror(errno.ENOTEMPTY, src, dst)  # onto one of its own ancestors
        d_is_dir, dnode = self.is_dir(drel), self.files.get(drel)
        if snode is not None:
            if d_is_dir:
                raise oserror(errno.EISDIR, src, dst)
            if dnode is not None:
                del self.files[drel]
                self._unlink(drel)
            del self.files[srel]
            self._unlink(srel)
            snode.path = drel
            self.add_file(drel, snode)
            return dnode
        if dnode is not None:
            raise oserror(errno.ENOTDIR, src, dst)
        if d_is_dir:
            if self.children.get(drel):
                raise oserror(errno.ENOTEMPTY, src, dst)
            self.rmdir(drel)
        self._move_tree(srel, drel)
        return None

    def _move_tree(self, srel: str, drel: str) -> None:
        prefix = srel + "/"

        def moved(p: str) -> str:
            return drel + p[len(srel) :]

        sub_dirs = sorted(d for d in self.dirs if d.startswith(prefix))
        sub_files = sorted(f for f in self.files if f.startswith(prefix))
        self._unlink(srel)
        for d in [srel] + sub_dirs:
            self.dirs.discard(d)
            self.dirs.add(moved(d))
            self.children[moved(d)] = self.children.pop(d)
            if d in self.dir_mtime:
                self.dir_mtime[moved(d)] = self.dir_mtime.pop(d)
        for f in sub_files:
            node = self.files.pop(f)
            node.path = moved(f)
            self.files[moved(f)] = node
        self._link(drel)

    # --- metadata ----------------------------------------------------------------------------
    def stat(self, path: str, dev: int, blksize: int) -> os.stat_result:
        rel, node, is_dir = self.lookup(path)
        if node is None:
            mtime = self.dir_mtime.get(rel, 0)
            return _stat_result(stat_mod.S_IFDIR | DIR_MODE, _dir_ino(rel), dev, 2, 0, mtime, blksize)
        return node_stat(node, dev, blksize)


def node_stat(node: FileNode, dev: int, blksize: int) -> os.stat_result:
    ino = int.from_bytes(node.file_id[:8], "big") >> 1
    return _stat_result(stat_mod.S_IFREG | node.mode, ino, dev, 1, node.size, node.mtime_ns, blksize)


def _dir_ino(rel: str) -> int:
    return int.from_bytes(hashlib.sha256(rel.encode("utf-8", "surrogateescape")).digest()[:8], "big") >> 1


def _stat_result(mode: int, ino: int, dev: int, nlink: int, size: int, mtime_ns: int,
                 blksize: int) -> os.stat_result:
    secs, nsecs = divmod(mtime_ns, 1_000_000_000)
    fsecs = mtime_ns / 1e9
    return os.stat_result(
        (mode, ino, dev, nlink, os.getuid(), os.getgid(), size, secs, secs, secs),
        {"st_atime": fsecs, "st_mtime": fsecs, "st_ctime": fsecs, "st_atime_ns": mtime_ns,
         "st_mtime_ns": mtime_ns, "st_ctime_ns": mtime_ns, "st_blksize": blksize,
         "st_blocks": -(-size // 512),
         # PyPy derives st_*_ns from these hidden fields (CPython ignores them)
         "nsec_atime": nsecs, "nsec_mtime": nsecs, "nsec_ctime": nsecs},
    )
