"""Reading and writing the pseudo-files of TEE interfaces (Gramine's /dev/attestation, configfs-tsm).

Each value is one `open`, one or more `read`/`write` calls, one `close`: the kernel and Gramine act on
the close of a written attribute and produce a read attribute when it is opened. Writes never create
a file (no O_CREAT), so a missing attribute is an error, not a new regular file. Paths are rooted at
a configurable directory so tests can use a tree of their own. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import errno
import os

from citadel.attest.collect.errors import CollectionError
from citadel.engine.fdio import read_bounded

MAX_BLOB = 1 << 20  # outblob/auxblob/quote: a few KiB in practice; refuse anything absurd


def under(root: str, path: str) -> str:
    """`path` (absolute) inside `root`; the root "/" leaves it as it is."""
    return path if root in ("", "/") else os.path.join(root, path.lstrip("/"))


def _error(action: str, path: str, exc: OSError, remedy: str) -> CollectionError:
    reason = "it does not exist" if exc.errno == errno.ENOENT else (exc.strerror or str(exc))
    return CollectionError(f"cannot {action} {path}: {reason}", remedy)


def read_blob(path: str, remedy: str, limit: int = MAX_BLOB) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _error("open", path, exc, remedy) from None
    try:
        data = read_bounded(fd, limit)
    except OSError as exc:
        raise _error("read", path, exc, remedy) from None
    finally:
        os.close(fd)
    if data is None:
        raise CollectionError(f"{path} holds more than {limit} bytes", remedy)
    return data


def read_text(path: str, remedy: str) -> str:
    return read_blob(path, remedy, limit=4096).decode("ascii", errors="replace").strip()


def write_blob(path: str, data: bytes, remedy: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _error("open", path, exc, remedy) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _error("write", path, exc, remedy) from None
    finally:
        try:
            os.close(fd)  # configfs commits a binary attribute on close, and may refuse it there
        except OSError as exc:
            raise _error("write", path, exc, remedy) from None
