"""File objects for volume files: a raw file with FileIO's semantics under the standard io layers.

Engine-safe. `open_file` follows `io.open` step by step (mode checks, buffering, text layer) so
every mode behaves as for a plain file: read, write, append, exclusive create, "+", binary and
text, seek/tell/truncate. Buffered binary files are `VolumeFile`, an `io.BufferedRandom`
subclass for every mode, so libraries that take a fast path for real OS files (numpy's
``tofile``/``fromfile``) see an ordinary Python file object and use its methods instead.

``fileno()`` returns a token: an O_PATH descriptor of /dev/null (reads, writes and directory-relative
calls on it fail loudly; it is never data). `file_for_fd` maps a token back to its file so the engine's file
shield can route ``os.fsync(fd)``, ``os.fstat(fd)`` and ``os.close(fd)``; ``os.fsync`` of a volume
file commits the volume.
"""

from __future__ import annotations

import errno
import io
import os
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from citadel.volume.chunks import FileNode

if TYPE_CHECKING:
    from citadel.volume.volume import Volume

_TOKENS: Dict[int, weakref.ref[VolumeRawFile]] = {}
_TOKENS_LOCK = threading.Lock()


def file_for_fd(fd: int) -> Optional[VolumeRawFile]:
    """The open volume file whose ``fileno()`` returned ``fd``, or None."""
    ref = _TOKENS.get(fd)
    return ref() if ref is not None else None


