"""Compile sealed Python sources into bytecode for the image (owner side).

The engine imports a sealed ``NAME.py`` from a sealed ``__pycache__/NAME.<cache_tag>.pyc`` beside
it when one is there, instead of compiling the source at every start (numpy: ~150 ms of compiling).
Host ``__pycache__`` directories are never sealed (their pycs are timestamp-based and may be
stale); instead the sealer compiles the exact bytes it seals, in memory, with the interpreter
running ``citadel seal``, into an *unchecked hash-based* pyc (PEP 552): the header carries the
SipHash of the source but tells the importer not to check it, so the engine never has to read the
source to use the pyc. Nothing is written outside the image: the pyc's bytes go straight to the
sealing of their image path, in the same region as the source.

Layout of a generated pyc (PEP 552, little-endian):

    offset 0   4 bytes  importlib.util.MAGIC_NUMBER of the sealing interpreter
    offset 4   u32      flags = 1 (hash-based, check_source = 0)
    offset 8   8 bytes  importlib.util.source_hash(source)
    offset 16  ...      marshal.dumps(code object), compiled with optimize=0, dont_inherit=True,
                        file name = the source's image path (the engine replaces it on load)

Compiling runs in worker processes when there are many files (it is CPU-bound and holds the GIL);
sources and pycs pass between processes through pipes, never through files.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import marshal
import os
import posixpath
import signal
import struct
import sys
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Deque, Iterator, List, Optional, Tuple

from citadel.errors import CitadelError

if TYPE_CHECKING:  # the pool's modules cost ~30 ms to import: only sealing many sources pays
    from concurrent.futures import Future, ProcessPoolExecutor

#: PEP 552 header: magic, flags, 8-byte source hash
PYC_HEADER = struct.Struct("<4sI8s")
FLAG_HASH_BASED = 0b01
#: sources larger than this are sealed as source only (compiling them would need many times their size)
MAX_COMPILE_SIZE = 32 * 1024 * 1024
#: below this many sources, compiling in this process beats starting workers
PARALLEL_THRESHOLD = 64
MAX_WORKERS = 8


class CompileError(CitadelError):
    """Compiling could not run (a worker process died), as opposed to a source that does not compile."""


def cache_tag() -> Optional[str]:
    """The sealing interpreter's cache tag (``cpython-311``), or None if it does not cache bytecode."""
    return sys.implementation.cache_tag


def is_source(rel: str) -> bool:
    """True for a Python source file the import system would compile (``.py``)."""
    return any(rel.endswith(suffix) for suffix in importlib.machinery.SOURCE_SUFFIXES)


def pyc_path(rel: str, tag: str) -> str:
    """The image path of the bytecode for the source ``rel``: ``dir/__pycache__/NAME.<tag>.pyc``.

    The same name the engine's importer looks for (``cached_bytecode``); ``sys.pycache_prefix``
    is deliberately ignored.
    """
    directory, name = posixpath.split(rel)
    stem = name.rpartition(".")[0]
    return posixpath.join(directory, "__pycache__", f"{stem}.{tag}.pyc")


def compile_source(source: bytes, filename: str) -> Tuple[Optional[bytes], str]:
    """(unchecked hash-based pyc, "") for ``source``, or (None, why) if it does not compile.

    Warnings the compiler raises (invalid escape sequences, ...) are not shown: the sealer is
    not the place to lint vendored code. Pure function of its arguments (runs in workers).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = compile(source, filename, "exec", dont_inherit=True, optimize=0)
    except SyntaxError as exc:  # IndentationError and TabError included
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return None, f"{type(exc).__name__}: {exc.msg}{where}"
    except (ValueError, RecursionError) as exc:  # null bytes, huge int literals, too deeply nested
        return None, f"{type(exc).__name__}: {exc}"
    header = PYC_HEADER.pack(importlib.util.MAGIC_NUMBER, FLAG_HASH_BASED, importlib.util.source_hash(source))
    return header + marshal.dumps(code), ""


def _start_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes made with fork, not spawn or forkserver: those re-run the caller's __main__
    in every worker (a script without a main guard, stdin, a notebook). The executor forks all its
    workers before it starts its own thread, and a worker only compiles and pickles."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init)


def _worker_init() -> None:
    """In a worker: Ctrl-C is the sealer's to handle (it stops the pool), and no inherited handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)


