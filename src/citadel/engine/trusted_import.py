"""Verified imports of the engine's trusted base: every module checked against the engine manifest.

:class:`TrustedFinder`, a meta-path finder ahead of PathFinder, serves the trusted modules by
name from the manifest alone (no directory scans): Python files are read once, hashed and
compared before they are compiled or unmarshalled (nothing is written); extension modules and
the libraries they map are checked before and after the dynamic linker loads them, from a memfd
of the verified bytes in ``hw`` mode. :class:`HostPathFinder` replaces CPython's FileFinder so
code on host directories that is neither sealed nor in the manifest is refused, never imported.
:func:`install` puts all of it in place and checks post hoc what Python loaded before it.

Loaded by ``bootstrap.py`` (which verifies its bytes first) before any finder is in place, so at
module level it imports only built-in and frozen modules and trusted_base (loaded the same way).
Engine-safe, Python 3.9.
"""

from __future__ import annotations

import _imp
import marshal
import os
import sys

try:
    import _frozen_importlib as _bootstrap
    import _frozen_importlib_external as _external
except ImportError:  # pragma: no cover - interpreters without the frozen aliases
    import importlib._bootstrap as _bootstrap  # type: ignore[no-redef]
    import importlib._bootstrap_external as _external  # type: ignore[no-redef]

from citadel.engine.trusted_base import (
    PYC_HEADER_SIZE,
    TrustedBase,
    fail,
    pyc_header_current,
    unshielded_stat,
    use_error_class,
)

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from types import CodeType, ModuleType
    from typing import Any, Callable, Dict, Iterable, List, Optional

    Hasher = Callable[..., Any]


# --- the finder and its loaders ----------------------------------------------------------------------
_ORIGINAL_CREATE_DYNAMIC = _imp.create_dynamic


class TrustedSourceLoader:
    """A trusted ``.py``: its verified ``.pyc`` from the manifest when current, else compiled source."""

    def __init__(self, base: TrustedBase, fullname: str, source_key: str, pyc_key: Optional[str]) -> None:
        self.base = base
        self.name = fullname
        self.source_key = source_key
        self.pyc_key = pyc_key
        self.path = base.host_path(source_key)

    def create_module(self, spec: object) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(self.get_code(module.__name__), module.__dict__)

    def get_code(self, fullname: str) -> CodeType:
        if self.pyc_key is not None:
            # A rewritten pyc is only a cache miss: the source, checked below, is compiled instead.
            data = self.base.read_if_pinned(self.pyc_key)
            if data is not None and self._pyc_is_current(data):
                code = marshal.loads(memoryview(data)[PYC_HEADER_SIZE:])
                _imp._fix_co_filename(code, self.path)  # type: ignore[attr-defined]
                return code
        source = self.base.read_verified(self.source_key)
        return compile(source, self.path, "exec", dont_inherit=True)

    def _pyc_is_current(self, data: bytes) -> bool:
        """The pyc is for this interpreter and the source beside it was not touched since (as CPython
        checks); a changed source is then read, and refused if its bytes differ from the manifest."""
        try:
            return pyc_header_current(data, unshielded_stat(self.path))
        except OSError:
            return False

    def get_source(self, fullname: str) -> str:
        from importlib.util import decode_source

        return decode_source(self.base.read_verified(self.source_key))

    def is_package(self, fullname: str) -> bool:
        return self.source_key.endswith("/__init__.py")

    def get_filename(self, fullname: str) -> str:
        return self.path

    def get_data(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()


class TrustedExtensionLoader(_external.ExtensionFileLoader):
    """A trusted extension module: checked, then loaded (from a memfd of the verified bytes if strict)."""

    def __init__(self, base: TrustedBase, fullname: str, key: str) -> None:
        super().__init__(fullname, base.host_path(key))
        self.base = base
        self.key = key

    def create_module(self, spec: Any) -> ModuleType:
        if self.base.strict and hasattr(os, "memfd_create"):
            module = _create_from_memfd(spec, self.base.read_verified(self.key))
        elif self.base.strict:  # no memfd in this Python (some PyPy builds): hash, then load by path
            self.base.read_verified(self.key)
            module = _ORIGINAL_CREATE_DYNAMIC(spec)
        else:
            self.base.verify_file(self.key)
            module = _ORIGINAL_CREATE_DYNAMIC(spec)
        if not self.base.defer_mappings:
            self.base.verify_mappings(f"the module {spec.name}", _tolerance)
        return module


_memfds: List[int] = []  # kept open: glibc identifies a loaded library by its path


def _create_from_memfd(spec: Any, data: bytes) -> ModuleType:
    """Create an extension module from verified bytes held in a memfd (hw mode).

    Self-contained on purpose: the extension loader of citadel.engine.extensions imports
    modules that may themselves be extension modules being loaded here. The memfd is sealed
    when fcntl is already loaded (it cannot be imported from inside this loader).
    """
    fd = os.memfd_create(spec.name, getattr(os, "MFD_CLOEXEC", 1) | getattr(os, "MFD_ALLOW_SEALING", 2))
    _memfds.append(fd)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    fcntl = sys.modules.get("fcntl")
    if fcntl is not None and hasattr(fcntl, "F_ADD_SEALS"):
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_SEAL)
    memfd_spec = _bootstrap.ModuleSpec(spec.name, None, origin=f"/proc/self/fd/{fd}")
    module = _ORIGINAL_CREATE_DYNAMIC(memfd_spec)
    module.__file__ = spec.origin
    return module


