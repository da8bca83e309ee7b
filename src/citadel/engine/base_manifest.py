"""Build the engine manifest: every file of the engine's trusted base, hashed (docs/measurement.md).

Run by ``boot.py`` (first start, or ``CITADEL_REBUILD=1``) as a separate process of the engine's
own interpreter, ``python -I -S -B base_manifest.py ...``, so whatever code building it needs never
runs inside the engine. The engine then checks every file it loads against the result, and the
result's SHA-256 goes into the measurement: a wrong manifest cannot make a changed engine look
unchanged, it can only change the measurement.

Two files come out. The manifest (measured) names each file by ``<root>/<path below the root>``,
so it does not depend on where Python or Citadel are installed. The cache file (not measured)
says where each root is on this host and records the stat identity of native files, which the
sim-mode check compares (trusted_import.py). Stdlib only; runs on Python 3.9.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import os
import sys
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

# The interpreter's own import path under -I -S, before anything is added to it: the stdlib dirs.
STDLIB_PATH = [p for p in sys.path if p]

if __package__ in (None, ""):  # run as a script by boot.py: import the parser from beside us
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from citadel.engine.trusted_base import (  # noqa: E402
    CACHE_HEADER,
    ELF_MAGIC,
    IMPORT_PREFIX,
    MANIFEST_HEADER,
    mapped_files,
    parse_manifest,
    stat_identity,
)

# Parts of the standard library the engine never runs: tests, GUIs, installers, other packages.
STDLIB_EXCLUDED_DIRS = frozenset({
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "dist-packages",
    "__pycache__",
})
STDLIB_EXCLUDED_DIR_PATTERNS = ("config-*",)
STDLIB_EXCLUDED_EXTENSIONS = ("_test*", "_ctypes_test*", "_xxtestfuzz*", "xxlimited*", "xxsubtype*", "_tkinter*")

# The engine-safe part of the citadel package (DESIGN.md): what the engine itself may import.
CITADEL_FILES = (
    "citadel/__init__.py",
    "citadel/errors.py",
    "citadel/crypto.py",
    "citadel/seal/__init__.py",
    "citadel/seal/format.py",
    "citadel/seal/image.py",
    "citadel/seal/regions.py",
    "citadel/seal/keytext.py",
    "citadel/attest/__init__.py",
    "citadel/attest/evidence.py",
    # the CAS flow (imported only when the engine attests): the client, binding, sim evidence, and
    # hw evidence collection with the TPM container it builds
    "citadel/attest/client.py",
    "citadel/attest/volume_client.py",
    "citadel/attest/binding.py",
    "citadel/attest/sim.py",
    "citadel/attest/collect/*.py",
    "citadel/attest/tpm/__init__.py",
    "citadel/attest/tpm/container.py",
    "citadel/attest/tpm/layouts.py",
    "citadel/engine/*.py",
    "citadel/volume/*.py",  # encrypted volumes (imported only when a run mounts one)
)

Entry = Tuple[str, str]  # (key, host path)
EXIT_REPORTED = 70  # the builder printed its two lines; the engine adds nothing and exits with it


class BuildError(Exception):
    """The trusted base cannot be assembled (e.g. cryptography is missing): a cause and a remedy."""

    def __init__(self, cause: str, remedy: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.remedy = remedy or "check this Python installation, then run `citadel measure --rebuild`"


def _extension_suffixes() -> List[str]:
    import importlib.machinery

    return list(importlib.machinery.EXTENSION_SUFFIXES)


def _valid_pyc(pyc: str, source: str) -> bool:
    """Only timestamp pycs that CPython would use for this source (see trusted_import)."""
    from citadel.engine.trusted_base import pyc_matches

    try:
        return pyc_matches(pyc, os.stat(source))
    except OSError:
        return False


def _python_files(root: str, root_dir: str, rel_dir: str, suffixes: Sequence[str],
                  skip_dir: Optional[Callable[[str], bool]] = None,
                  skip_ext: Optional[Callable[[str], bool]] = None) -> Iterator[Entry]:
    """Source, current non-optimized pyc and extension files below root_dir/rel_dir, as entries."""
    tag = sys.implementation.cache_tag
    top = os.path.join(root_dir, rel_dir) if rel_dir else root_dir
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, root_dir).replace(os.sep, "/")
        rel = "" if rel == "." else rel + "/"
        dirnames[:] = sorted(d for d in dirnames if not (skip_dir and skip_dir(d)))
        for name in sorted(filenames):
            host = os.path.join(dirpath, name)
            if name.endswith(".py"):
                yield f"{root}/{rel}{name}", host
                pyc = os.path.join(dirpath, "__pycache__", f"{name[:-3]}.{tag}.pyc")
                if tag and _valid_pyc(pyc, host):
                    yield f"{root}/{rel}__pycache__/{name[:-3]}.{tag}.pyc", pyc
            elif any(name.endswith(s) for s in suffixes) and not (skip_ext and skip_ext(name)):
                yield f"{root}/{rel}{name}", host


def _stdlib_skip_dir(name: str) -> bool:
    return name in STDLIB_EXCLUDED_DIRS or any(fnmatch.fnmatchcase(name, p) for p in STDLIB_EXCLUDED_DIR_PATTERNS)


def _stdlib_skip_ext(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in STDLIB_EXCLUDED_EXTENSIONS)


def site_dirs() -> List[str]:
    """The site-packages directories `site` would add for this interpreter (a venv's included).

    The engine runs with -S, so ``sys.prefix`` is the base installation's even in a venv; this
    repeats site.venv()'s reading of pyvenv.cfg without running any .pth file.
    """
    import site

    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    prefix = os.path.dirname(exe_dir)
    for conf in (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(prefix, "pyvenv.cfg")):
        if not os.path.isfile(conf):
            continue
        system_site = False
        with open(conf, encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.partition("=")
                if sep and key.strip().lower() == "include-system-site-packages":
                    system_site = value.strip().lower() == "true"
        sys.prefix = sys.exec_prefix = prefix  # as site.venv() does (this is the builder's own process)
        dirs = site.getsitepackages([prefix])  # what site.venv() adds, for this interpreter's layout
        if system_site:
            dirs += site.getsitepackages()
        return list(dict.fromkeys(dirs))
    return list(site.getsitepackages())


def _find_in_site(name: str, suffixes: Sequence[str]) -> Tuple[str, str]:
    """(directory holding it, file or package dir) of a package or extension module on site dirs."""
    candidates = site_dirs()
    for directory in candidates:
        package = os.path.join(directory, name)
        if os.path.isfile(os.path.join(package, "__init__.py")):
            return os.path.realpath(directory), package
        for suffix in suffixes:
            if os.path.isfile(package + suffix):
                return os.path.realpath(directory), package + suffix
    raise BuildError(f"{name} is not installed for {sys.executable} (looked in {', '.join(candidates) or 'nothing'})",
                     f"install it for that interpreter: {sys.executable} -m pip install cryptography")


def collect(citadel_parent: str) -> Tuple[Dict[str, str], List[str], List[Entry], List[str]]:
    """(roots, import path, entries, extension module names) of this interpreter's trusted base."""
    import sysconfig

    suffixes = _extension_suffixes()
    exe = os.path.realpath(sys.executable)
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    roots: Dict[str, str] = {"exe": os.path.dirname(exe), "stdlib": stdlib}
    entries: List[Entry] = [("exe/" + os.path.basename(exe), exe)]
    import_path: List[str] = []
    for number, directory in enumerate(d for d in STDLIB_PATH if os.path.isdir(d)):
        directory = os.path.realpath(directory)
        if directory == stdlib or directory.startswith(stdlib + os.sep):
            rel = os.path.relpath(directory, stdlib).replace(os.sep, "/")
            import_path.append("stdlib/" if rel == "." else f"stdlib/{rel}/")
        else:  # a standard-library directory outside the stdlib tree (other layouts, e.g. PyPy)
            name = f"stdlib-{number}"
            roots[name] = directory
            import_path.append(name + "/")
            entries += _python_files(name, directory, "", suffixes, _stdlib_skip_dir, _stdlib_skip_ext)
    entries += _python_files("stdlib", stdlib, "", suffixes, _stdlib_skip_dir, _stdlib_skip_ext)

    crypto_dir, crypto_pkg = _find_in_site("cryptography", suffixes)
    roots["cryptography"] = crypto_dir
    entries += _python_files("cryptography", crypto_dir, "cryptography", suffixes)
    import_path.append("cryptography/")
    if "_cffi_backend" not in sys.builtin_module_names:  # PyPy has it built in
        try:
            cffi_dir, cffi_file = _find_in_site("_cffi_backend", suffixes)
        except BuildError:
            cffi_file = ""  # cryptography versions that do not use it; if one does, importing it is refused
        if cffi_file:
            roots["cffi"] = cffi_dir
            entries.append(("cffi/" + os.path.basename(cffi_file), cffi_file))
            import_path.append("cffi/")

    parent = os.path.realpath(citadel_parent)
    roots["citadel"] = parent
    _ensure_bytecode(parent)
    for key, host in _python_files("citadel", parent, "citadel", suffixes):
        rel = key.split("/", 1)[1]
        source_rel = _source_of(rel)
        if any(fnmatch.fnmatchcase(source_rel, p) for p in CITADEL_FILES):
            entries.append((key, host))
    import_path.append("citadel/")

    modules = []
    for key, _host in entries:
        module = _extension_module_name(key, import_path, suffixes)
        if module:
            modules.append(module)
    return roots, import_path, entries, modules


def _ensure_bytecode(parent: str) -> None:
    """Write the current pyc of every engine-safe citadel module that lacks one, before hashing.

    Otherwise the first process that imports such a module after the manifest was built (the
    launcher does, for one) writes a pyc the manifest does not list, and the next engine refuses
    to load it (a fresh editable install has no bytecode at all). A pyc that is current is never
    rewritten by Python, so the one recorded here stays. A read-only installation is left as it is.
    """
    import glob
    import py_compile
    from importlib.util import cache_from_source

    for pattern in CITADEL_FILES:
        for source in sorted(glob.glob(os.path.join(parent, *pattern.split("/")))):
            pyc = cache_from_source(source)
            if _valid_pyc(pyc, source):
                continue
            try:
                py_compile.compile(source, cfile=pyc, doraise=True)
            except (OSError, py_compile.PyCompileError):
                continue  # no bytecode for it: the source is hashed and compiled in memory


def _source_of(rel: str) -> str:
    """citadel/x/__pycache__/y.tag.pyc -> citadel/x/y.py (pycs follow their source's inclusion)."""
    head, _, name = rel.rpartition("/__pycache__/")
    if not _:
        return rel
    return f"{head}/{name.split('.', 1)[0]}.py"


def _extension_module_name(key: str, import_path: Sequence[str], suffixes: Sequence[str]) -> Optional[str]:
    suffix = next((s for s in suffixes if key.endswith(s)), None)
    if suffix is None:
        return None
    for directory in sorted(import_path, key=len, reverse=True):
        if key.startswith(directory):
            return key[len(directory):-len(suffix)].replace("/", ".")
    return None


def load_for_dependencies(roots: Dict[str, str], modules: Sequence[str]) -> None:
    """Import every trusted extension module here, so the system libraries they need get mapped."""
    for root in ("cryptography", "cffi"):
        if root in roots and roots[root] not in sys.path:
            sys.path.append(roots[root])
    for name in modules:
        try:
            importlib.import_module(name)
        except (ImportError, OSError):
            continue  # it cannot load here either in the engine; the engine refuses it if it tries


def native_dependencies(roots: Dict[str, str], entries: List[Entry]) -> Tuple[Dict[str, str], List[Entry]]:
    """(extra roots, entries) for libpython and the system libraries mapped into this process."""
    known = {os.path.realpath(host) for _key, host in entries}
    extra_roots: Dict[str, str] = {}
    extra: List[Entry] = []
    for path in mapped_files():
        if path in known or not _is_elf(path):
            continue
        known.add(path)
        name = os.path.basename(path)
        if name.startswith("libpython"):
            extra_roots["libpython"] = os.path.dirname(path)
            extra.append(("libpython/" + name, path))
        else:
            extra_roots["system"] = "/"
            extra.append(("system" + path, path))
    return extra_roots, extra


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


def _hash_file(path: str) -> Tuple[str, int, os.stat_result]:
    """(sha256 hex, bytes hashed, stat before reading) of one file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size, before


def render(import_path: Sequence[str], entries: Sequence[Entry], roots: Dict[str, str]) -> Tuple[str, str]:
    """(manifest text, cache text) for these entries; hashes every file."""
    lines = [MANIFEST_HEADER, IMPORT_PREFIX + " ".join(import_path)]
    stats: List[str] = []
    for key, host in sorted(set(entries)):
        if "\n" in key or "\t" in key or not key.isprintable():
            raise BuildError(f"the file name {host!r} cannot be written in the engine manifest")
        digest, size, before = _hash_file(host)
        lines.append(f"{digest} {size} {key}")
        if not key.endswith((".py", ".pyc")):
            stats.append("\t".join(["stat", key] + [str(v) for v in stat_identity(before)]))
    manifest = "\n".join(lines) + "\n"
    parse_manifest(manifest)  # what we write, we can read
    cache = [CACHE_HEADER, f"python\t{sys.executable}",
             f"manifest-sha256\t{hashlib.sha256(manifest.encode()).hexdigest()}"]
    cache += [f"root\t{name}\t{directory}" for name, directory in sorted(roots.items())]
    return manifest, "\n".join(cache + stats) + "\n"


def build(citadel_parent: str) -> Tuple[str, str]:
    """The manifest and cache texts for this interpreter and the citadel package in citadel_parent."""
    roots, import_path, entries, modules = collect(citadel_parent)
    load_for_dependencies(roots, modules)
    extra_roots, extra = native_dependencies(roots, entries)
    roots.update(extra_roots)
    for name, directory in roots.items():
        if "\t" in directory or "\n" in directory:
            raise BuildError(f"the directory {directory!r} ({name}) has a tab or newline in its name")
    return render(import_path, entries + extra, roots)


def write_atomically(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: Sequence[str]) -> int:
    """``base_manifest.py CITADEL_PARENT MANIFEST_OUT CACHE_OUT``: build and write both files."""
    if len(argv) != 3:
        print("usage: base_manifest.py CITADEL_PARENT MANIFEST_OUT CACHE_OUT", file=sys.stderr)
        return 2
    try:
        manifest, cache = build(argv[0])
        write_atomically(argv[2], cache)  # cache first: boot reads the manifest, then checks the pair
        write_atomically(argv[1], manifest)
    except BuildError as exc:
        print(f"citadel: error: cannot build the engine manifest: {exc.cause}\ncitadel: hint: {exc.remedy}",
              file=sys.stderr)
        return EXIT_REPORTED
    except OSError as exc:
        print(f"citadel: error: cannot build the engine manifest: {exc.strerror}: {exc.filename}\n"
              "citadel: hint: set CITADEL_CACHE_DIR to a writable directory", file=sys.stderr)
        return EXIT_REPORTED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
