"""Find the host libraries that sealed shared objects need, to seal them too (owner side).

A sealed C extension names the libraries it needs (DT_NEEDED). The engine loads those the image
holds from verified memfds (engine/extensions.py); anything else would come from the host's disk,
unverified, and the engine's guard refuses it. So the sealer bundles them: for every sealed ELF
shared object, every needed name that

- the image does not already satisfy (the engine's own rule, `ImageLibraries.resolve`: a sealed
  file with exactly that name, or a sealed file whose name extends it, ``libfoo.so.1`` ->
  ``libfoo.so.1.2``, and whose soname is that name), and
- is not in :data:`BASE_LIBRARIES` (what the engine's interpreter always has mapped),

is looked up on the sealing machine the way its dynamic linker would (``LD_LIBRARY_PATH``, then
``ldconfig -p``, then the standard directories), and its real file is sealed at
``.citadel/native/<name>``, recursively (a bundled library's own needs too). The engine's loader
then finds it by name like any other library of the image.

Planning reads only the ELF headers and dynamic sections (citadel.engine.elf), never whole files.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import re
import shutil
import subprocess
import sysconfig
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

from citadel.engine.elf import (
    EI_CLASS,
    EI_DATA,
    ELF64_EHDR,
    ELF_MAGIC,
    ELFCLASS64,
    ELFDATA2LSB,
    Elf64Header,
    MalformedElf,
    read_dynamic,
)
from citadel.seal.format import AUTHENTICATED, UNPROTECTED
from citadel.seal.regions import Rule, matches

#: where bundled libraries go in the image
NATIVE_DIR = ".citadel/native"

#: The one list of libraries never bundled: glibc's core, which the engine's interpreter itself
#: always has mapped (bundling a second copy of libc or the dynamic linker cannot work), and the
#: kernel's vDSO. The running interpreter's shared libpython is added by base_libraries().
BASE_LIBRARIES: FrozenSet[str] = frozenset({
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "linux-vdso.so.1",
})

#: standard directories, searched after ldconfig's cache; "{multiarch}" is sysconfig's MULTIARCH
DEFAULT_DIRS = ("/lib/{multiarch}", "/usr/lib/{multiarch}", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
LDCONFIG_PATHS = ("/sbin/ldconfig", "/usr/sbin/ldconfig")
LDCONFIG_TIMEOUT = 30.0
# "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1"
_LDCONFIG_LINE = re.compile(r"^\s+(\S+)\s+\(([^)]*)\)\s+=>\s+(\S.*?)\s*$")


def interpreter_libraries() -> FrozenSet[str]:
    """The running interpreter's libpython names when it is a shared build, else nothing."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return frozenset()
    names = (sysconfig.get_config_var("INSTSONAME"), sysconfig.get_config_var("LDLIBRARY"))
    return frozenset(n for n in names if isinstance(n, str) and n)


def base_libraries() -> FrozenSet[str]:
    """Needed names never bundled: BASE_LIBRARIES plus the interpreter's shared libpython."""
    return BASE_LIBRARIES | interpreter_libraries()


def is_shared_object(name: str) -> bool:
    """A file name the engine's loader indexes as a library (exactly its rule)."""
    return name.endswith(".so") or ".so." in name


# --- the search, as the sealing machine's dynamic linker would do it ---------------------------
def parse_ldconfig(text: str) -> Dict[str, List[str]]:
    """``ldconfig -p`` output -> library name -> paths, in listing order (the linker's preference).

    Lines that are not entries (the "N libs found" header) are ignored. Architecture flags are not
    interpreted: the search checks each candidate's ELF header instead.
    """
    cache: Dict[str, List[str]] = {}
    for line in text.splitlines():
        found = _LDCONFIG_LINE.match(line)
        if found:
            cache.setdefault(found.group(1), []).append(found.group(3))
    return cache


def default_dirs(multiarch: Optional[str]) -> List[str]:
    """The standard library directories for this machine's multiarch tuple (if it has one)."""
    return [d.format(multiarch=multiarch) for d in DEFAULT_DIRS if multiarch or "{" not in d]