_tolerance: Optional[Callable[[str], bool]] = None  # set by the guard (sealed or allowed libraries)


def set_mapping_tolerance(tolerate: Optional[Callable[[str], bool]]) -> None:
    global _tolerance
    _tolerance = tolerate


class TrustedFinder:
    """A meta-path finder serving the trusted base's modules by name, from the manifest alone.

    It sits before PathFinder, so a sealed module cannot shadow a module of the measured engine
    (standard library, cryptography, citadel): what the measurement names is what runs.
    """

    def __init__(self, base: TrustedBase) -> None:
        self.base = base
        self._package_dirs: Dict[str, str] = {}
        self._ext_suffixes = list(_imp.extension_suffixes())
        self._pyc_tag = sys.implementation.cache_tag

    def invalidate_caches(self) -> None:
        """Nothing to invalidate: the manifest does not change while the engine runs."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        parent, _, tail = fullname.rpartition(".")
        if parent:
            directory = self._package_dirs.get(parent) or self._preloaded_package_dir(parent)
            if directory is None:
                return None
            dirs: Iterable[str] = (directory,)
        else:
            dirs = self.base.import_path
        entries = self.base.entries
        for directory in dirs:
            stem = directory + tail
            init = stem + "/__init__.py"
            if init in entries:
                pyc = f"{stem}/__pycache__/__init__.{self._pyc_tag}.pyc"
                return self._source_spec(fullname, init, pyc, stem + "/")
            for suffix in self._ext_suffixes:
                if stem + suffix in entries:
                    loader = TrustedExtensionLoader(self.base, fullname, stem + suffix)
                    spec = _bootstrap.ModuleSpec(fullname, loader, origin=loader.path)
                    spec.has_location = True
                    return spec
            if stem + ".py" in entries:
                pyc = f"{directory}__pycache__/{tail}.{self._pyc_tag}.pyc"
                return self._source_spec(fullname, stem + ".py", pyc, None)
        return None

    def _preloaded_package_dir(self, name: str) -> Optional[str]:
        """The manifest directory of a package Python loaded before this finder (encodings, citadel)."""
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None)
        if not origin or not getattr(module, "__path__", None):
            return None
        key = self.base.key_of(origin)
        if key is None or not key.endswith("/__init__.py"):
            return None
        directory = key[: -len("__init__.py")]
        self._package_dirs[name] = directory
        return directory

    def _source_spec(self, fullname: str, source: str, pyc: str, package_dir: Optional[str]) -> object:
        loader = TrustedSourceLoader(self.base, fullname, source, pyc if pyc in self.base.entries else None)
        spec = _bootstrap.ModuleSpec(fullname, loader, origin=loader.path,  # type: ignore[arg-type]
                                     is_package=package_dir is not None)
        spec.has_location = True
        if package_dir is not None:
            self._package_dirs[fullname] = package_dir
            spec.submodule_search_locations = [os.path.dirname(loader.path)]
        if loader.pyc_key is not None:
            spec.cached = self.base.host_path(loader.pyc_key)
        return spec


# --- host directories: never a source of code ----------------------------------------------------------
_unverified: Dict[str, str] = {}  # module name -> a host file that would have served it


class HostPathFinder:
    """The path-entry finder for a host directory: it serves nothing.

    The trusted base is served by TrustedFinder and sealed code by the sealed importer's path hook
    (placed ahead of this one). A module file found here is unverified: it is remembered, so that
    if no later ``sys.path`` entry provides the module, :class:`UnverifiedCodeRefuser` refuses it
    with a clear ImportError instead of a bare "No module named".
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._suffixes = list(_imp.extension_suffixes()) + [".py", ".pyc"]

    def invalidate_caches(self) -> None:
        """Nothing is cached."""

    def find_spec(self, fullname: str, target: object = None) -> None:
        tail = fullname.rpartition(".")[2]
        base = os.path.join(self.path, tail)
        candidates = [os.path.join(base, "__init__" + s) for s in self._suffixes]
        candidates += [base + s for s in self._suffixes]
        for candidate in candidates:
            if os.path.isfile(candidate):
                _unverified.setdefault(fullname, candidate)
                break
        return None


