"""Image key files: 64 hex digits and a newline, mode 0600 (owner side).

Writing is two-step so that sealing stays all-or-nothing: `stage_key_file` writes the key to a
private temporary file beside its destination before the image is committed, and
`StagedKey.commit` moves it into place afterwards (without replacing an existing file unless
asked). A failed seal discards the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from citadel.errors import UsageError, WrongKey
from citadel.seal.format import parse_key
from citadel.seal.place import OutputError, resolve_output

KEY_FILE_MODE = 0o600
MAX_KEY_FILE = 4096


def read_key_file(path: str) -> bytes:
    """The image key in a key file (as written by `citadel seal --key-out`)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_KEY_FILE)
    except FileNotFoundError:
        raise UsageError(
            f"the key file {path!r} does not exist", "pass the file written by `citadel seal --key-out`"
        ) from None
    except IsADirectoryError:
        raise UsageError(
            f"the key file {path!r} is a directory", "pass the file written by `citadel seal --key-out`"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read the key file {path!r}: {exc.strerror}", "check its path and permissions"
        ) from None
    try:
        return parse_key(raw.decode("ascii"))
    except (UnicodeDecodeError, WrongKey):
        raise WrongKey(
            f"the key file {path!r} does not hold an image key (64 hex digits)",
            "pass the file written by `citadel seal --key-out`",
        ) from None


def key_file_is_shared(path: str) -> bool:
    """True when group or others may read the key file (worth a warning: it is a secret)."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def check_key_destination(
    path: str, *, force: bool, keep_out_of: Sequence[Tuple[str, str]] = (), same_as: Optional[str] = None
) -> Optional[str]:
    """Resolve ``--key-out`` and refuse it early; None when it is the key file being reused.

    ``keep_out_of`` lists (directory, name) pairs the key must not be written into (SRC would seal
    it into the next image; IMAGE would fail its own file check).
    """
    dest = resolve_output(path)
    if same_as is not None and os.path.exists(dest) and os.path.samefile(dest, same_as):
        return None
    parent = os.path.dirname(dest)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UsageError(f"{parent!r} (where the key file would go) is a file, not a directory",
                         "choose a path inside a directory")
    if not os.path.isdir(parent):
        raise UsageError(
            f"the directory {parent!r} for the key file does not exist", f"create it first: mkdir -p {parent}"
        )
    for directory, name in keep_out_of:
        if dest == directory or dest.startswith(directory.rstrip(os.sep) + os.sep):
            raise UsageError(
                f"the key file {path!r} would be inside {name} {directory!r}",
                "keep the key outside the sealed tree and the image, e.g. --key-out ../app.key",
            )
    if os.path.isdir(dest):
        raise UsageError(f"the key file {path!r} is a directory", "name a file, e.g. --key-out app.key")
    if os.path.lexists(dest) and not force:
        raise UsageError(
            f"the key file {path!r} already exists", "pass --force to replace it, or choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write the key file in {parent!r} (permission denied)",
            "choose a directory you can write to for --key-out",
        )
    return dest


@dataclass
class StagedKey:
    """A key written to a private temporary file, waiting to be moved to its destination."""

    temp: str
    dest: str
    replace: bool

    def commit(self) -> None:
        try:
            if self.replace:
                os.replace(self.temp, self.dest)
                return
            os.link(self.temp, self.dest)  # fails if the destination appeared meanwhile
            os.unlink(self.temp)
        except OSError as exc:
            raise OutputError(
                f"the image was written, but the key file {self.dest!r} was not ({exc.strerror}); "
                f"the key is in {self.temp!r}",
                f"move it into place yourself: mv {self.temp} {self.dest}",
            ) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def stage_key_file(dest: str, key: bytes, *, replace: bool) -> StagedKey:
    """Write ``key`` as 64 hex digits + newline to a 0600 temporary file beside ``dest``."""
    parent, base = os.path.split(dest)
    temp = os.path.join(parent, f".{base}.tmp-{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temp, flags, KEY_FILE_MODE)
    except OSError as exc:
        raise OutputError(
            f"cannot write the key file in {parent!r}: {exc.strerror}",
            "choose a directory you can write to for --key-out",
        ) from None
    try:
        os.fchmod(fd, KEY_FILE_MODE)  # exactly 0600 whatever the umask
        os.write(fd, (key.hex() + "\n").encode("ascii"))
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(temp)
        raise OutputError(
            f"cannot write the key file {dest!r}: {exc.strerror}", "check free space and permissions"
        ) from None
    os.close(fd)
    return StagedKey(temp, dest, replace)
