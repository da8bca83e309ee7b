"""Descriptors for volume files and directories inside the engine: ``os.open`` and the fd calls.

A volume file has no real descriptor: `VolumeRawFile.fileno()` returns a *token* (a real
descriptor of "/", never data) and ``citadel.volume.file_for_fd`` maps it back. This module
gives ``os.open`` on a volume path the same kind of token (so ``tempfile.mkstemp(dir=...)``,
``Path.touch`` and ``os.open(dir)`` + ``os.fsync`` work), and routes every descriptor call that
would otherwise reach the host through a token: ``os.read``/``write``/``lseek``/``fstat``/
``fsync``/``ftruncate``/``close``/``pread``/``pwrite`` go to the volume file; ``fchmod``,
``fchown``, ``fchdir``, ``dup`` and ``*_dir_fd`` uses are routed or refused, never applied to "/".
A directory opened with ``os.open`` gets a token of its own: an anonymous memfd, so whatever
reaches it unrouted changes nothing on the host; ``os.fsync`` of it commits the volume.

Descriptor calls on ordinary descriptors cost one dictionary lookup. Engine-safe, Python 3.9.
"""

from __future__ import annotations

import errno
import os

from citadel.volume import Volume, VolumeRawFile, file_for_fd
from citadel.volume.fileio import parse_mode, wrap

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Dict, Optional, Tuple

_TMPFILE_BITS = getattr(os, "O_TMPFILE", 0) & ~getattr(os, "O_DIRECTORY", 0)
_ACCMODE = getattr(os, "O_ACCMODE", 3)  # PyPy 3.9's os has no O_ACCMODE


def oserror(code: int, filename: Any = None, filename2: Any = None) -> OSError:
    """The OSError subclass os itself raises for ``code``."""
    if filename is None:
        return OSError(code, os.strerror(code))
    if filename2 is None:
        return OSError(code, os.strerror(code), filename)
    return OSError(code, os.strerror(code), filename, None, filename2)


_REFUSALS = {
    "dup": "a file of an encrypted volume has no real descriptor to duplicate (for numpy's tofile/fromfile "
           "use np.save/np.load, or f.write(a.tobytes()) and np.frombuffer(f.read()))",
    "dup2": "a file of an encrypted volume has no real descriptor to duplicate or replace",
    "fchown": "files of an encrypted volume have no owner of their own",
    "fchdir": "a directory of an encrypted volume cannot be the working directory through a descriptor",
}


def refusal(name: str) -> OSError:
    """EPERM with a sentence that says why (the descriptor is a volume token)."""
    return OSError(errno.EPERM, _REFUSALS.get(name, os.strerror(errno.EPERM)))


class DirToken:
    """A directory of a volume opened with ``os.open`` (for ``os.fsync``, ``fstat``, ``dir_fd``)."""

    __slots__ = ("volume", "rel")

    def __init__(self, volume: Volume, rel: str) -> None:
        self.volume = volume
        self.rel = rel


