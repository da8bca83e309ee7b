"""Injected files: the files a session's policy hands the program, served from memory, read-only.

The CAS releases each injected file as (absolute path, bytes). The engine writes each into a
sealed memfd (RAM only, no name in any file system, unchangeable once sealed) and installs this
shield on top of the file shield: a path that is exactly an injected file's path (made absolute
against the working directory and normalised, without following the host's symbolic links) is
served from its memfd; every other path goes on to the functions that were in place before (the
volumes' and the image's shields, or the originals). So the plaintext never touches the host's
disk, and the path need not exist there.

Reading works like a regular file (``open`` in any read mode, ``os.open`` read-only, ``fileno``,
``seek``, ``mmap``); ``os.stat``/``lstat`` report a regular read-only file (mode 0444) of the
content's size. Writing, creating, truncating, removing, renaming, linking over, changing the
mode or times of, or making a directory at an injected path raises `InjectedFileReadOnly` (a
PermissionError). An audit hook refuses what reaches an injected path without the wrappers
(``io.FileIO(path)``), so nothing ever opens the host's file of that name instead.
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import posixpath
import stat as stat_module
import sys

from citadel.engine.fileshield import STAT_EXTRA, original, replace_functions, set_name
from citadel.engine.memfd import fd_path, memfd_from_bytes
from citadel.errors import SealedFileReadOnly, UsageError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

#: directories no injected file may be put in (the engine itself reads /proc/self there)
SYSTEM_DIRS = ("/proc", "/dev", "/sys")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
#: os functions that would change the file at their first path argument
_CHANGING = ("remove", "unlink", "rmdir", "mkdir", "truncate", "chmod", "chown", "lchown", "utime", "mkfifo",
             "mknod", "setxattr", "removexattr")
#: os functions with two paths, either of which must not be an injected file
_TWO_PATHS = ("rename", "replace", "link", "symlink")


class InjectedFileReadOnly(SealedFileReadOnly, PermissionError):
    """A program tried to change, create or remove a file the session's policy injected."""

    def __init__(self, path: Any) -> None:
        shown = os.fsdecode(os.fspath(path)) if not isinstance(path, int) else str(path)
        cause = "files the session's policy injects are read-only (they live only in the engine's memory)"
        remedy = "write to a volume or another path; change an injected file by updating the session's policy"
        PermissionError.__init__(self, errno.EACCES, f"{cause}; {remedy}", shown)
        self.cause, self.remedy = f"{cause}: {shown!r}", remedy


def check_paths(paths: Iterable[str], mounts: Iterable[str]) -> None:
    """Refuse injected paths that are not absolute, lie in a system directory or inside a volume."""
    mount_list = [m for m in mounts if m]
    for path in paths:
        if not path.startswith("/") or "\0" in path or posixpath.normpath(path) != path or path == "/":
            raise UsageError(f"the session injects a file at {path!r}, which is not a normalised absolute path",
                             "ask the session's owner to fix inject_files (e.g. /etc/app/app.conf)")
        for system in SYSTEM_DIRS:
            if path == system or path.startswith(system + "/"):
                raise UsageError(f"the session injects a file at {path}, inside {system}",
                                 "ask the session's owner to inject it elsewhere, e.g. under /etc/app")
        for mount in mount_list:
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                raise UsageError(f"the session injects a file at {path}, inside the volume mounted at {mount}",
                                 "ask the session's owner to inject it outside the volume's mount path")