@dataclass(frozen=True)
class LibrarySearch:
    """Where the sealing machine's dynamic linker would find a library by name."""

    env_dirs: Tuple[str, ...] = ()  # LD_LIBRARY_PATH
    cache: Mapping[str, Sequence[str]] = field(default_factory=dict)  # ldconfig -p
    dirs: Tuple[str, ...] = ()  # the standard directories

    @classmethod
    def from_host(cls) -> LibrarySearch:
        env = os.environ.get("LD_LIBRARY_PATH", "")
        return cls(
            env_dirs=tuple(d for d in re.split(r"[:;]", env) if d),
            cache=read_ldconfig_cache(),
            dirs=tuple(default_dirs(sysconfig.get_config_var("MULTIARCH"))),
        )

    def candidates(self, name: str) -> List[str]:
        """Paths to try for ``name``, in order, duplicates removed (pure: no file is touched)."""
        paths = [os.path.join(d, name) for d in self.env_dirs]
        paths += list(self.cache.get(name, ()))
        paths += [os.path.join(d, name) for d in self.dirs]
        return list(dict.fromkeys(paths))

    def find(self, name: str, machine: int) -> Optional[str]:
        """The first candidate that is a 64-bit little-endian ELF file for ``machine``, else None."""
        for path in self.candidates(name):
            if os.path.isfile(path) and elf_machine(path) == machine:
                return path
        return None


