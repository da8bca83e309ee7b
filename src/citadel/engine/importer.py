"""Import sealed code: a path hook that serves modules from the image like CPython's FileFinder.

The image's directories go on ``sys.path`` as their real host paths, mirroring CPython: the
directory of the script being run (the "entry directory") first, like the script directory of
``python app.py``, and each python-path tree of the manifest (a sealed site-packages) after the
standard library, like site-packages. A path hook placed ahead of CPython's claims every path
inside the image and answers with a :class:`SealedPathFinder`, so packages, namespace packages,
relative imports, ``pkgutil.iter_modules``, ``importlib.resources`` and ``importlib.metadata``
behave as they do unsealed. A finder only serves files the manifest lists (encrypted or
authenticated), reading them through ``SealedImage.read``, which verifies every byte;
code in the unprotected region is refused with an ImportError that says so. Nothing is ever
written: ``sys.dont_write_bytecode`` is set, and compiled code stays in memory.

Source is compiled with the host path as its file name, so tracebacks and ``linecache``
show real source lines (read through the file shield). A sealed ``__pycache__/NAME.TAG.pyc``
beside a sealed source is used when it is valid for this interpreter and matches the source
(size for timestamp pycs, SipHash for checked hash-based pycs), sparing the compile.
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import _imp
import importlib.machinery
import importlib.util
import marshal
import os
import posixpath
import struct
import sys
import types
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Tuple, Type, cast

from citadel.engine.extensions import ImageExtensionLoader, ImageLibraries
from citadel.errors import EngineError
from citadel.seal.format import UNPROTECTED
from citadel.seal.image import SealedImage

# A .pyc header: magic, flags, then (source mtime, source size) or an 8-byte source hash (PEP 552).
PYC_HEADER = struct.Struct("<4sI8s")
PYC_TIMESTAMP = struct.Struct("<II")
PYC_FLAG_HASH_BASED = 0b01
PYC_FLAG_CHECK_SOURCE = 0b10


def _join(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


class ImageCode:
    """What every finder of one image shares: the image, its libraries, cached directory listings."""

    def __init__(self, image: SealedImage) -> None:
        self.image = image
        self.libraries = ImageLibraries(image)
        self._names: Dict[str, FrozenSet[str]] = {}
        self._unsealed: Dict[str, FrozenSet[str]] = {}
        tag = sys.implementation.cache_tag
        opt = f".opt-{sys.flags.optimize}" if sys.flags.optimize else ""
        self.pyc_suffix = f".{tag}{opt}.pyc" if tag else None

    def names(self, rel_dir: str) -> FrozenSet[str]:
        """Names the manifest holds directly below ``rel_dir`` (cached: the image never changes)."""
        names = self._names.get(rel_dir)
        if names is None:
            names = self._names[rel_dir] = frozenset(self.image.listdir(rel_dir))
        return names

    def unsealed(self, rel_dir: str) -> FrozenSet[str]:
        """Names on disk in ``rel_dir`` that the manifest does not hold (unprotected, or added).

        Listed once per directory, only to explain a refusal; nothing is ever loaded from these.
        """
        names = self._unsealed.get(rel_dir)
        if names is None:
            try:
                on_disk = frozenset(os.listdir(self.image.host_path(rel_dir)))
            except OSError:
                on_disk = frozenset()
            names = self._unsealed[rel_dir] = on_disk - self.names(rel_dir)
        return names

    def cached_bytecode(self, relpath: str) -> Optional[str]:
        """The sealed __pycache__ file for the source ``relpath``, if the image has one."""
        if self.pyc_suffix is None:
            return None
        rel_dir, _, filename = relpath.rpartition("/")
        cache_dir = _join(rel_dir, "__pycache__")
        name = filename.rpartition(".")[0] + self.pyc_suffix
        return _join(cache_dir, name) if name in self.names(cache_dir) else None


class SealedModuleSpec(importlib.machinery.ModuleSpec):
    """A spec whose ``cached`` is always None: sealed code is never cached on the host's disk."""

    @property
    def cached(self) -> None:
        return None

    @cached.setter
    def cached(self, value: object) -> None:
        pass


class _SealedLoader:
    """Common part of the source and bytecode loaders.

    ``exec_module`` is importlib's own (the one every file loader uses), so the import machinery
    trims its frames from tracebacks exactly as it does unsealed. No importlib.abc base: importing
    it costs the engine ~20 ms of start-up (it pulls in importlib.resources).
    """

    exec_module = importlib.machinery.SourcelessFileLoader.exec_module

    def __init__(self, code: ImageCode, fullname: str, relpath: str) -> None:
        self._code = code
        self.name = fullname
        self.relpath = relpath
        self.path = code.image.host_path(relpath)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__cached__ = None  # type: ignore[attr-defined]
        return module

    def get_filename(self, fullname: str) -> str:
        return self.path

    def is_package(self, fullname: str) -> bool:
        return posixpath.basename(self.relpath).partition(".")[0] == "__init__"

    def get_data(self, path: str) -> bytes:
        """Verified bytes of a sealed file (pkgutil.get_data); other files are read as usual."""
        rel = self._code.image.relpath(path)
        if rel is not None and self._code.image.entry(rel) is not None:
            return self._code.image.read(rel)
        if rel is not None and self._code.image.region_of(rel) != UNPROTECTED:
            raise FileNotFoundError(2, "not a file of the sealed image", path)
        with open(path, "rb") as fh:
            return fh.read()

    def get_resource_reader(self, fullname: str) -> object:
        try:
            from importlib.readers import FileReader
        except ImportError:  # Python 3.9: importlib.resources falls back to the module's directory
            return None
        return FileReader(cast(Any, self))


