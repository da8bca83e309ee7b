"""The engine's trusted base: the engine manifest, where its files are, and the checks against it.

The engine manifest (docs/measurement.md) lists each file the engine may run besides sealed
code: the interpreter, libpython, the standard library, `cryptography`, `_cffi_backend`, the
engine-safe part of `citadel`, and the system libraries they load. :class:`TrustedBase` answers
"is this file exactly what the manifest pins?": Python files by SHA-256 of the bytes about to be
used; native (ELF) files, which are large, by their stat identity (size, mtime, ctime, inode,
device) as recorded when the manifest hashed them in ``sim`` mode, and by hash otherwise or in
``hw`` mode (:meth:`TrustedBase.set_strict`). trusted_import.py uses it to serve imports.

Loaded by ``bootstrap.py``, which verifies its bytes first, before any finder is in place, so at
module level it imports only built-in and frozen modules. Engine-safe, Python 3.9.
"""

from __future__ import annotations

import os
import sys

try:
    import _frozen_importlib_external as _external
except ImportError:  # pragma: no cover - interpreters without the frozen aliases
    import importlib._bootstrap_external as _external  # type: ignore[no-redef]

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from types import ModuleType
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

    Hasher = Callable[..., Any]

MANIFEST_HEADER = "citadel-engine-manifest/v1"
CACHE_HEADER = "citadel-engine-cache/v1"
IMPORT_PREFIX = "import "
ELF_MAGIC = b"\x7fELF"
_READ_BLOCK = 1 << 20
# The engine's own reads use the functions as they are now: the file shield replaces the public
# ones later, and trusted files are outside the image anyway.
_os_open, _os_read, _os_close, _os_stat, _os_fstat = os.open, os.read, os.close, os.stat, os.fstat
unshielded_stat = _os_stat
PYC_HEADER_SIZE = 16
_REBUILD_HINT = ("if you upgraded Python or Citadel, run `citadel measure --rebuild` (the measurement "
                 "changes, so update the policies that pin it); otherwise reinstall them")


