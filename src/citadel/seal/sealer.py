"""Seal a directory tree into an image (owner side).

`plan_seal` (walk.py) decides what every file becomes and finds every problem before anything is
written; `seal_plan` then streams each file into a staging directory beside IMAGE (encrypted
files as CITF containers, authenticated and unprotected files as copies), writes the sealed
manifest, stages the key file, and renames everything into place (place.py). Memory use does not
grow with file sizes: files pass through in chunks. Any failure or interrupt removes the staging
directory, so IMAGE is either the complete new image or left as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Mapping, Optional, Sequence, Set, Tuple

from citadel import __version__
from citadel.crypto import KEY_SIZE
from citadel.errors import UsageError
from citadel.seal.format import (
    AUTHENTICATED,
    DEFAULT_CHUNK_SIZE,
    ENCRYPTED,
    MANIFEST_PATH,
    PYTHON_PATH_DIR,
    FileEntry,
    Manifest,
    encrypt_chunks,
    image_tag,
    seal_manifest,
)
from citadel.seal.keyfile import StagedKey, check_key_destination, stage_key_file
from citadel.seal.place import OutputError, check_output, commit, make_staging
from citadel.seal.regions import Rule
from citadel.seal.walk import PlannedFile, SealPlan, SourceError, plan_seal

#: progress(relpath, n): n more bytes of the file at image path relpath were sealed
Progress = Callable[[str, int], None]

COPY_BLOCK = 1 << 20
MAX_CHUNK_SIZE = (1 << 32) - 1  # the CITF header stores it in 4 bytes
FILE_ID_SIZE = 16


@dataclass(frozen=True)
class SealResult:
    image: str
    key: bytes = field(repr=False)
    tag: str
    files: int  # files in the image, every region
    bytes: int  # plaintext bytes sealed
    regions: Mapping[str, int] = field(default_factory=dict)  # region -> number of files
    key_file: Optional[str] = None
    python_path: Tuple[str, ...] = ()  # image paths of the python-path trees
    unmatched: Tuple[Tuple[str, str], ...] = ()  # (pattern, region or "skip") that matched no path


def seal_tree(
    src: str,
    out: str,
    *,
    rules: Sequence[Rule] = (),
    python_paths: Sequence[str] = (),
    key: Optional[bytes] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Optional[Progress] = None,
    skip: Sequence[str] = (),
    force: bool = False,
    key_out: Optional[str] = None,
) -> SealResult:
    """Seal ``src`` (plus ``python_paths``) into a new image directory ``out``.

    ``rules`` are (pattern, region) pairs, last match wins, default encrypted; ``skip`` patterns
    leave paths out of the image. ``out`` must not exist (or be an empty directory) unless
    ``force``, which replaces an existing image. ``key_out`` writes the key file (0600).
    """
    plan = plan_seal(src, rules=rules, skip=skip, python_paths=python_paths)
    return seal_plan(
        plan, out, key=key, chunk_size=chunk_size, progress=progress, force=force, key_out=key_out
    )


def seal_plan(
    plan: SealPlan,
    out: str,
    *,
    key: Optional[bytes] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Optional[Progress] = None,
    force: bool = False,
    key_out: Optional[str] = None,
    key_source: Optional[str] = None,
) -> SealResult:
    """Write the image a plan describes; ``key_source`` names the key file ``key`` came from, if any."""
    if key is not None and len(key) != KEY_SIZE:
        raise UsageError(
            "the image key must be 32 bytes (64 hex digits)", "pass a key file written by `citadel seal`"
        )
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(f"chunk size {chunk_size} is out of range", f"use 1 to {MAX_CHUNK_SIZE} bytes")
    target = check_output(out, plan.src, plan.python_paths, plan.skip, force=force)
    key_dest = None
    if key_out is not None:
        keep_out = [(plan.src, "SRC"), (target.path, "IMAGE")] + [
            (p, "the python path") for p in plan.python_paths
        ]
        key_dest = check_key_destination(key_out, force=force, keep_out_of=keep_out, same_as=key_source)
    image_key = key if key is not None else os.urandom(KEY_SIZE)
    manifest = Manifest(
        files={},
        rules=list(plan.rules),
        chunk_size=chunk_size,
        created_by=f"citadel {__version__}",
        python_path=[f"{PYTHON_PATH_DIR}/{i}" for i in range(len(plan.python_paths))],
    )
    staging = make_staging(target)
    staged_key: Optional[StagedKey] = None
    try:
        writer = _Writer(staging, chunk_size, progress)
        for planned in plan.files:
            entry = writer.seal_file(planned)
            if entry is not None:
                manifest.files[planned.rel] = entry
        sealed = seal_manifest(manifest, image_key)
        writer.write_file(MANIFEST_PATH, sealed)
        if key_dest is not None:
            staged_key = stage_key_file(key_dest, image_key, replace=os.path.lexists(key_dest))
        os.sync()  # the new image is on disk before an old one is replaced or `seal` reports success
        commit(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if staged_key is not None:
            staged_key.discard()
        if isinstance(exc, OSError):  # reading errors are SourceErrors already: this is the output side
            raise OutputError(
                f"cannot write the image beside {target.path!r}: {exc.strerror or exc}",
                "check free space, quotas and permissions there, or choose another place for IMAGE",
            ) from None
        raise
    if staged_key is not None:
        staged_key.commit()
    return SealResult(
        target.path,
        image_key,
        image_tag(sealed),
        len(plan.files),
        writer.total,
        regions=plan.region_counts(),
        key_file=key_dest or key_source,
        python_path=tuple(manifest.python_path),
        unmatched=tuple(plan.unmatched),
    )


class _Writer:
    """Streams planned files into the staging directory, one chunk at a time."""

    def __init__(self, staging: str, chunk_size: int, progress: Optional[Progress]) -> None:
        self.staging = staging
        self.chunk_size = chunk_size
        self.progress = progress
        self.total = 0
        self._made: Set[str] = {staging}

    def _dest(self, rel: str) -> str:
        dest = os.path.join(self.staging, *rel.split("/"))
        parent = os.path.dirname(dest)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        return dest

    def write_file(self, rel: str, data: bytes) -> None:
        with open(self._dest(rel), "xb") as fh:
            fh.write(data)

    def seal_file(self, planned: PlannedFile) -> Optional[FileEntry]:
        """Seal one file; the manifest entry for protected regions, None for unprotected ones."""
        source = _open_source(planned)
        with source:
            size = os.fstat(source.fileno()).st_size
            with open(self._dest(planned.rel), "xb") as dst:
                if planned.region == ENCRYPTED:
                    file_key, file_id = os.urandom(KEY_SIZE), os.urandom(FILE_ID_SIZE)
                    chunks = self._pieces(source, planned, size, self.chunk_size)
                    for piece in encrypt_chunks(file_key, file_id, size, chunks, self.chunk_size):
                        dst.write(piece)
                    entry: Optional[FileEntry] = FileEntry(
                        planned.rel, ENCRYPTED, size, file_id=file_id, key=file_key
                    )
                else:
                    digest = hashlib.sha256()
                    for block in self._pieces(source, planned, size, COPY_BLOCK):
                        digest.update(block)
                        dst.write(block)
                    entry = (
                        FileEntry(planned.rel, AUTHENTICATED, size, sha256=digest.hexdigest())
                        if planned.region == AUTHENTICATED
                        else None
                    )
            if source.read(1):
                raise _changed(planned)
        self.total += size
        return entry

    def _pieces(self, source: BinaryIO, planned: PlannedFile, size: int, block: int) -> Iterator[bytes]:
        """Exactly ``size`` bytes in pieces of ``block`` (the last shorter; one empty piece if empty)."""
        if size == 0:
            yield b""
            return
        remaining = size
        while remaining > 0:
            try:
                piece = _read_exact(source, min(block, remaining))
            except OSError as exc:
                raise SourceError(
                    f"cannot read {planned.host!r}: {exc.strerror}",
                    "check the disk it is on, then seal again",
                ) from None
            if piece is None:
                raise _changed(planned)
            remaining -= len(piece)
            if self.progress is not None:
                self.progress(planned.rel, len(piece))
            yield piece


def _open_source(planned: PlannedFile) -> BinaryIO:
    """Open without blocking (a FIFO swapped in must not hang us) and insist on a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(planned.host, flags)
    except OSError as exc:
        raise SourceError(
            f"cannot read {planned.host!r}: {exc.strerror}",
            "make it readable (chmod u+r), or leave it out with --skip",
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceError(
            f"{planned.host!r} is no longer a regular file", "seal again when nothing changes the tree"
        )
    return os.fdopen(fd, "rb", buffering=0)


def _read_exact(source: BinaryIO, n: int) -> Optional[bytes]:
    data = source.read(n)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = source.read(n - got)
        if not more:
            return None
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _changed(planned: PlannedFile) -> SourceError:
    return SourceError(
        f"{planned.host!r} changed size while it was being sealed",
        "seal again when nothing writes to the tree",
    )