class InjectedFiles:
    """The injected files of this run: path -> sealed memfd, and the wrappers that serve them."""

    def __init__(self, files: Mapping[str, bytes], previous: Dict[str, Any]) -> None:
        self._fds: Dict[str, int] = {}
        self._sizes: Dict[str, int] = {}
        try:
            for path, data in files.items():
                self._fds[path] = memfd_from_bytes(posixpath.basename(path), data)
                self._sizes[path] = len(data)
        except BaseException:
            self.close()
            raise
        self.o = previous  # name -> the function in place before this shield

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                continue
        self._fds.clear()

    @property
    def paths(self) -> Tuple[str, ...]:
        return tuple(sorted(self._fds))

    # --- where is a path ------------------------------------------------------------------------
    def find(self, path: Any, dir_fd: Optional[int] = None) -> Optional[str]:
        """The injected path ``path`` names (lexically, against the working directory), else None."""
        if isinstance(path, int) or path is None:
            return None
        try:
            text = os.fspath(path)
        except TypeError:
            return None  # the function called next raises its own TypeError
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if not text:
            return None
        if not text.startswith("/"):
            try:
                base = os.readlink(fd_path(dir_fd)) if dir_fd is not None else os.getcwd()
            except OSError:
                return None
            text = base + "/" + text
        text = "/" + posixpath.normpath(text).lstrip("/")
        return text if text in self._fds else None

    def _refuse_if_injected(self, path: Any, dir_fd: Optional[int] = None) -> None:
        if self.find(path, dir_fd) is not None:
            raise InjectedFileReadOnly(path)

    # --- reading --------------------------------------------------------------------------------
    def open(self, file: Any, mode: str = "r", buffering: int = -1, encoding: Optional[str] = None,
             errors: Optional[str] = None, newline: Optional[str] = None, closefd: bool = True,
             opener: Optional[Callable[[str, int], int]] = None) -> Any:
        found = self.find(file)
        if found is None:
            return self.o["open"](file, mode, buffering, encoding, errors, newline, closefd, opener)
        if any(c in mode for c in "wax+"):
            raise InjectedFileReadOnly(file)
        handle = original.open(fd_path(self._fds[found]), mode, buffering, encoding, errors, newline)
        set_name(handle, file)
        return handle

    def open_code(self, path: Any) -> Any:
        if self.find(path) is None:
            return self.o["open_code"](path)
        return self.open(path, "rb")

    def os_open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Optional[int] = None) -> int:
        found = self.find(path, dir_fd)
        if found is None:
            return int(self.o["os_open"](path, flags, mode, dir_fd=dir_fd))
        if flags & _WRITE_FLAGS:
            raise InjectedFileReadOnly(path)
        if flags & getattr(os, "O_DIRECTORY", 0):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return int(original.os_open(fd_path(self._fds[found]), (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC))

    def stat(self, path: Any, *, dir_fd: Optional[int] = None, follow_symlinks: bool = True) -> os.stat_result:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o["stat"](path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        return self._stat(found)

    def lstat(self, path: Any, *, dir_fd: Optional[int] = None) -> os.stat_result:
        found = self.find(path, dir_fd)
        if found is None:
            return self.o["lstat"](path, dir_fd=dir_fd)
        return self._stat(found)

    def _stat(self, found: str) -> os.stat_result:
        result = os.fstat(self._fds[found])
        fields = list(result)
        fields[stat_module.ST_MODE] = stat_module.S_IFREG | 0o444
        fields[stat_module.ST_SIZE] = self._sizes[found]
        fields[stat_module.ST_NLINK] = 1
        extra = {name: getattr(result, name) for name in STAT_EXTRA if hasattr(result, name)}
        return os.stat_result(fields, extra)

    def access(self, path: Any, mode: int, *, dir_fd: Optional[int] = None, effective_ids: bool = False,
               follow_symlinks: bool = True) -> bool:
        if self.find(path, dir_fd) is None:
            return bool(self.o["access"](path, mode, dir_fd=dir_fd, effective_ids=effective_ids,
                                         follow_symlinks=follow_symlinks))
        return not mode & (os.W_OK | os.X_OK)

    def listdir(self, path: Any = None) -> Any:
        if path is not None and self.find(path) is not None:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return self.o["listdir"](path) if path is not None else self.o["listdir"]()

    def readlink(self, path: Any, *, dir_fd: Optional[int] = None) -> Any:
        if self.find(path, dir_fd) is not None:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)  # it exists, and it is not a link
        return self.o["readlink"](path, dir_fd=dir_fd)

    # --- changing -------------------------------------------------------------------------------
    def refusing(self, name: str) -> Callable[..., Any]:
        """A wrapper for os.<name> that refuses to change an injected file."""
        func = self.o[name]
        two = name in _TWO_PATHS

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if two:
                if name != "symlink":  # a symlink's source is only text
                    self._refuse_if_injected(args[0], kwargs.get("src_dir_fd"))
                if len(args) > 1:
                    self._refuse_if_injected(args[1], kwargs.get("dst_dir_fd", kwargs.get("dir_fd")))
            elif args:
                self._refuse_if_injected(args[0], kwargs.get("dir_fd"))
            return func(*args, **kwargs)

        guarded.__name__ = guarded.__qualname__ = name
        guarded.__doc__ = getattr(func, "__doc__", None)
        return guarded

    def audit(self, event: str, args: Tuple[Any, ...]) -> None:
        """Refuse what reaches an injected path without the wrappers (``io.FileIO(path)``, ``_io.open``)."""
        if event == "open" and args and self.find(args[0]) is not None:
            raise PermissionError(errno.EACCES, "this call bypasses open(); the file the session injects here "
                                  "lives only in the engine's memory: use open()", args[0])

    def functions(self) -> Dict[str, Any]:
        """name -> wrapper, in fileshield's naming ("open", "open_code", "os_open", os.<name>)."""
        table: Dict[str, Any] = {"open": self.open, "open_code": self.open_code, "os_open": self.os_open,
                                 "stat": self.stat, "lstat": self.lstat, "access": self.access,
                                 "listdir": self.listdir, "readlink": self.readlink}
        for name in _CHANGING + _TWO_PATHS:
            if name in self.o:
                table[name] = self.refusing(name)
        return table


def current_functions() -> Dict[str, Any]:
    """The functions in place now (other shields' or the originals), in fileshield's naming."""
    names = ("stat", "lstat", "access", "listdir", "readlink") + _CHANGING + _TWO_PATHS
    found: Dict[str, Any] = {name: getattr(os, name) for name in names if hasattr(os, name)}
    found.update({"open": builtins.open, "open_code": io.open_code, "os_open": os.open})
    return found


_installed: Optional[InjectedFiles] = None


def install(files: Mapping[str, bytes], mounts: Iterable[str] = ()) -> Optional[InjectedFiles]:
    """Serve ``files`` (absolute path -> content) from memory, read-only; once per process."""
    global _installed
    if not files:
        return None
    if _installed is not None:
        raise UsageError("injected files are already installed in this engine", "start a new engine for each run")
    check_paths(files, mounts)
    shield = InjectedFiles(files, current_functions())
    replace_functions(shield.functions())
    sys.addaudithook(shield.audit)
    _installed = shield
    return shield
