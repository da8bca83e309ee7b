"""Seal a directory tree into an image (owner side).

Walks the source tree (and any python-path trees), puts each file in its region, writes
encrypted files as CITF containers and the others as copies, then writes the sealed manifest.
The image is built in a temporary directory beside the output and renamed into place only when
complete, so a failure never leaves a half-written image behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from citadel import __version__
from citadel.crypto import KEY_SIZE
from citadel.seal.format import (
    AUTHENTICATED,
    DEFAULT_CHUNK_SIZE,
    ENCRYPTED,
    MANIFEST_PATH,
    PYTHON_PATH_DIR,
    UNPROTECTED,
    FileEntry,
    Manifest,
    encrypt_chunks,
    image_tag,
    seal_manifest,
)
from citadel.seal.regions import Rule, region_for

Progress = Callable[[str, int], None]  # (relpath, bytes done for it)


@dataclass(frozen=True)
class SealResult:
    image: str
    key: bytes
    tag: str
    files: int
    bytes: int


def seal_tree(
    src: str,
    out: str,
    *,
    rules: Sequence[Rule] = (),
    python_paths: Sequence[str] = (),
    key: Optional[bytes] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Optional[Progress] = None,
) -> SealResult:
    """Seal ``src`` (plus ``python_paths``) into a new image directory ``out``."""
    image_key = key if key is not None else os.urandom(KEY_SIZE)
    parent = os.path.dirname(os.path.abspath(out)) or "."
    staging = tempfile.mkdtemp(prefix=".citadel-seal-", dir=parent)
    try:
        manifest = Manifest(files={}, chunk_size=chunk_size, created_by=f"citadel {__version__}")
        manifest.unprotected = [p for p, region in rules if region == UNPROTECTED]
        total = 0
        trees = [(src, "")] + [(p, f"{PYTHON_PATH_DIR}/{i}/") for i, p in enumerate(python_paths)]
        for index, (tree, prefix) in enumerate(trees):
            if index > 0:
                manifest.python_path.append(prefix.rstrip("/"))
            for rel_in_tree, host in _walk_files(tree):
                rel = prefix + rel_in_tree
                region = region_for(rel_in_tree, rules) if index == 0 else ENCRYPTED
                total += _seal_one(host, rel, region, staging, manifest, chunk_size, progress)
        sealed = seal_manifest(manifest, image_key)
        manifest_out = os.path.join(staging, MANIFEST_PATH)
        os.makedirs(os.path.dirname(manifest_out), exist_ok=True)
        with open(manifest_out, "wb") as fh:
            fh.write(sealed)
        os.replace(staging, out) if not os.path.exists(out) else _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SealResult(out, image_key, image_tag(sealed), len(manifest.files), total)


def _replace_dir(staging: str, out: str) -> None:
    old = out.rstrip("/") + ".old-" + os.path.basename(staging)
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _walk_files(tree: str) -> Iterator[tuple[str, str]]:
    """(POSIX path relative to tree, host path) of each regular file, sorted, skipping caches."""
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            host = os.path.join(dirpath, name)
            rel = os.path.relpath(host, tree).replace(os.sep, "/")
            yield rel, host


def _seal_one(host: str, rel: str, region: str, staging: str, manifest: Manifest,
              chunk_size: int, progress: Optional[Progress]) -> int:
    import hashlib

    dest = os.path.join(staging, *rel.split("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    size = os.path.getsize(host)
    if region == ENCRYPTED:
        file_key, file_id = os.urandom(KEY_SIZE), os.urandom(16)
        with open(host, "rb") as src, open(dest, "wb") as dst:
            for piece in encrypt_chunks(file_key, file_id, size, _chunks(src, size, chunk_size), chunk_size):
                dst.write(piece)
        manifest.files[rel] = FileEntry(rel, ENCRYPTED, size, file_id=file_id, key=file_key)
    else:
        digest = hashlib.sha256()
        with open(host, "rb") as src, open(dest, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                dst.write(block)
        if region == AUTHENTICATED:
            manifest.files[rel] = FileEntry(rel, AUTHENTICATED, size, sha256=digest.hexdigest())
    if progress is not None:
        progress(rel, size)
    return size


def _chunks(fh, size: int, chunk_size: int) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    if size == 0:
        yield b""
        return
    remaining = size
    while remaining > 0:
        block = fh.read(min(chunk_size, remaining))
        if not block:
            raise OSError("file shrank while it was being sealed")
        remaining -= len(block)
        yield block