class SealedSourceLoader(_SealedLoader):
    """A sealed ``.py``: compiled in memory (or taken from a matching sealed __pycache__ file)."""

    def get_source(self, fullname: str) -> str:
        return importlib.util.decode_source(self._code.image.read(self.relpath))

    def get_code(self, fullname: str) -> types.CodeType:
        pyc = self._code.cached_bytecode(self.relpath)
        if pyc is not None:
            code = self._cached_code(pyc)
            if code is not None:
                return code
        source = self._code.image.read(self.relpath)
        return compile(source, self.path, "exec", dont_inherit=True)

    def _cached_code(self, pyc: str) -> Optional[types.CodeType]:
        """Code from a sealed pyc if it is for this interpreter and matches the source, else None."""
        data = self._code.image.read(pyc)
        if len(data) < PYC_HEADER.size:
            return None
        magic, flags, check = PYC_HEADER.unpack_from(data)
        if magic != importlib.util.MAGIC_NUMBER or flags & ~(PYC_FLAG_HASH_BASED | PYC_FLAG_CHECK_SOURCE):
            return None
        if flags & PYC_FLAG_HASH_BASED:
            # as CPython: checked hash pycs are checked unless --check-hash-based-pycs never
            mode = getattr(_imp, "check_hash_based_pycs", "default")
            if mode == "always" or (mode == "default" and flags & PYC_FLAG_CHECK_SOURCE):
                source_hash = getattr(_imp, "source_hash", None)
                if source_hash is None:
                    return None
                raw_magic = int.from_bytes(importlib.util.MAGIC_NUMBER, "little")
                if source_hash(raw_magic, self._code.image.read(self.relpath)) != check:
                    return None
        else:
            # the sealer keeps no mtimes, so a timestamp pyc is matched by the source size it records
            entry = self._code.image.entry(self.relpath)
            if entry is None or PYC_TIMESTAMP.unpack(check)[1] != entry.size & 0xFFFFFFFF:
                return None
        try:
            code = marshal.loads(data[PYC_HEADER.size :])
        except (ValueError, EOFError, TypeError):
            return None
        if not isinstance(code, types.CodeType):
            return None
        fix_filename = getattr(_imp, "_fix_co_filename", None)
        if fix_filename is not None:
            fix_filename(code, self.path)
        return code


class SealedBytecodeLoader(_SealedLoader):
    """A sealed sourceless ``.pyc`` (what CPython's SourcelessFileLoader serves)."""

    def get_source(self, fullname: str) -> None:
        return None

    def get_code(self, fullname: str) -> types.CodeType:
        data = self._code.image.read(self.relpath)
        magic = data[:4]
        if magic != importlib.util.MAGIC_NUMBER:
            raise ImportError(f"bad magic number in {fullname!r}: {magic!r}", name=fullname, path=self.path)
        if len(data) < PYC_HEADER.size:
            raise ImportError(f"bytecode of {fullname!r} is truncated", name=fullname, path=self.path)
        code = marshal.loads(data[PYC_HEADER.size :])
        if not isinstance(code, types.CodeType):
            raise ImportError(f"non-code object in {self.path!r}", name=fullname, path=self.path)
        return code


_LoaderKind = Tuple[str, str]  # (suffix, kind) with kind in "extension", "source", "bytecode"


def _suffix_order() -> List[_LoaderKind]:
    """CPython's FileFinder order: extension modules, then source, then bytecode."""
    order: List[_LoaderKind] = [(s, "extension") for s in importlib.machinery.EXTENSION_SUFFIXES]
    order += [(s, "source") for s in importlib.machinery.SOURCE_SUFFIXES]
    order += [(s, "bytecode") for s in importlib.machinery.BYTECODE_SUFFIXES]
    return order


_LOADERS: Dict[str, Type[_SealedLoader]] = {"source": SealedSourceLoader, "bytecode": SealedBytecodeLoader}


