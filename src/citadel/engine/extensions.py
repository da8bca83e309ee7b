"""Load C extension modules and the shared libraries they need from verified bytes, via memfds.

The plaintext of a sealed ``.so`` never reaches a disk: it is streamed from the image into a
sealed memfd, verified chunk by chunk (`memfd.memfd_from_image`), registered with `citadel.engine.libraries`
(so the audit-hook guard lets it load), and handed to the dynamic linker as
``/proc/self/fd/N``. A memfd has no directory, so ``$ORIGIN``/RPATH lookups cannot find the
libraries an extension bundles (numpy.libs/...); instead the loader reads the extension's
DT_NEEDED names, finds those the image itself holds, and loads them first, depth first, with
RTLD_GLOBAL: the dynamic linker then matches each DT_NEEDED name against the soname of a
library already loaded. Names the image does not hold (libc, libm, ...) are left to the
system's linker, after the guard's policy (`libraries.check_dependency`) accepted each of them.

Every memfd stays open for the life of the process: glibc recognises an already-loaded
library by its path, so a reused descriptor number would make a later library alias an
earlier one. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import _imp
import importlib.machinery
import importlib.util
import mmap
import os
import posixpath
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, cast

from citadel.engine import libraries
from citadel.engine.memfd import fd_path, memfd_from_bytes, memfd_from_image

if TYPE_CHECKING:  # importing this module must not need `cryptography`: it may load cryptography itself
    from citadel.seal.image import SealedImage

_open_fds: List[int] = []  # kept open on purpose: see the module docstring
_fds_lock = threading.Lock()


def _loadable_path(fd: int) -> str:
    """Keep ``fd`` open for good and register its /proc path as allowed; returns that path."""
    with _fds_lock:
        _open_fds.append(fd)
    path = fd_path(fd)
    libraries.allow(path)
    return path


def _create_from_fd(spec: importlib.machinery.ModuleSpec, fd: int) -> ModuleType:
    memfd_spec = importlib.machinery.ModuleSpec(spec.name, None, origin=_loadable_path(fd))
    module: ModuleType = _imp.create_dynamic(memfd_spec)
    if spec.origin is not None:
        # single-phase modules get __file__ = the memfd path from the C loader; show the real one
        module.__file__ = spec.origin
    return module


def create_extension_module(spec: importlib.machinery.ModuleSpec, data: bytes) -> ModuleType:
    """Create (not yet execute) the extension module ``spec`` describes, from its verified bytes.

    ``spec.origin`` is the path shown as ``__file__`` (the image path, not the memfd). Dependencies
    must already be loaded. Use in a Loader's ``create_module``, then call
    :func:`exec_extension_module` in its ``exec_module``.
    """
    return _create_from_fd(spec, memfd_from_bytes(posixpath.basename(spec.origin or spec.name), data))


def exec_extension_module(module: ModuleType) -> None:
    """Run a multi-phase extension module's exec slots (a no-op for single-phase modules)."""
    _imp.exec_dynamic(module)