class VolumeRawFile(io.RawIOBase):
    """Unbuffered access to one volume file, with `io.FileIO`'s semantics."""

    def __init__(self, volume: Volume, node: FileNode, name: Any, *, readable: bool, writable: bool,
                 append: bool, created: bool) -> None:
        super().__init__()
        self._vol = volume
        self._node = node
        self.name = name
        self._r, self._w, self._append = readable, writable, append
        self.mode = _raw_mode(readable, writable, append, created)
        self._pos = node.size if append else 0
        self._token: Optional[int] = None
        self._building = True  # the buffered layer checks readable()/writable() once, while being built
        if writable:
            volume.writers += 1

    # --- capabilities -------------------------------------------------------------------------
    def readable(self) -> bool:
        self._checkClosed()
        return self._r or self._building

    def writable(self) -> bool:
        self._checkClosed()
        return self._w or self._building

    def seekable(self) -> bool:
        self._checkClosed()
        return True

    def isatty(self) -> bool:
        self._checkClosed()
        return False

    @property
    def closefd(self) -> bool:
        return True

    def fileno(self) -> int:
        self._checkClosed()
        if self._token is None:
            # A descriptor that can do nothing by itself (O_PATH of /dev/null: no read, no write,
            # not a directory for *at() calls), so code that bypasses the shield fails loudly
            # instead of touching the host through it.
            self._token = os.open(os.devnull, getattr(os, "O_PATH", os.O_RDONLY) | os.O_CLOEXEC)
            with _TOKENS_LOCK:
                _TOKENS[self._token] = weakref.ref(self)
        return self._token

    # --- data ---------------------------------------------------------------------------------
    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        if not self._r:
            raise io.UnsupportedOperation("File not open for reading")
        view = memoryview(buffer).cast("B")
        vol = self._vol
        with vol.lock:
            vol.usable()
            n = vol.chunker.read_into(self._node, self._pos, view)
            self._pos += n
            return n

    def readall(self) -> bytes:
        self._checkClosed()
        if not self._r:
            raise io.UnsupportedOperation("File not open for reading")
        with self._vol.lock:
            buf = bytearray(max(0, self._node.size - self._pos))
            n = self.readinto(buf)
            return bytes(buf[:n]) if n != len(buf) else bytes(buf)

    def write(self, data: Any) -> int:
        self._checkClosed()
        if not self._w:
            raise io.UnsupportedOperation("File not open for writing")
        view = memoryview(data).cast("B")
        vol = self._vol
        with vol.lock:
            vol.usable(write=True)
            if self._append:
                self._pos = self._node.size
            n = vol.chunker.write(self._node, self._pos, view)
            self._pos += n
            return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        offset = offset.__index__()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._node.size + offset
        else:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if pos < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def truncate(self, size: Optional[int] = None) -> int:
        self._checkClosed()
        if not self._w:
            raise io.UnsupportedOperation("File not open for writing")
        size = self._pos if size is None else size.__index__()
        if size < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        vol = self._vol
        with vol.lock:
            vol.usable(write=True)
            vol.chunker.truncate(self._node, size)
        return size

    def stat(self) -> os.stat_result:
        """What ``os.fstat`` of this file reports (plaintext size)."""
        return self._vol.stat_node(self._node)

    def fsync(self) -> None:
        """``os.fsync``: commit the volume, so everything written so far survives a crash."""
        self._checkClosed()
        self._vol.commit()

    # --- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            self._release()

    def _release(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            with _TOKENS_LOCK:
                _TOKENS.pop(token, None)
            os.close(token)
        if self._w:
            self._vol.writer_closed()

    def __repr__(self) -> str:
        return f"<citadel.volume file name={self.name!r} mode={self.mode!r}>"


class VolumeFile(io.BufferedRandom):
    """A buffered volume file (every binary mode); reads on a write-only file fail in the raw file."""


class VolumeWriteOnlyFile(VolumeFile):
    """A buffered volume file opened for writing only: every read fails at once, as for a plain file."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise io.UnsupportedOperation("read")

    read = read1 = readinto = readinto1 = peek = readline = readlines = _refuse


class VolumeReadOnlyFile(VolumeFile):
    """A buffered volume file opened for reading only: writes fail at once, as for a plain file."""

    def write(self, data: Any) -> int:
        raise io.UnsupportedOperation("write")


def _raw_mode(readable: bool, writable: bool, append: bool, created: bool) -> str:
    if created:
        return "xb+" if readable else "xb"
    if append:
        return "ab+" if readable else "ab"
    if readable and writable:
        return "rb+"
    return "rb" if readable else "wb"


def parse_mode(mode: str, buffering: int, encoding: Optional[str], errors: Optional[str],
               newline: Optional[str]) -> Tuple[bool, bool, bool, bool, bool, bool]:
    """io.open's checks; returns (creating, reading, writing, appending, updating, binary)."""
    if not isinstance(mode, str):
        raise TypeError(f"invalid mode: {mode!r}")
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: {mode!r}")
    creating, reading, writing, appending = "x" in modes, "r" in modes, "w" in modes, "a" in modes
    updating, text, binary = "+" in modes, "t" in modes, "b" in modes
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if not (creating or reading or writing or appending):
        raise ValueError("Must have exactly one of create/read/write/append mode and at most one plus")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        warnings.warn("line buffering (buffering=1) isn't supported in binary mode, the default buffer "
                      "size will be used", RuntimeWarning, 3)
    return creating, reading, writing, appending, updating, binary


def wrap(raw: VolumeRawFile, mode: str, buffering: int, encoding: Optional[str], errors: Optional[str],
         newline: Optional[str], binary: bool, chunk_size: int) -> Any:
    """The io layers over a raw file, as io.open builds them."""
    line_buffering = False
    if buffering == 1:
        buffering, line_buffering = -1, not binary
    if buffering < 0:
        buffering = chunk_size
    try:
        if buffering == 0:
            if not binary:
                raise ValueError("can't have unbuffered text I/O")
            return raw
        cls = (VolumeFile if raw._r else VolumeWriteOnlyFile) if raw._w else VolumeReadOnlyFile
        buffer = cls(raw, buffering)
        raw._building = False  # from here on readable()/writable() tell the truth (TextIOWrapper asks)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline, line_buffering)
        text.mode = mode  # type: ignore[misc]
        return text
    except BaseException:
        raw.close()
        raise
    finally:
        raw._building = False