@dataclass(frozen=True)
class CompiledPyc:
    """The bytecode of one sealed source, ready to be sealed at ``rel`` in ``region``."""

    source_rel: str
    rel: str
    region: str
    data: bytes = field(repr=False)


@dataclass
class CompileReport:
    """What compiling did, for the command's output."""

    enabled: bool
    cache_tag: Optional[str] = None
    compiled: int = 0
    bytes: int = 0  # bytecode bytes sealed
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (image path of the source, why)


Job = Tuple[str, str, str]  # (source image path, pyc image path, region)


class Compiler:
    """Compiles sources handed to it and gives back their pycs, in this process or in workers.

    ``submit`` never blocks for long: at most ``2 * workers`` compilations are in flight, and
    ``ready()`` / ``finish()`` hand back results in submission order. Failures are recorded in
    ``report.failed`` and yield nothing.
    """

    def __init__(self, tag: str, expected: int, workers: Optional[int] = None) -> None:
        self.report = CompileReport(enabled=True, cache_tag=tag)
        if workers is None:
            workers = min(MAX_WORKERS, os.cpu_count() or 1) if expected >= PARALLEL_THRESHOLD else 1
        self._workers = max(1, workers)
        self._pool: Optional[ProcessPoolExecutor] = None
        self._pending: Deque[Tuple[Job, Future[Tuple[Optional[bytes], str]]]] = deque()
        self._done: List[CompiledPyc] = []

    def __enter__(self) -> Compiler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, source_rel: str, region: str, source: bytes) -> None:
        """Queue ``source`` (the exact bytes sealed at ``source_rel``) for compiling."""
        job: Job = (source_rel, pyc_path(source_rel, str(self.report.cache_tag)), region)
        if len(source) > MAX_COMPILE_SIZE:
            self.too_large(source_rel)
            return
        if self._workers == 1:
            self._record(job, compile_source(source, source_rel))
            return
        from concurrent.futures.process import BrokenProcessPool

        try:
            if self._pool is None:
                self._pool = _start_pool(self._workers)
            future = self._pool.submit(compile_source, source, source_rel)
        except (OSError, BrokenProcessPool) as exc:
            raise CompileError(
                f"cannot start bytecode compiler processes ({exc})",
                "seal again, or pass --no-compile to seal sources only",
            ) from None
        self._pending.append((job, future))
        while len(self._pending) > 2 * self._workers:
            self._collect_oldest()

    def too_large(self, source_rel: str) -> None:
        """Record that ``source_rel`` is sealed as source only, being larger than MAX_COMPILE_SIZE."""
        self.report.failed.append((source_rel, f"larger than {MAX_COMPILE_SIZE >> 20} MiB: not compiled"))

    def ready(self) -> Iterator[CompiledPyc]:
        """The pycs finished so far (in submission order), each handed out once."""
        while self._pending and self._pending[0][1].done():
            self._collect_oldest()
        done, self._done = self._done, []
        yield from done

    def finish(self) -> Iterator[CompiledPyc]:
        """Every remaining pyc, waiting for the workers."""
        while self._pending:
            self._collect_oldest()
        yield from self.ready()

    def _collect_oldest(self) -> None:
        from concurrent.futures.process import BrokenProcessPool

        job, future = self._pending.popleft()
        try:
            result = future.result()
        except BrokenProcessPool:
            raise CompileError(
                f"a bytecode compiler process died while compiling {job[0]!r} (out of memory?)",
                "seal again, or pass --no-compile to seal sources only",
            ) from None
        self._record(job, result)

    def _record(self, job: Job, result: Tuple[Optional[bytes], str]) -> None:
        source_rel, rel, region = job
        data, why = result
        if data is None:
            self.report.failed.append((source_rel, why))
            return
        self.report.compiled += 1
        self.report.bytes += len(data)
        self._done.append(CompiledPyc(source_rel, rel, region, data))