class BootError(Exception):
    """Raised before `citadel.errors` can be imported; same shape as CitadelError."""

    exit_code = 70

    def __init__(self, cause: str, remedy: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.remedy = remedy

    def diagnostics(self) -> str:
        text = f"citadel: error: {self.cause}"
        return text + (f"\ncitadel: hint: {self.remedy}" if self.remedy else "")


# becomes citadel.errors.EngineError once that module is verified
_error_class: Callable[[str, str], Exception] = BootError


def fail(cause: str, remedy: str = _REBUILD_HINT) -> Exception:
    """The error to raise for a trusted-base problem (EngineError once citadel.errors is verified)."""
    return _error_class(cause, remedy)


def use_error_class(error_class: Callable[[str, str], Exception]) -> None:
    global _error_class
    _error_class = error_class


def read_file(path: str, limit: int = -1) -> bytes:
    """The bytes of a file (the first ``limit`` if given), read with the unshielded functions."""
    fd = _os_open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        if limit >= 0:
            return _os_read(fd, limit)
        size = _os_fstat(fd).st_size
        chunks = []
        while True:
            chunk = _os_read(fd, max(size + 1, 65536))
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        _os_close(fd)


class ManifestFormatError(ValueError):
    """The manifest or cache text does not follow docs/measurement.md."""


# --- the two text formats --------------------------------------------------------------------------
def parse_manifest(text: str) -> Tuple[List[str], Dict[str, Tuple[str, int]]]:
    """(import path, {key: (sha256 hex, size)}), checking the whole format (for tools and tests).

    The engine itself uses :func:`index_manifest`, which is faster and checks lines when used.
    """
    import_path, index = index_manifest(text)
    entries: Dict[str, Tuple[str, int]] = {}
    previous = ""
    for number, (key, line) in enumerate(index.items(), start=3):
        parts = line.split(" ", 2)
        if len(parts) != 3 or len(parts[0]) != 64 or not parts[1].isdigit() or "/" not in key:
            raise ManifestFormatError(f"line {number} is malformed")
        if any(c not in "0123456789abcdef" for c in parts[0]):
            raise ManifestFormatError(f"line {number} has a digest that is not lowercase hex")
        if key <= previous:
            raise ManifestFormatError(f"line {number} is out of order or repeated")
        previous = key
        entries[key] = (parts[0], int(parts[1]))
    return import_path, entries


def index_manifest(text: str) -> Tuple[List[str], Dict[str, str]]:
    """(import path, {key: its whole line}) with the header checked; lines are parsed when used."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != MANIFEST_HEADER or not lines[1].startswith(IMPORT_PREFIX):
        raise ManifestFormatError("bad header")
    if lines[-1] != "":
        raise ManifestFormatError("does not end with a newline")
    import_path = lines[1][len(IMPORT_PREFIX):].split(" ")
    for entry in import_path:
        if not entry.endswith("/") or entry.split("/", 1)[0] == "":
            raise ManifestFormatError(f"bad import directory {entry!r}")
    body = lines[2:-1]
    try:
        keys = [line.split(" ", 2)[2] for line in body]
    except IndexError:
        raise ManifestFormatError("a line has fewer than three fields") from None
    index = dict(zip(keys, body))
    if len(index) != len(body):
        raise ManifestFormatError("a file is listed twice")
    return import_path, index


def parse_cache(text: str) -> Tuple[Dict[str, str], Dict[str, Tuple[int, ...]], str]:
    """(roots {name: host dir}, stat identities {key: tuple}, manifest sha256) from the cache text."""
    lines = text.split("\n")
    if not lines or lines[0] != CACHE_HEADER:
        raise ManifestFormatError("bad cache header")
    roots: Dict[str, str] = {}
    stats: Dict[str, Tuple[int, ...]] = {}
    digest = ""
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split("\t")
        if fields[0] == "root" and len(fields) == 3:
            roots[fields[1]] = fields[2]
        elif fields[0] == "stat" and len(fields) == 7:
            stats[fields[1]] = tuple(int(f) for f in fields[2:])
        elif fields[0] == "manifest-sha256" and len(fields) == 2:
            digest = fields[1]
        elif fields[0] != "python":
            raise ManifestFormatError(f"unknown cache line {fields[0]!r}")
    return roots, stats, digest


def stat_identity(st: os.stat_result) -> Tuple[int, ...]:
    """What the sim-mode check compares: a write changes mtime and ctime; a replacement, the inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


# --- the verified trusted base -----------------------------------------------------------------------
class TrustedBase:
    """The parsed engine manifest, where its roots are on this host, and the checks against it."""

    def __init__(self, manifest_text: str, cache_text: str, sha256: Hasher, manifest_sha256: str) -> None:
        try:
            self.import_path, self.entries = index_manifest(manifest_text)
            self.roots, self.stats, cached_digest = parse_cache(cache_text)
        except ValueError as exc:  # ManifestFormatError, or a number that is not one
            raise fail(f"the cached engine manifest is damaged ({exc})",
                        "run `citadel measure --rebuild` to build it again") from None
        if cached_digest != manifest_sha256:
            raise fail("the engine manifest cache does not belong to the cached manifest",
                        "run `citadel measure --rebuild` to build both again")
        missing = {key.split("/", 1)[0] for key in self.entries} - set(self.roots)
        if missing:
            raise fail(f"the engine manifest cache names no directory for {sorted(missing)}",
                        "run `citadel measure --rebuild` to build it again")
        self.sha256 = sha256
        self.manifest_sha256 = manifest_sha256
        self.strict = False
        self._prefixes = sorted(((d if d.endswith("/") else d + "/"), n) for n, d in self.roots.items())
        self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        self._by_stat: Set[str] = set()  # natives accepted by stat identity (re-hashed if strict)
        self._by_hash: Set[str] = set()
        self._mapped: Set[str] = set()  # host paths of mappings already checked
        self.defer_mappings = False  # during start-up, checked once when the guard is installed

    # -- paths ----------------------------------------------------------------------------------
    def host_path(self, key: str) -> str:
        root, _, rel = key.partition("/")
        return os.path.join(self.roots[root], rel)

    def key_of(self, host_path: str) -> Optional[str]:
        """The manifest key of a host file (also tried resolved through symlinks), or None."""
        key = self._match(host_path)
        if key is None:
            resolved = os.path.realpath(host_path)
            if resolved != host_path:
                key = self._match(resolved)
        return key

    def _match(self, path: str) -> Optional[str]:
        for prefix, root in self._prefixes:
            if path.startswith(prefix):
                key = root + "/" + path[len(prefix):]
                if key in self.entries:
                    return key
        return None

    # -- checks ----------------------------------------------------------------------------------
    def record(self, key: str) -> Tuple[str, int]:
        """(sha256 hex, size) the manifest records for ``key``."""
        line = self.entries[key]
        digest, _, rest = line.partition(" ")
        size = rest.partition(" ")[0]
        if len(digest) != 64 or not size.isdigit():
            raise fail(f"the engine manifest's line for {key} is malformed",
                        "run `citadel measure --rebuild` to build it again")
        return digest, int(size)

    def read_verified(self, key: str) -> bytes:
        """The file's bytes if they are exactly what the manifest records; raises otherwise."""
        path = self.host_path(key)
        try:
            data = read_file(path)
        except OSError as exc:
            raise fail(f"the engine file {path} cannot be read ({exc.strerror})") from None
        digest, size = self.record(key)
        if len(data) != size or self.sha256(data).hexdigest() != digest:
            raise fail(f"the engine file {path} differs from the measured engine")
        return data

    def read_if_pinned(self, key: str) -> Optional[bytes]:
        """The file's bytes if they are what the manifest records, else None (for caches, whose
        source is there to fall back on)."""
        try:
            data = read_file(self.host_path(key))
        except OSError:
            return None
        digest, size = self.record(key)
        return data if len(data) == size and self.sha256(data).hexdigest() == digest else None

    def verify_file(self, key: str) -> None:
        """Check a file without keeping its bytes: natives by stat identity unless strict, else by hash."""
        if key in self._by_hash or (key in self._by_stat and not self.strict):
            return
        path = self.host_path(key)
        try:
            st = _os_stat(path)
        except OSError as exc:
            raise fail(f"the engine file {path} is missing ({exc.strerror})") from None
        if not self.strict and self.stats.get(key) == stat_identity(st):
            self._by_stat.add(key)
            return
        digest, size = self.record(key)
        hasher = self.sha256()
        seen = 0
        try:
            fd = _os_open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                for block in iter(lambda: _os_read(fd, _READ_BLOCK), b""):
                    hasher.update(block)
                    seen += len(block)
            finally:
                _os_close(fd)
        except OSError as exc:
            raise fail(f"the engine file {path} cannot be read ({exc.strerror})") from None
        if seen != size or hasher.hexdigest() != digest:
            raise fail(f"the engine file {path} differs from the measured engine")
        self._by_hash.add(key)

    def verify_all(self) -> None:
        """Check every file of the manifest (``citadel measure``: is the cache still what is installed?)."""
        for key in self.entries:
            self.verify_file(key)

    def set_strict(self) -> None:
        """hw mode: from now on hash everything, and hash what was accepted by stat identity."""
        self.strict = True
        for key in sorted(self._by_stat):
            self.verify_file(key)
        self._by_stat.clear()

    def verify_module_file(self, module: ModuleType) -> None:
        """Post hoc: a module Python loaded before the finder was in place came from the manifest."""
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) if spec is not None else getattr(module, "__file__", None)
        if not origin or origin in ("built-in", "frozen") or not getattr(spec, "has_location", True):
            return
        key = self.key_of(origin)
        if key is None:
            raise fail(f"the module {module.__name__} was loaded from {origin}, which is not part of "
                        "the measured engine")
        if is_native(key):
            self.verify_file(key)
            return
        self.read_verified(key)
        cached = getattr(spec, "cached", None)
        if not cached or not key.endswith(".py") or not os.path.isfile(cached):
            return
        cached_key = self.key_of(cached)
        if cached_key is not None:
            self.read_verified(cached_key)
        elif pyc_matches(cached, _os_stat(origin)):
            raise fail(f"the module {module.__name__} was loaded from {cached}, which is not part of "
                        "the measured engine")

    def verify_loaded_modules(self) -> None:
        for module in list(sys.modules.values()):
            if module is not None:
                self.verify_module_file(module)

    def verify_mappings(self, loaded_by: str, tolerate: Optional[Callable[[str], bool]] = None) -> None:
        """Every ELF file mapped into this process is a file of the manifest (checked once each).

        ``tolerate(path)`` may accept a mapping the manifest does not hold (sealed libraries,
        or any library when CITADEL_ALLOW_DLOPEN allows it); it is asked before refusing.
        """
        for path in mapped_files():
            if path in self._mapped:
                continue
            key = self.key_of(path)
            if key is not None:
                self.verify_file(key)
            elif _is_elf(path) and not (tolerate is not None and tolerate(path)):
                raise fail(f"the library {path} was loaded by {loaded_by} but is not part of the "
                            "measured engine",
                            "seal the library into the image, or set CITADEL_ALLOW_DLOPEN=1 to allow "
                            "unprotected libraries while debugging (this changes the measurement)")
            self._mapped.add(path)