class UnverifiedCodeRefuser:
    """The last meta-path finder: a module found only as unverified host code is refused."""

    def invalidate_caches(self) -> None:
        """Nothing is cached."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        candidate = _unverified.pop(fullname, None)
        if candidate is not None:
            raise ImportError(
                f"refusing to import {fullname!r} from {candidate}: it is neither sealed in the image "
                "nor part of the measured engine (seal it with the application, e.g. `citadel seal "
                "--python-path DIR`)", name=fullname, path=candidate)
        return None


def host_path_hook(path: str) -> HostPathFinder:
    if not path or not os.path.isdir(path):
        raise ImportError("not a directory", path=path)
    return HostPathFinder(path)


# --- installation ----------------------------------------------------------------------------------------
def install(manifest_text: str, cache_text: str, *, sha256: Hasher, manifest_sha256: str,
            boot_path: str) -> TrustedBase:
    """Put the verifying finder in place, then check what Python loaded before it existed.

    Called by bootstrap.py right after it verified this module. Returns the TrustedBase the engine
    keeps (main switches it to strict mode in hw mode).
    """
    base = TrustedBase(manifest_text, cache_text, sha256, manifest_sha256)
    sys.dont_write_bytecode = True
    finder = TrustedFinder(base)
    meta = sys.meta_path
    position = next((i for i, f in enumerate(meta) if getattr(f, "__name__", "") == "PathFinder"), len(meta))
    meta.insert(position, finder)  # type: ignore[arg-type]
    sys.path_hooks[:] = [host_path_hook]
    sys.path_importer_cache.clear()
    meta.append(UnverifiedCodeRefuser())
    boot_key = base.key_of(boot_path)
    if boot_key is None or not boot_key.endswith("/engine/boot.py"):
        raise fail(f"the engine's boot script {boot_path} is not part of the measured engine")
    base.read_verified(boot_key)
    base.verify_loaded_modules()
    base.verify_mappings("the interpreter at start")
    base.defer_mappings = True  # the guard checks what engine start-up loaded, in one pass
    try:
        from citadel.errors import EngineError
    except ImportError as exc:  # citadel.errors is missing from the manifest: a broken build
        raise fail(f"citadel.errors cannot be imported from the measured engine ({exc})") from None
    use_error_class(EngineError)
    return base
