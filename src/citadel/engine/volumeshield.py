"""The volume half of the file shield: paths under a volume's mount path go to the volume.

Installed over whatever the file shield put in place for the image (or over the originals when
there is no image), so an ordinary path costs one extra check: its absolute form does not start
with any mount path (``str.startswith`` of a tuple), and the call goes on to the function that
was there before. A path under a mount path (resolved lexically against the working directory:
volumes hold no symbolic links, and the mount path need not exist on the host) is served by the
volume library: ``open`` in every mode, ``os.stat``/``lstat``/``access``/``listdir``/``scandir``/
``mkdir``/``rmdir``/``remove``/``unlink``/``rename``/``replace``/``chmod``/``utime``/``truncate``/
``statvfs`` and the extended-attribute calls, with the ``OSError`` subclasses and errno values of a
plain directory and the program's own path as the error's file name. ``os.open`` and the
descriptor calls are in `citadel.engine.volumefds`. A rename or link across the mount boundary
fails with EXDEV, so ``shutil.move`` copies instead; links, ownership changes, FIFOs and device
nodes are refused with EPERM. Engine-safe, Python 3.9.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import posixpath
import types

from citadel.engine.volumefds import VolumeFds, oserror, refusal
from citadel.volume import Volume
from citadel.volume.ops import VolumeDirEntry, VolumeScandir

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from citadel.engine.volumes import VolumeSet

    Found = Optional[Tuple[Volume, str]]

#: every function the volume shield replaces: os.<name>, plus builtins.open/io.open and io.open_code
PATH_CALLS = ("stat", "lstat", "access", "listdir", "scandir", "mkdir", "rmdir", "remove", "unlink", "rename",
              "replace", "chmod", "chown", "lchown", "utime", "truncate", "link", "symlink", "readlink", "mkfifo",
              "mknod", "statvfs", "listxattr", "getxattr", "setxattr", "removexattr", "chdir")
FD_CALLS = ("close", "fstat", "fsync", "fdatasync", "read", "write", "lseek", "ftruncate", "pread", "pwrite",
            "fchmod", "fstatvfs")
REFUSED_FD_CALLS = ("fchown", "fchdir", "dup")
_ACCMODE = getattr(os, "O_ACCMODE", 3)  # PyPy 3.9's os has no O_ACCMODE
_OPEN_FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
               "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}


def previous_functions() -> types.SimpleNamespace:
    """The functions in place now (the image shield's or the originals): what the volume shield calls on."""
    names = [n for n in PATH_CALLS + FD_CALLS + REFUSED_FD_CALLS + ("dup2",) if hasattr(os, n)]
    found = {name: getattr(os, name) for name in names}
    return types.SimpleNamespace(open=builtins.open, open_code=io.open_code, os_open=os.open, **found)


def _shown(exc: OSError, rel: str, shown: Any, rel2: Optional[str] = None, shown2: Any = None) -> OSError:
    """The volume's error with the program's own path(s) in it, and without the library's frames."""
    if exc.filename == rel:
        exc.filename = shown
    if rel2 is not None and exc.filename2 == rel2:
        exc.filename2 = shown2
    exc.__traceback__ = None
    return exc


class VolumeShield:
    """Routes file calls on paths under the mount paths to their volumes."""

    def __init__(self, volumes: VolumeSet, previous: types.SimpleNamespace) -> None:
        self.volumes = volumes
        self.o = previous
        self.fds = VolumeFds(previous, volumes.track)
        self._table = [(m.mount_path, m.mount_path + "/", m.volume) for m in volumes.mounts]
        self._heads = tuple(m.mount_path for m in volumes.mounts)

    # --- where is a path -------------------------------------------------------------------------
    def find(self, path: Any, dir_fd: Optional[int] = None) -> Found:
        """(volume, volume-relative path) for a path under a mount path, else None (the fast path)."""
        if type(path) is str:
            text = path
        elif isinstance(path, int) or path is None:
            return None
        else:
            try:
                text = os.fspath(path)
            except TypeError:
                return None  # the function called next raises its own TypeError
            if isinstance(text, bytes):
                text = os.fsdecode(text)
        if not text:
            return None  # "" names no file: the call next says so
        if not text.startswith("/"):
            if dir_fd is not None:
                return self._under_dir_fd(text, dir_fd)
            try:
                text = os.getcwd() + "/" + text
            except OSError:
                return None
        if "/." in text or "//" in text:
            trailing = text.endswith("/")
            text = "/" + posixpath.normpath(text).lstrip("/")
            if trailing and text != "/":
                text += "/"
        if not text.startswith(self._heads):
            return None
        for mount_path, prefix, vol in self._table:
            if text in (mount_path, prefix):
                return vol, ""
            if text.startswith(prefix):
                return vol, text[len(prefix):]
        return None  # /data/inbox is not under /data/in

    def _under_dir_fd(self, text: str, dir_fd: int) -> Found:
        token = self.fds.directory(dir_fd)
        if token is not None:
            return token.volume, f"{token.rel}/{text}" if token.rel else text
        if self.fds.file(dir_fd) is not None:
            raise oserror(errno.ENOTDIR, text)
        return None  # a real directory: volumes have none

    # --- open ------------------------------------------------------------------------------------
    def open(self, file: Any, mode: str = "r", buffering: int = -1, encoding: Optional[str] = None,
             errors: Optional[str] = None, newline: Optional[str] = None, closefd: bool = True,
             opener: Optional[Callable[[str, int], int]] = None) -> Any:
        if type(file) is int:
            raw = self.fds.file(file)
            if raw is not None:
                return self.fds.wrap(raw, mode, buffering, encoding, errors, newline, closefd)
            if self.fds.directory(file) is not None:
                raise oserror(errno.EISDIR, file)
            return self.o.open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        found = self.find(file)
        if found is None:
            return self.o.open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        vol, rel = found
        if opener is not None:  # as io.open does: the opener makes the descriptor (tempfile on Python 3.12)
            flags = _OPEN_FLAGS.get(next((c for c in mode if c in "rwax"), "r"), os.O_RDONLY)
            flags = (flags & ~_ACCMODE | os.O_RDWR) if "+" in mode else flags
            return self.open(opener(os.fspath(file), flags | os.O_CLOEXEC), mode, buffering, encoding, errors,
                             newline, closefd)
        try:
            handle = vol.open_file(rel, mode, buffering, encoding, errors, newline, closefd, name=os.fspath(file))
        except OSError as exc:
            raise _shown(exc, rel, file) from None
        return self.volumes.track(handle)

    def open_code(self, path: Any) -> Any:
        found = self.find(path)
        if found is None:
            return self.o.open_code(path)
        return self.open(path, "rb")

    def os_open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Optional[int] = None) -> int:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.os_open(path, flags, mode, dir_fd=dir_fd)
        vol, rel = found
        try:
            return self.fds.open(vol, rel, flags, path)
        except OSError as exc:
            raise _shown(exc, rel, path) from None

    # --- metadata -------------------------------------------------------------------------------
    def stat(self, path: Any, *, dir_fd: Optional[int] = None, follow_symlinks: bool = True) -> os.stat_result:
        if type(path) is int and self.fds.is_token(path):
            return self.fds.fstat(path)
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        return self._call(found, path, "stat")

    def lstat(self, path: Any, *, dir_fd: Optional[int] = None) -> os.stat_result:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.lstat(path, dir_fd=dir_fd)
        return self._call(found, path, "lstat")

    def access(self, path: Any, mode: int, *, dir_fd: Optional[int] = None, effective_ids: bool = False,
               follow_symlinks: bool = True) -> bool:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.access(path, mode, dir_fd=dir_fd, effective_ids=effective_ids,
                                 follow_symlinks=follow_symlinks)
        vol, rel = found
        if not vol.exists(rel) or (mode & os.W_OK and vol.read_only):
            return False
        return not mode & os.X_OK or bool(vol.stat(rel).st_mode & 0o111)

    def chmod(self, path: Any, mode: int, *, dir_fd: Optional[int] = None, follow_symlinks: bool = True) -> None:
        if type(path) is int and self.fds.is_token(path):
            return self.fds.fchmod(path, mode)
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.chmod(path, mode, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        return self._call(found, path, "chmod", mode)

    def utime(self, path: Any, times: Optional[Tuple[float, float]] = None, *, ns: Optional[Tuple[int, int]] = None,
              dir_fd: Optional[int] = None, follow_symlinks: bool = True) -> None:
        target: Found = None
        if type(path) is int:
            hit = self.fds.target(path)
            target = (hit[0], hit[1]) if hit is not None else None
        else:
            target = self.find(path, dir_fd)
        if target is None:
            kwargs: Dict[str, Any] = {"dir_fd": dir_fd, "follow_symlinks": follow_symlinks}
            if ns is not None:
                kwargs["ns"] = ns
            return self.o.utime(path, times, **kwargs)
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        if times is not None:
            ns = (int(times[0] * 1e9), int(times[1] * 1e9))
        return self._call(target, path, "utime", ns)

    def chown(self, path: Any, uid: int, gid: int, *, dir_fd: Optional[int] = None,
              follow_symlinks: bool = True) -> None:
        target = self._target_or_none(path, dir_fd)
        if target is None:
            return self.o.chown(path, uid, gid, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        self._call(target, path, "stat")  # ENOENT first, as the kernel checks
        if uid not in (-1, os.getuid()) or gid not in (-1, os.getgid()):
            raise oserror(errno.EPERM, path)  # volumes keep no owners: files belong to the engine's user
        return None

    def lchown(self, path: Any, uid: int, gid: int) -> None:
        if self.find(path) is None:
            return self.o.lchown(path, uid, gid)
        return self.chown(path, uid, gid)

    def statvfs(self, path: Any) -> Any:
        target = self._target_or_none(path, None)
        if target is None:
            return self.o.statvfs(path)
        self._call(target, path, "stat")
        return self.o.statvfs(target[0].root)  # the space of the host directory holding the volume

    def _target_or_none(self, path: Any, dir_fd: Optional[int]) -> Found:
        if type(path) is int:
            hit = self.fds.target(path)
            return (hit[0], hit[1]) if hit is not None else None
        return self.find(path, dir_fd)

    # --- directories ----------------------------------------------------------------------------
    def listdir(self, path: Any = None) -> List[Any]:
        if type(path) is int and self.fds.is_token(path):
            return self._dir_token(path).volume.listdir(self._dir_token(path).rel)
        found = self.find("." if path is None else path)
        if found is None:
            return self.o.listdir(path) if path is not None else self.o.listdir()
        names = self._call(found, path, "listdir")
        return [os.fsencode(n) for n in names] if isinstance(path, bytes) else names

    def scandir(self, path: Any = None) -> Any:
        if type(path) is int and self.fds.is_token(path):
            token = self._dir_token(path)
            return token.volume.scandir(token.rel, display="")
        found = self.find("." if path is None else path)
        if found is None:
            return self.o.scandir(path) if path is not None else self.o.scandir()
        vol, rel = found
        text = "." if path is None else os.fspath(path)
        shown = os.fsdecode(text) if isinstance(text, bytes) else text
        try:
            entries = vol.scandir(rel, display=shown)
        except OSError as exc:
            raise _shown(exc, rel, path) from None
        if not isinstance(text, bytes):
            return entries
        return VolumeScandir([VolumeDirEntry(vol, os.fsencode(e.name), os.fsencode(e.path),  # type: ignore[arg-type]
                                             e._rel, e._is_dir) for e in entries])

    def _dir_token(self, fd: int) -> Any:
        token = self.fds.directory(fd)
        if token is None:
            raise oserror(errno.ENOTDIR)
        return token

    def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: Optional[int] = None) -> None:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.mkdir(path, mode, dir_fd=dir_fd)
        return self._call(found, path, "mkdir", mode)

    def rmdir(self, path: Any, *, dir_fd: Optional[int] = None) -> None:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.rmdir(path, dir_fd=dir_fd)
        return self._call(found, path, "rmdir")

    def remove(self, path: Any, *, dir_fd: Optional[int] = None) -> None:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.remove(path, dir_fd=dir_fd)
        return self._call(found, path, "remove")

    def unlink(self, path: Any, *, dir_fd: Optional[int] = None) -> None:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.unlink(path, dir_fd=dir_fd)
        return self._call(found, path, "remove")

    def rename(self, src: Any, dst: Any, *, src_dir_fd: Optional[int] = None,
               dst_dir_fd: Optional[int] = None) -> None:
        return self._move("rename", src, dst, src_dir_fd, dst_dir_fd)

    def replace(self, src: Any, dst: Any, *, src_dir_fd: Optional[int] = None,
                dst_dir_fd: Optional[int] = None) -> None:
        return self._move("replace", src, dst, src_dir_fd, dst_dir_fd)

    def _move(self, name: str, src: Any, dst: Any, src_dir_fd: Optional[int], dst_dir_fd: Optional[int]) -> None:
        one, two = self.find(src, src_dir_fd), self.find(dst, dst_dir_fd)
        if one is None and two is None:
            return getattr(self.o, name)(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        if one is None or two is None or one[0] is not two[0]:
            raise oserror(errno.EXDEV, src, dst)  # another file system: shutil.move copies instead
        try:
            one[0].rename(one[1], two[1])
        except OSError as exc:
            raise _shown(exc, one[1], src, two[1], dst) from None
        return None

    def truncate(self, path: Any, length: int) -> None:
        if type(path) is int and self.fds.file(path) is not None:
            return self.fds.ftruncate(path, length)
        found = self.find(path)
        if found is None:
            return self.o.truncate(path, length)
        vol, rel = found
        try:
            with vol.open_file(rel, "r+b", buffering=0) as raw:
                raw.truncate(length)
        except OSError as exc:
            raise _shown(exc, rel, path) from None
        return None

    def chdir(self, path: Any) -> None:
        if type(path) is int and self.fds.is_token(path):
            raise refusal("fchdir")
        return self.o.chdir(path)  # a mount path that exists on the host works; relative paths then route

    # --- what volumes do not have: links, owners, special files, extended attributes ---------------
    def link(self, src: Any, dst: Any, *, src_dir_fd: Optional[int] = None, dst_dir_fd: Optional[int] = None,
             follow_symlinks: bool = True) -> None:
        one, two = self.find(src, src_dir_fd), self.find(dst, dst_dir_fd)
        if one is None and two is None:
            return self.o.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd,
                               follow_symlinks=follow_symlinks)
        if one is None or two is None or one[0] is not two[0]:
            raise oserror(errno.EXDEV, src, dst)
        raise oserror(errno.EPERM, src, dst)  # volumes hold no hard links

    def symlink(self, src: Any, dst: Any, target_is_directory: bool = False, *, dir_fd: Optional[int] = None) -> None:
        if self.find(dst, dir_fd) is None:
            return self.o.symlink(src, dst, target_is_directory, dir_fd=dir_fd)
        raise oserror(errno.EPERM, src, dst)  # volumes hold no symbolic links

    def readlink(self, path: Any, *, dir_fd: Optional[int] = None) -> Any:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o.readlink(path, dir_fd=dir_fd)
        self._call(found, path, "lstat")
        raise oserror(errno.EINVAL, path)  # it exists, and it is not a link

    def mkfifo(self, path: Any, mode: int = 0o666, *, dir_fd: Optional[int] = None) -> None:
        if self.find(path, dir_fd) is None:
            return self.o.mkfifo(path, mode, dir_fd=dir_fd)
        raise oserror(errno.EPERM, path)

    def mknod(self, path: Any, mode: int = 0o600, device: int = 0, *, dir_fd: Optional[int] = None) -> None:
        if self.find(path, dir_fd) is None:
            return self.o.mknod(path, mode, device, dir_fd=dir_fd)
        raise oserror(errno.EPERM, path)

    def listxattr(self, path: Any = None, *, follow_symlinks: bool = True) -> List[str]:
        target = self._target_or_none(path, None) if path is not None else None
        if target is None:
            return self.o.listxattr(path, follow_symlinks=follow_symlinks)
        self._call(target, path, "stat")
        return []

    def getxattr(self, path: Any, attribute: Any, *, follow_symlinks: bool = True) -> bytes:
        target = self._target_or_none(path, None)
        if target is None:
            return self.o.getxattr(path, attribute, follow_symlinks=follow_symlinks)
        self._call(target, path, "stat")
        raise oserror(errno.ENODATA, path)

    def setxattr(self, path: Any, attribute: Any, value: Any, flags: int = 0, *,
                 follow_symlinks: bool = True) -> None:
        if self._target_or_none(path, None) is None:
            return self.o.setxattr(path, attribute, value, flags, follow_symlinks=follow_symlinks)
        raise oserror(errno.EOPNOTSUPP, path)

    def removexattr(self, path: Any, attribute: Any, *, follow_symlinks: bool = True) -> None:
        target = self._target_or_none(path, None)
        if target is None:
            return self.o.removexattr(path, attribute, follow_symlinks=follow_symlinks)
        self._call(target, path, "stat")
        raise oserror(errno.ENODATA, path)

    def dup2(self, fd: int, fd2: int, inheritable: bool = True) -> int:
        if self.fds.is_token(fd) or self.fds.is_token(fd2):
            raise refusal("dup2")  # a token's number must keep meaning its volume file
        return self.o.dup2(fd, fd2, inheritable)

    # --- what bypasses the wrappers ----------------------------------------------------------------
    def audit(self, event: str, args: Tuple[Any, ...]) -> None:
        """Audit hook: refuse what reached a mount path without the wrappers (``io.FileIO(path)``,
        ``_io.open``, ``sqlite3.connect``), since it would touch the host's directory there, in clear."""
        if event == "open" or event == "sqlite3.connect":
            path = args[0] if args else None
            if path is not None and not isinstance(path, int) and self.find(path) is not None:
                what = "sqlite3 opens its files in C" if event == "sqlite3.connect" else "this call bypasses open()"
                raise PermissionError(errno.EACCES, f"{what}, out of reach of the encrypted volume mounted here; "
                                      "use open() (for sqlite3: serialize() and deserialize() through a volume "
                                      "file)", path)

    # --- helpers --------------------------------------------------------------------------------
    def _call(self, found: Tuple[Volume, str], shown: Any, method: str, *args: Any) -> Any:
        vol, rel = found
        try:
            return getattr(vol, method)(rel, *args)
        except OSError as exc:
            raise _shown(exc, rel, shown) from None

    def functions(self) -> Dict[str, Any]:
        """name -> wrapper, for every os function this shield replaces (present on this platform)."""
        table: Dict[str, Any] = {name: getattr(self, name) for name in PATH_CALLS + ("dup2",)}
        table.update({name: getattr(self.fds, name) for name in FD_CALLS})
        table.update({name: self.fds.refuse(name) for name in REFUSED_FD_CALLS})
        table["open"] = self.os_open
        return {name: func for name, func in table.items() if hasattr(os, name)}