def mapped_files() -> List[str]:
    """Host paths of the files mapped into this process (from /proc/self/maps), in order."""
    seen: Dict[str, None] = {}
    try:
        text = read_file("/proc/self/maps").decode("utf-8", "surrogateescape")
    except OSError:
        return []
    for line in text.split("\n"):
        parts = line.split(None, 5)
        if len(parts) == 6:
            path = parts[5]
            if path.startswith("/") and not path.startswith("/memfd:") and not path.endswith(" (deleted)"):
                seen.setdefault(path, None)
    return list(seen)


def _is_elf(path: str) -> bool:
    try:
        return read_file(path, 4) == ELF_MAGIC
    except OSError:
        return False


def is_native(key: str) -> bool:
    """Native (ELF) files are checked by stat identity in sim mode; see the module docstring."""
    name = key.rpartition("/")[2]
    return not name.endswith((".py", ".pyc"))


def pyc_header_current(header: bytes, st: os.stat_result) -> bool:
    """CPython's rule for a timestamp pyc: this interpreter's magic, and the source's mtime and size."""
    if len(header) < PYC_HEADER_SIZE or header[:4] != _external.MAGIC_NUMBER or header[4:8] != bytes(4):
        return False
    mtime = int.from_bytes(header[8:12], "little")
    size = int.from_bytes(header[12:16], "little")
    return mtime == (int(st.st_mtime) & 0xFFFFFFFF) and size == (st.st_size & 0xFFFFFFFF)


def pyc_matches(pyc_path: str, source_stat: os.stat_result) -> bool:
    """Whether CPython would have used this pyc for the source (then it ran instead of the source)."""
    try:
        header = read_file(pyc_path, PYC_HEADER_SIZE)
    except OSError:
        return False
    return pyc_header_current(header, source_stat)
