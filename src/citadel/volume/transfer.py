"""Moving plaintext in and out of a volume, and describing one (the data owner's side).

Stdlib only. `import_path` copies files or trees into an open volume; `export_tree` writes a
volume's tree (or part of it) as plaintext into a new directory, built in a temporary directory
beside it and renamed into place only when every byte has been read and authenticated, so a
tampered volume never leaves half an export behind. `describe` and `kept_states` feed
``citadel volume show``.
"""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from citadel.volume import store
from citadel.volume.errors import VolumeError
from citadel.volume.format import open_manifest, volume_tag
from citadel.volume.volume import Volume

COPY_BUFFER = 1 << 20


@dataclass
class TransferResult:
    files: int = 0
    bytes: int = 0
    paths: List[str] = field(default_factory=list)


def import_path(vol: Volume, src: str, dest: str = "") -> TransferResult:
    """Copy the file or directory tree ``src`` into the volume at ``dest`` (a directory, "" = root).

    File-system errors (an unreadable source, a destination that is a file or leaves the volume)
    become a VolumeError naming the path; the caller's volume is not committed then.
    """
    if not os.path.exists(src):
        raise VolumeError(f"cannot import {src!r}: no such file or directory", "check the path")
    try:
        return _import_path(vol, src, dest)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise VolumeError(f"cannot import {src!r} into the volume at {dest or '/'!r}: {exc.strerror or exc}{where}",
                          "check the source is readable and --to names a directory inside the volume "
                          "(not a file, no '..')") from None


def _import_path(vol: Volume, src: str, dest: str) -> TransferResult:
    result = TransferResult()
    base = "/".join(p for p in (dest.strip("/"), os.path.basename(os.path.normpath(src))) if p)
    if dest.strip("/"):
        vol.makedirs(dest.strip("/"), exist_ok=True)
    if not os.path.isdir(src):
        _import_file(vol, src, base, result)
        return result
    vol.makedirs(base, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src).replace(os.sep, "/")
        target_dir = base if rel_dir == "." else f"{base}/{rel_dir}"
        for name in dirnames:
            vol.makedirs(f"{target_dir}/{name}", exist_ok=True)
        for name in sorted(filenames):
            _import_file(vol, os.path.join(dirpath, name), f"{target_dir}/{name}", result)
    return result


def _import_file(vol: Volume, src: str, target: str, result: TransferResult) -> None:
    if not stat_mod.S_ISREG(os.stat(src).st_mode):
        raise VolumeError(f"cannot import {src!r}: not a regular file", "import regular files and directories")
    with open(src, "rb") as fin, vol.open_file(target, "wb") as fout:
        shutil.copyfileobj(fin, fout, COPY_BUFFER)
    vol.chmod(target, os.stat(src).st_mode & 0o777)
    result.files += 1
    result.bytes += os.path.getsize(src)
    result.paths.append(target)


def export_tree(vol: Volume, dest: str, path: str = "") -> TransferResult:
    """Write the volume's tree under ``path`` as plaintext into ``dest`` (which must not exist)."""
    if os.path.lexists(dest):
        raise VolumeError(f"cannot export into {dest!r}: it already exists", "name a new directory")
    prefix = path.strip("/")
    if prefix and not vol.isdir(prefix):
        raise VolumeError(f"the volume has no directory {prefix!r}", "list it with `citadel volume show`")
    parent = os.path.dirname(os.path.abspath(dest)) or "."
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise VolumeError(f"cannot export into {dest!r}: {parent!r} is a file, not a directory",
                          "name a new directory in an existing directory")
    if not os.path.isdir(parent):
        raise VolumeError(f"cannot export into {dest!r}: the directory {parent!r} does not exist",
                          f"create it first (mkdir -p {parent}), or name a new directory in an existing one")
    try:
        staging = tempfile.mkdtemp(prefix=".citadel-export-", dir=parent)
    except OSError as exc:
        raise VolumeError(f"cannot export into {dest!r}: cannot write in {parent!r}: {exc.strerror or exc}",
                          "name a new directory in a place you can write to") from None
    result = TransferResult()
    try:
        for d in vol.directories():
            if not prefix or d.startswith(prefix + "/"):
                os.makedirs(os.path.join(staging, d[len(prefix) :].lstrip("/")), exist_ok=True)
        for rel, size in vol.walk_files():
            if prefix and not rel.startswith(prefix + "/"):
                continue
            out = os.path.join(staging, rel[len(prefix) :].lstrip("/"))
            with vol.open_file(rel, "rb") as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, COPY_BUFFER)
            os.chmod(out, vol.stat(rel).st_mode & 0o777)
            result.files += 1
            result.bytes += size
            result.paths.append(rel)
        os.rename(staging, dest)
    except OSError as exc:  # the host side: disk full, dest appeared meanwhile...; nothing is left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise VolumeError(f"cannot export into {dest!r}: {exc.strerror or exc}",
                          "check free space and permissions there, or name another new directory") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


@dataclass
class KeptState:
    """A state kept beside the current one: refused by the tag store, or not yet promoted."""

    kind: str  # "conflict" or "pending"
    tag: str
    generation: Optional[int]
    based_on: str
    files: int


def kept_states(root: str, key: bytes) -> List[KeptState]:
    out = []
    for kind, sub in (("conflict", store.CONFLICTS), ("pending", store.PENDING)):
        for name in store.list_names(os.path.join(root, sub)):
            data = store.read_bytes(os.path.join(root, sub, name))
            try:
                state = open_manifest(data, key, name)
                out.append(KeptState(kind, volume_tag(data), state.generation, state.prev_tag, len(state.files)))
            except VolumeError:
                out.append(KeptState(kind, volume_tag(data), None, "", 0))
    return out


def describe(vol: Volume) -> Dict[str, object]:
    """What ``citadel volume show`` prints about an open volume."""
    files = list(vol.walk_files())
    seg_dir = os.path.join(vol.root, store.SEGMENTS)
    stored = sum(os.path.getsize(os.path.join(seg_dir, n)) for n in store.list_names(seg_dir))
    return {
        "volume": vol.root,
        "volume_id": vol.volume_id.hex(),
        "tag": vol.tag,
        "generation": vol.generation,
        "chunk_size": vol.chunk_size,
        "files": [{"path": p, "size": s} for p, s in files],
        "directories": vol.directories(),
        "plaintext_bytes": sum(s for _, s in files),
        "stored_bytes": stored,
    }
