"""Anonymous, sealed in-memory files (Linux memfd) for plaintext that must never touch a disk.

Decrypted shared libraries and sealed data files are served from a memfd: it lives in RAM, has
no name in any file system (only ``/proc/self/fd/N``), and once sealed nobody, including this
process, can change, grow or shrink it. :func:`memfd_from_image` streams a sealed file of an image
into one, verifying it chunk by chunk. Engine-safe: stdlib (+ `cryptography`, imported only when
an image file is read), Python 3.9.
"""

from __future__ import annotations

import fcntl
import os
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # importing this module must not need `cryptography` (the trusted base loads it)
    from citadel.seal.image import SealedImage

# Fallbacks for Pythons whose fcntl lacks the sealing constants (values from <linux/fcntl.h>).
_F_LINUX_SPECIFIC_BASE = 1024
F_ADD_SEALS: int = getattr(fcntl, "F_ADD_SEALS", _F_LINUX_SPECIFIC_BASE + 9)
F_GET_SEALS: int = getattr(fcntl, "F_GET_SEALS", _F_LINUX_SPECIFIC_BASE + 10)
F_SEAL_SEAL: int = getattr(fcntl, "F_SEAL_SEAL", 0x0001)
F_SEAL_SHRINK: int = getattr(fcntl, "F_SEAL_SHRINK", 0x0002)
F_SEAL_GROW: int = getattr(fcntl, "F_SEAL_GROW", 0x0004)
F_SEAL_WRITE: int = getattr(fcntl, "F_SEAL_WRITE", 0x0008)
MFD_CLOEXEC: int = getattr(os, "MFD_CLOEXEC", 0x0001)
MFD_ALLOW_SEALING: int = getattr(os, "MFD_ALLOW_SEALING", 0x0002)

ALL_SEALS = F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL
_WRITE_BLOCK = 1 << 20  # write and hash in pieces of 1 MiB


def memfd_from_bytes(name: str, data: bytes) -> int:
    """A close-on-exec memfd holding exactly ``data``, sealed against any change; returns the fd.

    ``name`` only labels the file in /proc/self/maps ("/memfd:NAME (deleted)"); it need not be
    unique. The caller owns the descriptor.
    """
    return _sealed_memfd(name, (data,))


def _sealed_memfd(name: str, pieces: Iterable[bytes]) -> int:
    """Write ``pieces`` into a new memfd, seal it against any change, rewind it; close it on failure."""
    fd = _memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)
    try:
        for piece in pieces:
            _write_all(fd, piece)
        fcntl.fcntl(fd, F_ADD_SEALS, ALL_SEALS)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _memfd_create(name: str, flags: int) -> int:
    """os.memfd_create, or the libc call where this Python lacks it (some PyPy builds)."""
    create = getattr(os, "memfd_create", None)
    if create is not None:
        return int(create(name, flags))
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.memfd_create(os.fsencode(name), ctypes.c_uint(flags)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return fd


def fd_path(fd: int) -> str:
    """The path through which this process (and only it, and its forks) can reopen ``fd``."""
    return f"/proc/self/fd/{fd}"


def memfd_from_image(image: SealedImage, relpath: str) -> int:
    """A sealed memfd holding the verified plaintext of the image's file ``relpath``; returns the fd.

    Streams ``SealedImage.iter_verified`` (the one implementation of the image's checks) into the
    memfd, so a large library never exists as one big bytes object. Nothing is returned unless
    the whole file verified; on any failure the memfd is closed.
    """
    return _sealed_memfd(relpath.rpartition("/")[2], image.iter_verified(relpath))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.write(fd, view[written:])
