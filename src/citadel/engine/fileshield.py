"""The file shield: ordinary file APIs see sealed files as their verified plaintext, read-only.

Installed once in the engine, it replaces ``builtins.open``/``io.open``/``io.open_code``,
``os.open``, ``os.stat``/``os.lstat``/``os.access`` and the ``os`` calls that change the file
system (remove, rename, mkdir, ...), all of them here, in one table. For a path outside the image
each wrapper costs one path resolution and a prefix check, then calls the original. For a path
inside the image (``SealedImage.relpath`` of its resolved form):

* a sealed file (encrypted or authenticated) opened for reading is decrypted and verified in
  full (`SealedImage.read`, TamperedImage on any change) and served from a sealed read-only
  memfd, so the caller gets a real file: fileno, seek, mmap, readinto, text decoding all work;
* any attempt to write, create, truncate, remove or rename there raises
  :class:`SealedFileWriteRefused` (a PermissionError), unless the path is in the unprotected region;
* a file the manifest does not hold and the unprotected patterns do not cover is refused
  (:class:`FileNotSealed`); unprotected files are opened as they are.

``os.stat`` reports a sealed file's plaintext size. The wrappers live in the process, so a forked
child keeps them. The originals stay available in :data:`original` for the engine's own use.
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import stat as stat_module
import sys
import threading
import types
from typing import Any, Callable, Dict, Optional

from citadel.engine.memfd import fd_path, memfd_from_image
from citadel.errors import ImageError, SealedFileReadOnly
from citadel.seal.format import UNPROTECTED
from citadel.seal.image import SealedImage

#: the unpatched functions, for the engine's own use
original = types.SimpleNamespace(
    open=builtins.open, io_open=io.open, open_code=io.open_code, os_open=os.open, stat=os.stat,
    lstat=os.lstat, access=os.access, remove=os.remove, unlink=os.unlink, rmdir=os.rmdir,
    mkdir=os.mkdir, rename=os.rename, replace=os.replace, truncate=os.truncate, chmod=os.chmod,
    utime=os.utime, link=os.link, symlink=os.symlink, readlink=os.readlink,
)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MAX_SYMLINKS = 40
_DIR_CACHE_SIZE = 4096


class SealedFileWriteRefused(SealedFileReadOnly, PermissionError):
    """A program inside the engine tried to change, create or remove a file of the sealed image."""

    def __init__(self, path: str) -> None:
        cause = "sealed files are read-only inside the engine"
        remedy = "write to a volume or a path outside the image"
        PermissionError.__init__(self, errno.EACCES, f"{cause}; {remedy}", path)
        self.cause, self.remedy = f"{cause}: {path!r}", remedy


class FileNotSealed(ImageError, PermissionError):
    """A file inside the image that the manifest does not hold (added after sealing)."""

    def __init__(self, path: str) -> None:
        cause = "this file inside the sealed image is not in its manifest (added after sealing?)"
        remedy = "only sealed files, or files the image's unprotected patterns cover, can be opened"
        PermissionError.__init__(self, errno.EACCES, f"{cause}; {remedy}", path)
        self.cause, self.remedy = f"{cause}: {path!r}", remedy


def _realpath(path: str) -> str:
    """os.path.realpath of an absolute normalised path, using the unpatched lstat (non-strict)."""
    resolved = "/"
    pending = [p for p in path.split("/") if p]
    pending.reverse()
    hops = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = resolved.rstrip("/") + "/" + name
        try:
            is_link = stat_module.S_ISLNK(original.lstat(candidate).st_mode)
        except OSError:
            is_link = False
        if not is_link:
            resolved = candidate
            continue
        hops += 1
        if hops > _MAX_SYMLINKS:
            return path
        target = original.readlink(candidate)
        if target.startswith("/"):
            resolved = "/"
        pending.extend(reversed([p for p in target.split("/") if p]))
    return resolved


class FileShield:
    """Decides, for one image, what each file operation on a path may do."""

    def __init__(self, image: SealedImage) -> None:
        self.image = image
        self.root = image.root
        self.prefix = image.root.rstrip("/") + "/"
        # Directories outside the image rarely change what they resolve to; if the host re-points one
        # later, the worst case is ciphertext served as is or a write refused, never plaintext leaked.
        self._real_dirs: Dict[str, str] = {}

    # --- where is a path ---------------------------------------------------------------------
    def relpath(self, path: Any, dir_fd: Optional[int] = None) -> Optional[str]:
        """The image-relative path of ``path`` (a str, bytes or PathLike), or None if outside."""
        if isinstance(path, int):
            return None
        text = os.fspath(path)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if dir_fd is not None and not text.startswith("/"):
            text = original.readlink(fd_path(dir_fd)) + "/" + text
        full = os.path.abspath(text)
        if not (full == self.root or full.startswith(self.prefix)):
            full = self._resolve(full)
        if full == self.root:
            return ""
        return full[len(self.prefix):] if full.startswith(self.prefix) else None

    def _resolve(self, full: str) -> str:
        """realpath, with the resolved form of each directory cached (one lstat per call after)."""
        head, _, tail = full.rpartition("/")
        real_head = self._real_dirs.get(head)
        if real_head is None:
            if len(self._real_dirs) > _DIR_CACHE_SIZE:
                self._real_dirs.clear()
            real_head = self._real_dirs[head] = _realpath(head or "/")
        candidate = real_head.rstrip("/") + "/" + tail if tail else real_head
        try:
            if tail and stat_module.S_ISLNK(original.lstat(candidate).st_mode):
                return _realpath(candidate)
        except OSError:
            pass
        return candidate

    def check_write(self, rel: Optional[str], path: Any) -> None:
        """Raise SealedFileWriteRefused unless the path is outside the image or unprotected."""
        if rel is not None and self.image.region_of(rel) != UNPROTECTED:
            raise SealedFileWriteRefused(os.fsdecode(os.fspath(path)))

    def sealed_for_reading(self, rel: str, path: Any) -> bool:
        """True if reads must be served from the image; raises for files the image does not hold."""
        region = self.image.region_of(rel)
        if region == UNPROTECTED:
            return False
        if region is not None:
            return True
        if rel == "" or self.image.is_dir(rel):
            return False
        try:
            original.lstat(self.image.host_path(rel))
        except OSError:
            return False  # let the original call report that it does not exist
        raise FileNotSealed(os.fsdecode(os.fspath(path)))

    def plaintext_fd(self, rel: str, flags: int = os.O_RDONLY) -> int:
        """A new read-only descriptor on a sealed memfd holding the verified plaintext of ``rel``."""
        memfd = memfd_from_image(self.image, rel)
        try:
            return original.os_open(fd_path(memfd), (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
        finally:
            os.close(memfd)

    # --- the wrappers ------------------------------------------------------------------------
    def open(self, file: Any, mode: str = "r", buffering: int = -1, encoding: Optional[str] = None,
             errors: Optional[str] = None, newline: Optional[str] = None, closefd: bool = True,
             opener: Optional[Callable[[str, int], int]] = None) -> Any:
        rel = None if isinstance(file, int) else self.relpath(file)
        if rel is not None:
            if any(c in mode for c in "wax+"):
                self.check_write(rel, file)
            elif closefd and self.sealed_for_reading(rel, file):
                fd = self.plaintext_fd(rel)
                try:
                    handle = original.open(fd, mode, buffering, encoding, errors, newline)
                except BaseException:
                    os.close(fd)
                    raise
                _set_name(handle, file)
                return handle
        return original.open(file, mode, buffering, encoding, errors, newline, closefd, opener)

    def open_code(self, path: Any) -> Any:
        return self.open(path, "rb")

    def os_open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Optional[int] = None) -> int:
        rel = self.relpath(path, dir_fd)
        if rel is not None:
            if flags & _WRITE_FLAGS:
                self.check_write(rel, path)
            elif self.sealed_for_reading(rel, path):
                return self.plaintext_fd(rel, flags)
        return original.os_open(path, flags, mode, dir_fd=dir_fd)

    def stat(self, path: Any, *, dir_fd: Optional[int] = None,
             follow_symlinks: bool = True) -> os.stat_result:
        result = original.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        if stat_module.S_ISREG(result.st_mode):
            rel = self.relpath(path, dir_fd)
            entry = self.image.entry(rel) if rel is not None else None
            if entry is not None and entry.size != result.st_size:
                return _with_size(result, entry.size)
        return result

    def lstat(self, path: Any, *, dir_fd: Optional[int] = None) -> os.stat_result:
        return self.stat(path, dir_fd=dir_fd, follow_symlinks=False)

    def access(self, path: Any, mode: int, *, dir_fd: Optional[int] = None, effective_ids: bool = False,
               follow_symlinks: bool = True) -> bool:
        if mode & os.W_OK:
            rel = self.relpath(path, dir_fd)
            if rel is not None and self.image.region_of(rel) != UNPROTECTED:
                return False
        return original.access(path, mode, dir_fd=dir_fd, effective_ids=effective_ids,
                               follow_symlinks=follow_symlinks)

    def guard(self, name: str) -> Callable[..., Any]:
        """A wrapper for the os call ``name`` that refuses to change anything inside the image."""
        func = getattr(original, name)
        two_paths = name in ("rename", "replace", "link", "symlink")

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if two_paths:
                if name not in ("symlink",):  # a symlink's source is only text, not a file it changes
                    self.check_write(self.relpath(args[0], kwargs.get("src_dir_fd")), args[0])
                self.check_write(self.relpath(args[1], kwargs.get("dst_dir_fd", kwargs.get("dir_fd"))),
                                 args[1])
            elif args and not isinstance(args[0], int):
                self.check_write(self.relpath(args[0], kwargs.get("dir_fd")), args[0])
            return func(*args, **kwargs)

        guarded.__name__ = guarded.__qualname__ = name
        guarded.__doc__ = func.__doc__
        return guarded


def _set_name(handle: Any, file: Any) -> None:
    """Give a file object served from a memfd the name it was opened by, as open() would."""
    raw = handle
    for attr in ("buffer", "raw"):
        raw = getattr(raw, attr, raw)
    with contextlib.suppress(AttributeError):
        raw.name = file


def _with_size(result: os.stat_result, size: int) -> os.stat_result:
    fields = list(result)
    fields[stat_module.ST_SIZE] = size
    extra = {name: getattr(result, name) for name in _STAT_EXTRA if hasattr(result, name)}
    return os.stat_result(fields, extra)


_STAT_EXTRA = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
               "st_blksize", "st_blocks", "st_rdev", "st_flags", "st_gen", "st_birthtime")
_GUARDED = ("remove", "unlink", "rmdir", "mkdir", "rename", "replace", "truncate", "chmod", "utime",
            "link", "symlink")

_installed: Optional[FileShield] = None
_install_lock = threading.Lock()


def install(image: SealedImage) -> None:
    """Put the file shield in place for ``image`` (once per process; again for it is a no-op)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            if _installed.image is image:
                return
            raise ImageError("the file shield is already installed for another image",
                             "start a new engine process for each image")
        shield = FileShield(image)
        builtins.open = io.open = shield_open = shield.open  # one object, as in CPython
        io.open_code = shield.open_code
        os.open = shield.os_open
        os.stat = shield.stat
        os.lstat = shield.lstat
        os.access = shield.access
        for name in _GUARDED:
            setattr(os, name, shield.guard(name))
        tokenize = sys.modules.get("tokenize")  # linecache reads source through tokenize's own open
        if tokenize is not None and getattr(tokenize, "_builtin_open", None) is original.open:
            tokenize._builtin_open = shield_open  # type: ignore[attr-defined]
        _patch_pathlib_accessor()
        _installed = shield


def _patch_pathlib_accessor() -> None:
    """Python 3.9/3.10 pathlib bound os/io functions at import time in ``_normal_accessor``."""
    pathlib = sys.modules.get("pathlib")
    accessor = getattr(pathlib, "_normal_accessor", None) if pathlib is not None else None
    if accessor is None:
        return
    replacements = {id(getattr(original, name)): getattr(os, name) for name in _GUARDED + ("stat", "lstat")}
    replacements[id(original.os_open)] = os.open
    replacements[id(original.io_open)] = io.open
    for name in dir(type(accessor)):
        value = getattr(accessor, name, None)
        if id(value) in replacements:
            setattr(accessor, name, replacements[id(value)])


def installed() -> Optional[FileShield]:
    """The shield in place, if any."""
    return _installed
