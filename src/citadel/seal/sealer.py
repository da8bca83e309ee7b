"""Seal a directory tree into an image (owner side).

`plan_seal` (walk.py) decides what every file becomes and finds every problem before anything is
written; `seal_plan` then streams each file into a staging directory beside IMAGE (encrypted
files as CITF containers, authenticated and unprotected files as copies), writes the sealed
manifest, stages the key file, and renames everything into place (place.py). Memory use does not
grow with file sizes: files pass through in chunks. Any failure or interrupt removes the staging
directory, so IMAGE is either the complete new image or left as it was.

Two optional extras make sealed applications fast and runnable: ``compile_bytecode`` seals a
fresh ``__pycache__`` pyc beside every protected ``.py`` (bytecode.py: the source is read once,
sealed from memory, and the same bytes are compiled in memory), and the plan's bundled host
libraries (native.py, planned by ``plan_seal(bundle_native=True)``) are sealed under
``.citadel/native/``.
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
from citadel.seal.bytecode import (
    MAX_COMPILE_SIZE,
    CompiledPyc,
    Compiler,
    CompileReport,
    cache_tag,
    is_source,
    pyc_path,
)
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
from citadel.seal.keyfile import StagedKey, check_key_destination, stage_key_file
from citadel.seal.native import NativePlan
from citadel.seal.place import OutputError, check_output, commit, make_staging
from citadel.seal.regions import Rule, matches
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
    files: int  # files of SRC and the python-path trees in the image, every region
    bytes: int  # plaintext bytes of those files
    regions: Mapping[str, int] = field(default_factory=dict)  # region -> number of those files
    key_file: Optional[str] = None
    python_path: Tuple[str, ...] = ()  # image paths of the python-path trees
    unmatched: Tuple[Tuple[str, str], ...] = ()  # (pattern, region or "skip") that matched no path
    bytecode: CompileReport = field(default_factory=lambda: CompileReport(enabled=False))  # generated pycs
    native: Optional[NativePlan] = None  # bundled host libraries (None: not asked for)


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
    compile_bytecode: bool = False,
    bundle_native: bool = False,
) -> SealResult:
    """Seal ``src`` (plus ``python_paths``) into a new image directory ``out``.

    ``rules`` are (pattern, region) pairs, last match wins, default encrypted; ``skip`` patterns
    leave paths out of the image. ``out`` must not exist (or be an empty directory) unless
    ``force``, which replaces an existing image. ``key_out`` writes the key file (0600).
    ``compile_bytecode`` and ``bundle_native`` are what `citadel seal` does unless told not to.
    """
    plan = plan_seal(src, rules=rules, skip=skip, python_paths=python_paths, bundle_native=bundle_native)
    return seal_plan(
        plan,
        out,
        key=key,
        chunk_size=chunk_size,
        progress=progress,
        force=force,
        key_out=key_out,
        compile_bytecode=compile_bytecode,
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
    compile_bytecode: bool = False,
    compile_workers: Optional[int] = None,
) -> SealResult:
    """Write the image a plan describes; ``key_source`` names the key file ``key`` came from, if any.

    ``compile_bytecode`` adds a pyc for every protected source (compiled in ``compile_workers``
    processes; default: one per CPU, up to 8, when there are many sources).
    """
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
    tag = cache_tag() if compile_bytecode else None  # None also if this interpreter caches no bytecode
    report = CompileReport(enabled=compile_bytecode, cache_tag=tag)
    staging = make_staging(target)
    staged_key: Optional[StagedKey] = None
    try:
        writer = _Writer(staging, chunk_size, progress)
        if tag is None:
            _seal_files(writer, plan, manifest, None, set())
        else:
            to_compile = _sources_to_compile(plan, tag)
            with Compiler(tag, len(to_compile), compile_workers) as compiler:
                _seal_files(writer, plan, manifest, compiler, to_compile)
            report = compiler.report
        tree_bytes = writer.total
        for planned in plan.native_files:
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
        tree_bytes,
        regions=plan.region_counts(),
        key_file=key_dest or key_source,
        python_path=tuple(manifest.python_path),
        unmatched=tuple(plan.unmatched),
        bytecode=report,
        native=plan.native,
    )


def _sources_to_compile(plan: SealPlan, tag: str) -> Set[str]:
    """Image paths of the sources to compile: protected ``.py`` files whose pyc --skip does not name."""
    return {
        f.rel for f in plan.files
        if f.region != UNPROTECTED and is_source(f.rel)
        and not any(matches(p, pyc_path(f.rel, tag)) for p in plan.skip)
    }


def _seal_files(
    writer: _Writer, plan: SealPlan, manifest: Manifest, compiler: Optional[Compiler], to_compile: Set[str]
) -> None:
    """Seal the trees' files, and the pycs of the sources among them as they are compiled."""

    def add(pycs: Iterator[CompiledPyc]) -> None:
        for pyc in pycs:
            entry = writer.seal_data(pyc.rel, pyc.region, pyc.data)
            if entry is not None:
                manifest.files[pyc.rel] = entry

    for planned in plan.files:
        if compiler is not None and planned.rel in to_compile and planned.size <= MAX_COMPILE_SIZE:
            source = writer.read_source(planned)
            entry = writer.seal_data(planned.rel, planned.region, source)
            compiler.submit(planned.rel, planned.region, source)
            add(compiler.ready())
        else:
            if compiler is not None and planned.rel in to_compile:
                compiler.too_large(planned.rel)
            entry = writer.seal_file(planned)
        if entry is not None:
            manifest.files[planned.rel] = entry
    if compiler is not None:
        add(compiler.finish())


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
            entry = self._write(planned.rel, planned.region, size,
                                lambda block: self._pieces(source, planned, size, block))
            if source.read(1):
                raise _changed(planned)
        self.total += size
        return entry

    def read_source(self, planned: PlannedFile) -> bytes:
        """The whole content of a (small) file, read as seal_file would read it."""
        source = _open_source(planned)
        with source:
            size = os.fstat(source.fileno()).st_size
            data = b"".join(self._pieces(source, planned, size, COPY_BLOCK))
            if source.read(1):
                raise _changed(planned)
        self.total += size
        return data

    def seal_data(self, rel: str, region: str, data: bytes) -> Optional[FileEntry]:
        """Seal bytes held in memory at image path ``rel`` (not counted in ``total``)."""
        return self._write(rel, region, len(data), lambda block: _slices(data, block))

    def _write(
        self, rel: str, region: str, size: int, pieces: Callable[[int], Iterator[bytes]]
    ) -> Optional[FileEntry]:
        """Write ``size`` bytes (``pieces(block)`` yields them) at ``rel`` as ``region`` requires."""
        with open(self._dest(rel), "xb") as dst:
            if region == ENCRYPTED:
                file_key, file_id = os.urandom(KEY_SIZE), os.urandom(FILE_ID_SIZE)
                chunks = pieces(self.chunk_size)
                for piece in encrypt_chunks(file_key, file_id, size, chunks, self.chunk_size):
                    dst.write(piece)
                return FileEntry(rel, ENCRYPTED, size, file_id=file_id, key=file_key)
            digest = hashlib.sha256()
            for block in pieces(COPY_BLOCK):
                digest.update(block)
                dst.write(block)
        if region == AUTHENTICATED:
            return FileEntry(rel, AUTHENTICATED, size, sha256=digest.hexdigest())
        return None

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


def _slices(data: bytes, block: int) -> Iterator[bytes]:
    """``data`` in pieces of ``block`` bytes (one empty piece if it is empty), as _pieces yields."""
    if not data:
        yield b""
        return
    view = memoryview(data)
    for start in range(0, len(data), block):
        yield bytes(view[start : start + block])


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