class SealedPathFinder:
    """The path entry finder for one directory of the image (what FileFinder is for a real one)."""

    def __init__(self, code: ImageCode, rel_dir: str) -> None:
        self._code = code
        self.rel_dir = rel_dir
        self.path = code.image.host_path(rel_dir)
        self._order = _suffix_order()

    def __repr__(self) -> str:
        return f"SealedPathFinder({self.path!r})"

    def invalidate_caches(self) -> None:
        """Nothing to do: the sealed image cannot change while the engine runs."""

    def find_spec(self, fullname: str, target: Optional[types.ModuleType] = None
                  ) -> Optional[importlib.machinery.ModuleSpec]:
        tail = fullname.rpartition(".")[2]
        image, names = self._code.image, self._code.names(self.rel_dir)
        namespace: Optional[str] = None
        if tail in names:
            package = _join(self.rel_dir, tail)
            if image.is_dir(package):
                package_names = self._code.names(package)
                for suffix, kind in self._order:
                    if "__init__" + suffix in package_names:
                        return self._spec(fullname, _join(package, "__init__" + suffix), kind, package)
                self._refuse_unsealed(fullname, package, ["__init__" + s for s, _ in self._order])
                namespace = package
        for suffix, kind in self._order:
            if tail + suffix in names:
                return self._spec(fullname, _join(self.rel_dir, tail + suffix), kind, None)
        self._refuse_unsealed(fullname, self.rel_dir, [tail + s for s, _ in self._order])
        if namespace is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, None)
        spec.submodule_search_locations = [image.host_path(namespace)]
        return spec

    def _spec(self, fullname: str, relpath: str, kind: str, package: Optional[str]
              ) -> importlib.machinery.ModuleSpec:
        image = self._code.image
        loader: object
        if kind == "extension":
            loader = ImageExtensionLoader(image, self._code.libraries, fullname, relpath)
        else:
            loader = _LOADERS[kind](self._code, fullname, relpath)
        spec = SealedModuleSpec(fullname, cast(Any, loader), origin=image.host_path(relpath),
                                is_package=package is not None)
        spec.has_location = True
        if package is not None:
            spec.submodule_search_locations = [image.host_path(package)]
        return spec

    def _refuse_unsealed(self, fullname: str, rel_dir: str, candidates: List[str]) -> None:
        """An ImportError if code by that name exists on disk but outside the protected regions."""
        unsealed = self._code.unsealed(rel_dir)
        for name in candidates:
            if name in unsealed:
                rel = _join(rel_dir, name)
                unprotected = self._code.image.region_of(rel) == UNPROTECTED
                why = ("is in the image's unprotected region" if unprotected
                       else "is not in the image's manifest (added after sealing)")
                raise ImportError(
                    f"refusing to import {fullname!r}: {rel!r} {why}; the engine imports code only from "
                    "encrypted or authenticated files (re-seal with this file in a protected region)",
                    name=fullname, path=self._code.image.host_path(rel))

    def iter_modules(self, prefix: str = "") -> Iterator[Tuple[str, bool]]:
        """(name, is_package) of the sealed modules here, as pkgutil lists a directory's."""
        suffixes = sorted(importlib.machinery.all_suffixes(), key=len, reverse=True)
        seen = set()
        for name in sorted(self._code.names(self.rel_dir)):
            child = _join(self.rel_dir, name)
            if self._code.image.is_dir(child):
                inits = self._code.names(child)
                modname = name if any("__init__" + s in inits for s in suffixes) else None
                is_package = True
            else:
                modname = next((name[: -len(s)] for s in suffixes if name.endswith(s)), None)
                is_package = False
            if modname and modname != "__init__" and "." not in modname and modname not in seen:
                seen.add(modname)
                yield prefix + modname, is_package


class SealedPathHook:
    """The ``sys.path_hooks`` entry: a SealedPathFinder for directories inside the image."""

    def __init__(self, code: ImageCode) -> None:
        self.code = code

    def __call__(self, path: str) -> SealedPathFinder:
        image = self.code.image
        rel = image.relpath(path) if path else None
        if rel is None:
            raise ImportError("not inside the sealed image", path=path)
        if not (rel == "" or image.is_dir(rel) or os.path.isdir(path)):
            raise ImportError("only directories of the sealed image are path entries", path=path)
        return SealedPathFinder(self.code, rel)


_installed: Optional[SealedPathHook] = None


def install(image: SealedImage, *, entry_dir: Optional[str] = "") -> None:
    """Serve the image's code to ``import``: entry directory first, python-path trees after the stdlib.

    ``entry_dir`` is the image-relative directory of the script being run ("" for the image root),
    or None to add no entry directory (e.g. an interactive console). Installing twice for the same
    image is a no-op; for another image it is an error.
    """
    global _installed
    if _installed is not None:
        if _installed.code.image is image:
            return
        raise EngineError("the sealed importer is already installed for another image",
                          "start a new engine process for each image")
    sys.dont_write_bytecode = True
    hook = SealedPathHook(ImageCode(image))
    sys.path_hooks.insert(0, hook)
    for key in [k for k in sys.path_importer_cache if isinstance(k, str) and image.relpath(k) is not None]:
        del sys.path_importer_cache[key]
    if entry_dir is not None:
        sys.path.insert(0, image.host_path(entry_dir))
    for rel in image.manifest.python_path:
        sys.path.append(image.host_path(rel))
    importlib.invalidate_caches()
    _installed = hook


def installed_libraries() -> List[str]:
    """Image paths of the shared libraries loaded from memfds so far (for diagnostics)."""
    return _installed.code.libraries.loaded() if _installed is not None else []