class VolumeFds:
    """The descriptor side of the volume shield: tokens handed out by ``os.open`` and the fd calls."""

    def __init__(self, original: Any, track: Callable[[Any], Any]) -> None:
        self.o = original  # the functions in place before the volume shield
        self._track = track
        self._files: Dict[int, VolumeRawFile] = {}  # strong references: the program may hold only the number
        self._dirs: Dict[int, DirToken] = {}

    # --- which descriptor is what --------------------------------------------------------------
    def file(self, fd: Any) -> Optional[VolumeRawFile]:
        return file_for_fd(fd) if type(fd) is int else None

    def directory(self, fd: Any) -> Optional[DirToken]:
        return self._dirs.get(fd) if type(fd) is int else None

    def is_token(self, fd: Any) -> bool:
        return type(fd) is int and (fd in self._dirs or file_for_fd(fd) is not None)

    # --- os.open -------------------------------------------------------------------------------
    def open(self, vol: Volume, rel: str, flags: int, shown: Any) -> int:
        """``os.open`` of a volume path: a token for a file (with FileIO's semantics) or a directory."""
        if flags & _TMPFILE_BITS:
            raise oserror(errno.EOPNOTSUPP, shown)  # tempfile falls back to a named file it unlinks
        access = flags & _ACCMODE
        exists, is_dir = vol.exists(rel), vol.isdir(rel)
        if exists and flags & os.O_CREAT and flags & os.O_EXCL:
            raise oserror(errno.EEXIST, shown)
        if is_dir:
            if access != os.O_RDONLY:
                raise oserror(errno.EISDIR, shown)
            vol.listdir(rel)  # the volume is usable
            return self._dir_token(vol, rel)
        if flags & getattr(os, "O_DIRECTORY", 0):
            raise oserror(errno.ENOTDIR if exists else errno.ENOENT, shown)
        if not exists and not flags & os.O_CREAT:
            raise oserror(errno.ENOENT, shown)
        plus = "" if access == os.O_RDONLY else "+"
        if flags & os.O_APPEND and access != os.O_RDONLY:
            mode = "ab" + plus
        elif not exists:
            mode = "xb+"
        elif flags & os.O_TRUNC and access != os.O_RDONLY:
            mode = "wb" + plus
        else:
            mode = "rb" + plus
        raw = vol.open_file(rel, mode, 0, name=shown)
        fd = raw.fileno()
        self._files[fd] = raw
        return fd

    def _dir_token(self, vol: Volume, rel: str) -> int:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("citadel-volume-dir", os.MFD_CLOEXEC)
        else:  # pragma: no cover - Pythons without memfd_create
            fd = self.o.os_open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._dirs[fd] = DirToken(vol, rel)
        return fd

    def wrap(self, raw: VolumeRawFile, mode: str, buffering: int, encoding: Optional[str], errors: Optional[str],
             newline: Optional[str], closefd: bool) -> Any:
        """``open(fd)`` / ``os.fdopen(fd)`` of a volume file token: the io layers over its raw file."""
        if not closefd:
            raise ValueError("open(fd, closefd=False) is not supported for files of an encrypted volume")
        binary = parse_mode(mode, buffering, encoding, errors, newline)[5]
        return self._track(wrap(raw, mode, buffering, encoding, errors, newline, binary, raw._vol.chunk_size))

    # --- the descriptor calls ------------------------------------------------------------------
    def close(self, fd: int) -> None:
        raw = self.file(fd)
        if raw is not None:
            self._files.pop(fd, None)
            raw.close()
            return
        if self.directory(fd) is not None:
            del self._dirs[fd]
        self.o.close(fd)

    def fstat(self, fd: int) -> os.stat_result:
        raw = self.file(fd)
        if raw is not None:
            return raw.stat()
        token = self.directory(fd)
        if token is not None:
            return token.volume.stat(token.rel)
        return self.o.fstat(fd)

    def fsync(self, fd: Any) -> None:
        target = fd if type(fd) is int else getattr(fd, "fileno", lambda: fd)()
        raw = self.file(target)
        if raw is not None:
            raw.fsync()
            return
        token = self.directory(target)
        if token is not None:
            if not token.volume.read_only:
                token.volume.commit()
            return
        self.o.fsync(fd)

    def fdatasync(self, fd: Any) -> None:
        target = fd if type(fd) is int else getattr(fd, "fileno", lambda: fd)()
        if self.is_token(target):
            self.fsync(target)
            return
        self.o.fdatasync(fd)

    def read(self, fd: int, n: int) -> bytes:
        raw = self.file(fd)
        if raw is not None:
            return raw.read(n) or b""
        self._not_for_directories(fd)
        return self.o.read(fd, n)

    def write(self, fd: int, data: Any) -> int:
        raw = self.file(fd)
        if raw is not None:
            return raw.write(data) or 0
        self._not_for_directories(fd)
        return self.o.write(fd, data)

    def lseek(self, fd: int, position: int, how: int) -> int:
        raw = self.file(fd)
        if raw is not None:
            return raw.seek(position, how)
        self._not_for_directories(fd)
        return self.o.lseek(fd, position, how)

    def ftruncate(self, fd: int, length: int) -> None:
        raw = self.file(fd)
        if raw is not None:
            raw.truncate(length)
            return
        self._not_for_directories(fd)
        self.o.ftruncate(fd, length)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        raw = self.file(fd)
        if raw is None:
            self._not_for_directories(fd)
            return self.o.pread(fd, n, offset)
        with raw._vol.lock:
            here = raw.tell()
            try:
                raw.seek(offset)
                return raw.read(n) or b""
            finally:
                raw.seek(here)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        raw = self.file(fd)
        if raw is None:
            self._not_for_directories(fd)
            return self.o.pwrite(fd, data, offset)
        with raw._vol.lock:
            here = raw.tell()
            try:
                raw.seek(offset)
                return raw.write(data) or 0
            finally:
                raw.seek(here)

    def fchmod(self, fd: int, mode: int) -> None:
        raw = self.file(fd)
        if raw is not None:
            raw._vol.chmod(raw._node.path, mode)
            return
        token = self.directory(fd)
        if token is not None:
            token.volume.chmod(token.rel, mode)
            return
        self.o.fchmod(fd, mode)

    def refuse(self, name: str) -> Callable[..., Any]:
        """A wrapper for an fd call that must never reach the host through a token (fchown, fchdir, dup)."""
        func = getattr(self.o, name)

        def refusing(fd: Any, *args: Any, **kwargs: Any) -> Any:
            if self.is_token(fd):
                raise refusal(name)
            return func(fd, *args, **kwargs)

        refusing.__name__ = refusing.__qualname__ = name
        refusing.__doc__ = func.__doc__
        return refusing

    def fstatvfs(self, fd: int) -> Any:
        raw = self.file(fd)
        token = self.directory(fd)
        vol = raw._vol if raw is not None else token.volume if token is not None else None
        if vol is not None:
            return self.o.statvfs(vol.root)
        return self.o.fstatvfs(fd)

    def _not_for_directories(self, fd: int) -> None:
        if self.directory(fd) is not None:
            raise oserror(errno.EISDIR)

    # --- the token behind a path-or-fd argument --------------------------------------------------
    def target(self, fd: int) -> Optional[Tuple[Volume, str, Optional[VolumeRawFile]]]:
        """(volume, path, raw file) of a token (os.stat(fd), os.chmod(fd), ...), or None."""
        raw = self.file(fd)
        if raw is not None:
            return raw._vol, raw._node.path, raw
        token = self.directory(fd)
        if token is not None:
            return token.volume, token.rel, None
        return None

