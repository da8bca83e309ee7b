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
from citadel.errors import EngineError, ImageError, SealedFileReadOnly
from citadel.seal.format import UNPROTECTED
from citadel.seal.image import SealedImage

MYPY = False
if MYPY:  # only the type checker needs it
    from citadel.engine.volumes import VolumeSet

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
                set_name(handle, file)
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


def set_name(handle: Any, file: Any) -> None:
    """Give a file object served from a memfd the name it was opened by, as open() would."""
    raw = handle
    for attr in ("buffer", "raw"):
        raw = getattr(raw, attr, raw)
    with contextlib.suppress(AttributeError):
        raw.name = file


def _with_size(result: os.stat_result, size: int) -> os.stat_result:
    fields = list(result)
    fields[stat_module.ST_SIZE] = size
    extra = {name: getattr(result, name) for name in STAT_EXTRA if hasattr(result, name)}
    return os.stat_result(fields, extra)


STAT_EXTRA = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
               "st_blksize", "st_blocks", "st_rdev", "st_flags", "st_gen", "st_birthtime")
_GUARDED = ("remove", "unlink", "rmdir", "mkdir", "rename", "replace", "truncate", "chmod", "utime",
            "link", "symlink")

_installed: Optional[FileShield] = None
_volumes_installed: Optional[Any] = None
_install_lock = threading.Lock()


def install(image: Optional[SealedImage], volumes: Optional[VolumeSet] = None) -> None:
    """Put the file shield in place for ``image`` and the mounted ``volumes`` (once per process).

    The image's half goes first; the volumes' half (`citadel.engine.volumeshield`) wraps it, so a
    path under a mount path never reaches the image's checks and any other path costs the volume
    half one prefix check. Installing again for the same image is a no-op.
    """
    global _installed, _volumes_installed
    with _install_lock:
        if image is not None:
            if _installed is not None:
                if _installed.image is not image:
                    raise ImageError("the file shield is already installed for another image",
                                     "start a new engine process for each image")
            else:
                _installed = _install_image(image)
        if volumes is not None and volumes.mounts:
            if _volumes_installed is not None:
                if _volumes_installed.volumes is not volumes:
                    raise EngineError("the file shield is already installed for other volumes",
                                      "start a new engine process for each run")
                return
            _volumes_installed = _install_volumes(volumes)


def _install_image(image: SealedImage) -> FileShield:
    shield = FileShield(image)
    replacements = {"open": shield.open, "open_code": shield.open_code, "os_open": shield.os_open,
                    "stat": shield.stat, "lstat": shield.lstat, "access": shield.access}
    replacements.update({name: shield.guard(name) for name in _GUARDED})
    replace_functions(replacements)
    return shield


def _install_volumes(volumes: VolumeSet) -> Any:
    from citadel.engine.volumeshield import VolumeShield, previous_functions

    shield = VolumeShield(volumes, previous_functions())
    replacements = dict(shield.functions())
    replacements["os_open"] = replacements.pop("open")
    replacements.update({"open": shield.open, "open_code": shield.open_code})
    replace_functions(replacements)
    sys.addaudithook(shield.audit)  # what reaches a mount path without the wrappers is refused
    return shield


def replace_functions(replacements: Dict[str, Any]) -> None:
    """Put each replacement in place: "open" (builtins.open and io.open, one object, as in CPython),
    "open_code" (io.open_code), "os_open" (os.open), any other name os.<name>. Python's private
    references to the functions replaced (tokenize's, pathlib's accessor on 3.9/3.10) follow."""
    before: Dict[int, Any] = {}
    if "open" in replacements:
        before[id(builtins.open)] = replacements["open"]
        builtins.open = io.open = replacements["open"]
    if "open_code" in replacements:
        before[id(io.open_code)] = replacements["open_code"]
        io.open_code = replacements["open_code"]
    for name, func in replacements.items():
        if name in ("open", "open_code"):
            continue
        attr = "open" if name == "os_open" else name
        before[id(getattr(os, attr))] = func
        setattr(os, attr, func)
    tokenize = sys.modules.get("tokenize")  # linecache reads source through tokenize's own open
    old_open = getattr(tokenize, "_builtin_open", None) if tokenize is not None else None
    if old_open is not None and id(old_open) in before:
        tokenize._builtin_open = before[id(old_open)]  # type: ignore[union-attr]
    _patch_pathlib_accessor(before)


def _patch_pathlib_accessor(replacements: Dict[int, Any]) -> None:
    """Python 3.9/3.10 pathlib bound os/io functions at import time in ``_normal_accessor``."""
    pathlib = sys.modules.get("pathlib")
    accessor = getattr(pathlib, "_normal_accessor", None) if pathlib is not None else None
    if accessor is None:
        return
    for name in dir(type(accessor)):
        value = getattr(accessor, name, None)
        if id(value) in replacements:
            setattr(accessor, name, replacements[id(value)])


def installed() -> Optional[FileShield]:
    """The image's shield in place, if any."""
    return _installed