class BytesExtensionLoader:
    """Loader for an extension module whose verified plaintext comes from ``read()``.

    ``path`` is the module's ``__file__``. :meth:`prepare` sees the bytes before the module is
    created (a subclass may check or load dependencies there).
    """

    def __init__(self, fullname: str, path: str, read: Callable[[], bytes]) -> None:
        self.name = fullname
        self.path = path
        self._read = read

    def prepare(self, data: bytes) -> None:
        """Called with the verified bytes before the module is created."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        data = self._read()
        self.prepare(data)
        return create_extension_module(spec, data)

    # importlib's own (runs the module's exec slots), so import tracebacks are trimmed as unsealed
    exec_module: Any = importlib.machinery.ExtensionFileLoader.exec_module

    def get_filename(self, fullname: str) -> str:
        return self.path

    def is_package(self, fullname: str) -> bool:
        stem = posixpath.basename(self.path).partition(".")[0]
        return stem == "__init__"

    def get_code(self, fullname: str) -> None:
        return None

    def get_source(self, fullname: str) -> None:
        return None


def load_extension_from_bytes(spec: importlib.machinery.ModuleSpec, data: bytes) -> ModuleType:
    """Import the extension module ``spec`` describes from verified ``data``; returns the module.

    For the engine's trusted base (stdlib, cryptography) whose bytes the caller has verified.
    ``spec.origin`` becomes ``__file__``; ``spec.loader`` is replaced by a BytesExtensionLoader;
    the module is added to ``sys.modules`` (and removed again if executing it fails).
    Dependencies are left to the system's dynamic linker.
    """
    loader = BytesExtensionLoader(spec.name, spec.origin or spec.name, lambda: data)
    spec.loader = cast(Any, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return sys.modules[spec.name]


def _is_shared_object(name: str) -> bool:
    return name.endswith(".so") or ".so." in name


class ImageLibraries:
    """The shared libraries an image holds, and those of them already loaded into this process."""

    def __init__(self, image: SealedImage) -> None:
        self._image = image
        self._lock = threading.RLock()
        self._by_name: Optional[Dict[str, List[str]]] = None
        self._loaded: Dict[str, object] = {}  # relpath -> ctypes handle
        self._loading: Set[str] = set()

    def _index(self) -> Dict[str, List[str]]:
        if self._by_name is None:
            index: Dict[str, List[str]] = {}
            for rel in self._image.manifest.files:
                name = posixpath.basename(rel)
                if _is_shared_object(name):
                    index.setdefault(name, []).append(rel)
            self._by_name = index
        return self._by_name

    def resolve(self, needed: str, requester: str) -> Optional[str]:
        """The image path of the library DT_NEEDED ``needed`` names, or None if the image has none.

        Exact file names first (auditwheel names a bundled library after its soname); else a file
        whose name extends it (libfoo.so.1 -> libfoo.so.1.2) and whose soname matches. When
        several match, the one nearest the requester in the tree wins.
        """
        index = self._index()
        candidates = list(index.get(needed, ()))
        if not candidates:
            for name, paths in index.items():
                if name.startswith(needed + "."):
                    candidates += [p for p in paths if self._soname(p) == needed]
        if not candidates:
            return None
        return max(sorted(candidates), key=lambda c: len(posixpath.commonpath([c, requester])))

    def verified_memfd(self, relpath: str) -> int:
        """A sealed memfd with the verified plaintext of ``relpath``, after loading its dependencies."""
        from citadel.engine.elf import read_dynamic  # only images with extensions pay for the parser

        fd = memfd_from_image(self._image, relpath)
        try:
            if os.fstat(fd).st_size == 0:  # mmap refuses empty files; the parser names the defect
                needed = read_dynamic(b"", relpath).needed
            else:
                with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                    needed = read_dynamic(mapped, relpath).needed
            self.load_dependencies(relpath, needed)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _soname(self, relpath: str) -> Optional[str]:
        from citadel.engine.elf import read_dynamic

        return read_dynamic(self._image.read(relpath), relpath).soname

    def load_dependencies(self, relpath: str, needed: List[str]) -> None:
        """Load, depth first, every library of the image that the file ``relpath`` names in ``needed``."""
        with self._lock:
            self._loading.add(relpath)
            try:
                for name in needed:
                    dep = self.resolve(name, relpath)
                    if dep is None:
                        libraries.check_dependency(name, relpath)  # the host's linker would load it
                    elif dep not in self._loaded and dep not in self._loading:
                        self._load_library(dep)
            finally:
                self._loading.discard(relpath)

    def _load_library(self, relpath: str) -> None:
        import ctypes  # only images with bundled libraries pay for ctypes

        path = _loadable_path(self.verified_memfd(relpath))
        try:
            self._loaded[relpath] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise ImportError(f"cannot load the sealed library {relpath!r}: {exc}", path=relpath) from None

    def loaded(self) -> List[str]:
        """Image paths of the libraries loaded so far, in load order."""
        return list(self._loaded)


class ImageExtensionLoader(BytesExtensionLoader):
    """Loader for an extension module sealed in the image: verified, bundled libraries first, memfd."""

    def __init__(self, image: SealedImage, libs: ImageLibraries, fullname: str, relpath: str) -> None:
        super().__init__(fullname, image.host_path(relpath), lambda: image.read(relpath))
        self.relpath = relpath
        self._libs = libs

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return _create_from_fd(spec, self._libs.verified_memfd(self.relpath))

