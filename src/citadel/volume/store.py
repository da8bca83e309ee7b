"""The host directory of a volume: its layout, durable writes, and the locks between sessions.

Engine-safe (stdlib only). Everything here is on the untrusted side: the host can change any of
it. Locks only coordinate honest processes (so a crash or a second engine on the same host never
tears a state); security comes from the manifest's authentication and the tag store's
compare-and-swap, never from these files.

Layout of a volume directory (docs/volumes.md):
  manifest          the current state (a CITV container)
  segments/<id>     append-only chunk records, one writer session per segment (32 hex digits)
  pending/<tag>     a state written durably before the tag store accepted it
  conflicts/<tag>   a state the tag store refused (another engine won); kept for the owner
  manifest.tmp-*    a state being written (local mode); debris after a crash
  lock              every session holds a shared flock; clean-up needs it exclusively
  commit.lock       commits on this host take it exclusively
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager, suppress
from typing import Iterator, List, Optional

from citadel.volume.errors import VolumeError

MANIFEST = "manifest"
SEGMENTS = "segments"
PENDING = "pending"
CONFLICTS = "conflicts"
LOCK = "lock"
COMMIT_LOCK = "commit.lock"
TMP_PREFIX = "manifest.tmp-"
FILE_MODE = 0o600


def fsync_dir(path: str) -> None:
    """Make a directory's entries (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str, data: bytes) -> None:
    """Create ``path`` (it must not exist), write ``data`` and fsync it; the caller fsyncs the directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _unlink_quietly(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def unlink_quietly(path: str) -> None:
    _unlink_quietly(path)


def list_names(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def make_layout(root: str) -> None:
    """Create the directories of a new volume (the manifest comes later, atomically)."""
    os.makedirs(root, exist_ok=True)
    for sub in (SEGMENTS, PENDING, CONFLICTS):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    fsync_dir(root)


def ensure_subdirs(root: str) -> None:
    """Recreate missing sub-directories of an existing volume (they may be empty and not copied)."""
    for sub in (SEGMENTS, PENDING, CONFLICTS):
        path = os.path.join(root, sub)
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            fsync_dir(root)


class SessionLock:
    """A shared flock on ``lock`` held for a session's life; clean-up upgrades it when alone.

    Sessions on other hosts (a shared network file system) may not see it; that only disables
    clean-up races on this host, never the tag store's compare-and-swap.
    """

    def __init__(self, root: str, writable: bool) -> None:
        self.fd: Optional[int] = None
        path = os.path.join(root, LOCK)
        try:
            self.fd = os.open(path, (os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY) | os.O_CLOEXEC,
                              FILE_MODE)
        except OSError as exc:
            if writable or exc.errno not in (errno.ENOENT, errno.EACCES, errno.EROFS):
                raise VolumeError(f"cannot use the volume's lock file {path!r}: {exc.strerror}",
                                  "check that the volume directory is writable") from None
            return  # a read-only copy of a volume: nobody can change it under us
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def try_exclusive(self) -> bool:
        """Become the only session (non-blocking). On failure the shared lock is held again."""
        if self.fd is None:
            return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            fcntl.flock(self.fd, fcntl.LOCK_SH)  # a failed conversion drops the old lock (flock(2))
            return False

    def shared(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextmanager
def commit_lock(root: str) -> Iterator[None]:
    """Serialize commits on this host. Opened anew each time so a forked child never shares it."""
    fd = os.open(os.path.join(root, COMMIT_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
