"""Where a new image goes: refuse outputs that would lose data, stage beside them, commit atomically.

The image is built in a hidden staging directory next to IMAGE (same file system) and renamed
into place only when complete, so a failure or an interrupt never leaves a half-written image.
An existing IMAGE is replaced only when asked (``force``) and only when it is itself a sealed
image (or an empty directory): sealing never deletes a directory of other files.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from typing import Sequence

from citadel.errors import CitadelError, UsageError
from citadel.seal.format import MANIFEST_PATH
from citadel.seal.regions import matches


class OutputError(CitadelError):
    """The image (or the key file) cannot be written where it was asked to go."""


@dataclass(frozen=True)
class OutputTarget:
    path: str  # absolute, parent resolved
    replace: bool  # an existing image will be replaced on commit


def is_image_dir(path: str) -> bool:
    """A directory written by `citadel seal` (it holds a manifest)."""
    return os.path.isfile(os.path.join(path, *MANIFEST_PATH.split("/")))


def resolve_output(out: str) -> str:
    """Absolute path with its parent resolved (the last component is kept as given)."""
    absolute = os.path.abspath(out)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def check_output(
    out: str, src: str, python_paths: Sequence[str], skip: Sequence[str], *, force: bool
) -> OutputTarget:
    """Refuse an IMAGE path that would seal itself, destroy its input, or replace other data."""
    path = resolve_output(out)
    parent = os.path.dirname(path)
    if not os.path.basename(path):
        raise UsageError(f"IMAGE {out!r} is not a usable path", "name a new directory, e.g. -o app.img")
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UsageError(f"{parent!r} (where IMAGE would go) is a file, not a directory",
                         "choose a path inside a directory")
    if not os.path.isdir(parent):
        raise UsageError(
            f"the directory {parent!r} for IMAGE does not exist", f"create it first: mkdir -p {parent}"
        )
    for tree, name in [(src, "SRC")] + [(p, "the python path") for p in python_paths]:
        if path == tree or path.startswith(tree + os.sep):
            rel = os.path.relpath(path, tree).replace(os.sep, "/")
            if name == "SRC" and rel != "." and any(matches(p, rel) for p in skip):
                continue  # inside SRC but left out with --skip
            raise UsageError(
                f"IMAGE {out!r} is inside {name} {tree!r}: the image would seal itself",
                "write the image outside the tree, e.g. -o ../app.img (or --skip its directory)",
            )
        if tree.startswith(path + os.sep):
            raise UsageError(
                f"IMAGE {out!r} contains {name} {tree!r}: replacing it would destroy your files",
                "write the image to a new directory outside the tree",
            )
    replace = False
    if os.path.islink(path):
        raise UsageError(f"IMAGE {out!r} is a symlink", "pass the real path of the image directory")
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise UsageError(
                f"IMAGE {out!r} exists and is not a directory", "choose another path, or remove that file"
            )
        if os.listdir(path):
            if not is_image_dir(path):
                raise UsageError(
                    f"IMAGE {out!r} is a directory of other files, not a sealed image; "
                    "refusing to replace it (even with --force)",
                    "choose a new path, or empty that directory yourself",
                )
            if not force:
                raise UsageError(
                    f"IMAGE {out!r} already exists", "pass --force to replace it, or choose another path"
                )
            replace = True
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot create files in {parent!r} (permission denied)",
            "choose a directory you can write to for IMAGE",
        )
    return OutputTarget(path, replace)


def make_staging(target: OutputTarget) -> str:
    """A new hidden directory beside IMAGE (created with the usual permissions, umask applied)."""
    parent, base = os.path.split(target.path)
    for _ in range(100):
        staging = os.path.join(parent, f".{base}.sealing-{secrets.token_hex(4)}")
        try:
            os.mkdir(staging)
            return staging
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(
                f"cannot create a directory in {parent!r}: {exc.strerror}",
                "choose a directory you can write to for IMAGE",
            ) from None
    raise OutputError(
        f"cannot create a staging directory in {parent!r}", "remove stale .*.sealing-* directories"
    )


def commit(staging: str, target: OutputTarget) -> None:
    """Rename the finished staging directory to IMAGE (replacing an old image only when planned)."""
    parent, base = os.path.split(target.path)
    try:
        if not target.replace:
            os.rename(staging, target.path)  # POSIX: atomically replaces an empty directory, else fails
        else:
            old = os.path.join(parent, f".{base}.replaced-{secrets.token_hex(4)}")
            os.rename(target.path, old)
            try:
                os.rename(staging, target.path)
            except OSError:
                os.rename(old, target.path)
                raise
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise OutputError(
            f"cannot move the finished image into place at {target.path!r}: {exc.strerror}",
            "check that nothing else writes to that path, then seal again",
        ) from None
    fsync_dir(parent)


def fsync_dir(path: str) -> None:
    """Make a rename durable (best effort: some file systems cannot fsync directories)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