def read_ldconfig_cache() -> Dict[str, List[str]]:
    """The dynamic linker's cache as ``ldconfig -p`` lists it; empty if there is none (musl, ...)."""
    exe = shutil.which("ldconfig") or next((p for p in LDCONFIG_PATHS if os.access(p, os.X_OK)), None)
    if exe is None:
        return {}
    try:
        done = subprocess.run(
            [exe, "-p"],
            capture_output=True,
            timeout=LDCONFIG_TIMEOUT,
            env={"LC_ALL": "C", "PATH": os.defpath},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    return parse_ldconfig(done.stdout.decode("utf-8", "replace"))


# --- reading ELF files -------------------------------------------------------------------------
@dataclass(frozen=True)
class ElfFacts:
    machine: int  # e_machine
    soname: Optional[str]
    needed: List[str]


def elf_machine(path: str) -> Optional[int]:
    """e_machine of a 64-bit little-endian ELF file, else None (not ELF, other class, unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(ELF64_EHDR.size)
    except OSError:
        return None
    if len(head) < ELF64_EHDR.size:
        return None
    header = Elf64Header(*ELF64_EHDR.unpack(head))
    if header.e_ident[:4] != ELF_MAGIC:
        return None
    if header.e_ident[EI_CLASS] != ELFCLASS64 or header.e_ident[EI_DATA] != ELFDATA2LSB:
        return None
    return header.e_machine


def read_elf(path: str, label: str) -> Optional[ElfFacts]:
    """Machine, soname and needed names of the file at ``path``; None if it is not an ELF file.

    Raises MalformedElf for an ELF file the engine could not load (32-bit, big-endian, damaged)
    and OSError if it cannot be read.
    """
    with open(path, "rb") as fh:
        if fh.read(4) != ELF_MAGIC:
            return None
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            dynamic = read_dynamic(mapped, label)
            machine = Elf64Header(*ELF64_EHDR.unpack_from(mapped, 0)).e_machine
    return ElfFacts(machine, dynamic.soname, list(dynamic.needed))


# --- the plan ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SealedObject:
    """A file the image will hold (input to planning)."""

    rel: str  # image path
    host: str  # file to read
    region: str


@dataclass
class BundledLibrary:
    """A host library to seal at ``rel``."""

    name: str  # the needed name, also the file name under .citadel/native/
    rel: str
    host: str  # the real file sealed (symlinks resolved)
    found: str  # the path the search found (ldconfig's entry or a directory's)
    region: str
    size: int
    soname: Optional[str]
    needed_by: List[str] = field(default_factory=list)  # image paths


@dataclass(frozen=True)
class NotBundled:
    """A needed library that will not be in the image: the engine will refuse what needs it."""

    name: str
    needed_by: str  # the first image path that needs it
    reason: str


@dataclass
class NativePlan:
    libraries: List[BundledLibrary] = field(default_factory=list)
    missing: List[NotBundled] = field(default_factory=list)
    unreadable: List[Tuple[str, str]] = field(default_factory=list)  # (image path, why) of sealed .so files
    skipped: List[str] = field(default_factory=list)  # names left out by --skip


def native_region(rel: str, rules: Sequence[Rule]) -> str:
    """The region of a bundled library: authenticated unless a rule matching its path says otherwise.

    Public libraries need integrity, not secrecy; ``--encrypt .citadel/native`` encrypts them.
    """
    region = AUTHENTICATED
    for pattern, rule_region in rules:
        if matches(pattern, rel):
            region = rule_region
    return region


def plan_native(
    objects: Sequence[SealedObject],
    *,
    rules: Sequence[Rule] = (),
    skip: Sequence[str] = (),
    search: Optional[LibrarySearch] = None,
    base: Optional[FrozenSet[str]] = None,
) -> NativePlan:
    """Which host libraries the protected shared objects among ``objects`` need the image to hold."""
    planner = _Planner(objects, rules, skip, LibrarySearch.from_host() if search is None else search,
                       base_libraries() if base is None else base)
    return planner.run()


class _Planner:
    def __init__(self, objects: Sequence[SealedObject], rules: Sequence[Rule], skip: Sequence[str],
                 search: LibrarySearch, base: FrozenSet[str]) -> None:
        self.objects = [o for o in objects
                        if o.region != UNPROTECTED and is_shared_object(posixpath.basename(o.rel))]
        self.rules, self.skip, self.search, self.base = rules, skip, search, base
        self.by_name: Dict[str, List[SealedObject]] = {}
        for obj in self.objects:
            self.by_name.setdefault(posixpath.basename(obj.rel), []).append(obj)
        self.sonames: Dict[str, Optional[str]] = {}
        self.plan = NativePlan()
        self.bundled: Dict[str, BundledLibrary] = {}
        self.settled: Set[str] = set()  # names decided: base, in the image, bundled, missing, skipped

    def run(self) -> NativePlan:
        queue: Deque[Tuple[str, ElfFacts]] = deque()
        for obj in self.objects:
            try:
                facts = read_elf(obj.host, obj.rel)
            except MalformedElf as exc:
                self.plan.unreadable.append((obj.rel, exc.cause))
                continue
            except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
                why = getattr(exc, "strerror", None) or str(exc)
                self.plan.unreadable.append((obj.rel, f"{obj.rel!r} cannot be read ({why})"))
                continue
            if facts is not None:
                queue.append((obj.rel, facts))
        while queue:
            requester, facts = queue.popleft()
            for name in facts.needed:
                if name in self.bundled:
                    if requester not in self.bundled[name].needed_by:
                        self.bundled[name].needed_by.append(requester)
                    continue
                if name in self.settled:
                    continue
                self.settled.add(name)
                if name in self.base or self._in_image(name):
                    continue
                found = self._bundle(name, requester, facts.machine)
                if found is not None:
                    queue.append(found)
        return self.plan

    def _in_image(self, name: str) -> bool:
        """The engine's rule (ImageLibraries.resolve): exact file name, or extension + matching soname."""
        if name in self.by_name:
            return True
        for file_name, objs in self.by_name.items():
            if file_name.startswith(name + ".") and any(self._soname(obj) == name for obj in objs):
                return True
        return False

    def _soname(self, obj: SealedObject) -> Optional[str]:
        if obj.rel not in self.sonames:
            try:
                facts = read_elf(obj.host, obj.rel)
            except (MalformedElf, OSError, ValueError):
                facts = None
            self.sonames[obj.rel] = facts.soname if facts is not None else None
        return self.sonames[obj.rel]

    def _bundle(self, name: str, requester: str, machine: int) -> Optional[Tuple[str, ElfFacts]]:
        """Plan ``name`` for bundling; returns (its image path, its ELF facts) to follow its needs."""
        rel = f"{NATIVE_DIR}/{name}"
        if "/" in name or name in (".", ".."):
            self._missing(name, requester, "it is a path, not a library name; it cannot be bundled")
            return None
        if any(matches(pattern, rel) for pattern in self.skip):
            self.plan.skipped.append(name)
            return None
        if name.startswith("libpython"):
            self._missing(name, requester, "it is a Python interpreter library, which only the engine's "
                                           "own interpreter may provide")
            return None
        found = self.search.find(name, machine)
        if found is None:
            self._missing(name, requester, "not found on this machine")
            return None
        real = os.path.realpath(found)
        try:
            facts = read_elf(real, name)
            size = os.stat(real).st_size
        except (MalformedElf, OSError, ValueError) as exc:
            self._missing(name, requester, f"{found} cannot be read as a library ({exc})")
            return None
        if facts is None:
            self._missing(name, requester, f"{found} is not an ELF file")
            return None
        library = BundledLibrary(name, rel, real, found, native_region(rel, self.rules), size,
                                 facts.soname, [requester])
        self.bundled[name] = library
        self.plan.libraries.append(library)
        return rel, facts

    def _missing(self, name: str, requester: str, reason: str) -> None:
        self.plan.missing.append(NotBundled(name, requester, reason))
