"""Plan a seal: walk the source and python-path trees and decide what each file becomes (owner side).

Planning reads only directory entries and file metadata, never contents, so every problem a tree
can have (a symlink leaving the tree, a FIFO, an unreadable file, a name that is not UTF-8) is
found before a single byte of the image is written.

Rules (see docs/formats.md, "Region rules"):
- Every file gets a path relative to the image root: ``rel`` for the source tree and
  ``.citadel/python-path/<i>/rel`` for the i-th python-path tree. Region rules and skip patterns
  are matched against that image path (the same path the engine checks the region rules
  against), so one set of patterns describes the whole image.
- ``__pycache__`` directories are always left out: their pycs are timestamp-based, possibly stale,
  and made by whatever interpreter ran last. The sealer makes fresh ones from the exact sources
  it seals instead (bytecode.py). ``.pyc`` files elsewhere are ordinary files (sourceless
  packages need them).
- A symlink is followed when its target lies inside the same tree: the target's content is sealed
  under the link's own path (images hold no symlinks). A symlink that leaves its tree, dangles, or
  loops is refused, naming the link, so nothing outside the tree is sealed by accident.
- Python-path trees that lie inside the source tree are sealed once, as python path, not twice.
- ``.citadel`` at the top of the source tree is reserved for the image's own metadata.
- Empty directories are not kept: the manifest records files.
- With ``bundle_native``, the host libraries the sealed shared objects need are planned too
  (native.py); that step reads ELF headers, the only file contents planning looks at.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from citadel.errors import CitadelError, UsageError
from citadel.seal.format import ENCRYPTED, PYTHON_PATH_DIR, REGIONS, UNPROTECTED
from citadel.seal.native import NATIVE_DIR, LibrarySearch, NativePlan, SealedObject, plan_native
from citadel.seal.regions import Rule, matches

RESERVED_TOP = ".citadel"
ALWAYS_SKIPPED = "__pycache__"


class SourceError(CitadelError):
    """A file or directory of the tree being sealed cannot be sealed as it is."""


@dataclass(frozen=True)
class PlannedFile:
    """One file of the future image."""

    rel: str  # image-relative POSIX path
    host: str  # host path to read (a followed symlink's resolved target)
    region: str
    size: int  # size when planned; sealing re-checks it


@dataclass
class SealPlan:
    """Everything sealing will write, decided up front."""

    src: str  # absolute real path of the source tree
    python_paths: List[str]  # absolute real paths, in image order
    rules: List[Rule]
    skip: List[str]
    files: List[PlannedFile] = field(default_factory=list)
    #: rules (pattern, region) and skip patterns ("skip") that matched nothing: likely typos
    unmatched: List[Tuple[str, str]] = field(default_factory=list)
    #: host libraries to bundle (None: not asked for) and the files they become
    native: Optional[NativePlan] = None
    native_files: List[PlannedFile] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Bytes of the files of the trees (what ``files`` and ``regions`` count)."""
        return sum(f.size for f in self.files)

    @property
    def total_bytes(self) -> int:
        """Bytes sealing will read: the trees and the bundled libraries."""
        return self.bytes + sum(f.size for f in self.native_files)

    @property
    def unprotected_patterns(self) -> List[str]:
        return [pattern for pattern, region in self.rules if region == UNPROTECTED]

    def region_counts(self) -> Dict[str, int]:
        counts = {region: 0 for region in REGIONS}
        for planned in self.files:
            counts[planned.region] += 1
        return counts


def normalize_pattern(pattern: str) -> str:
    """A pattern as the rules match it: POSIX, relative, no leading './' or trailing '/'."""
    cleaned = pattern.strip()
    while cleaned.startswith("./"):
        cleaned = cleaned[2:]
    cleaned = cleaned.strip("/")
    if not cleaned or cleaned == ".":
        raise UsageError(
            f"the pattern {pattern!r} matches nothing useful",
            "give a path or glob relative to SRC, e.g. 'data/*' or '*.csv'",
        )
    return cleaned


def plan_seal(
    src: str,
    *,
    rules: Sequence[Rule] = (),
    skip: Sequence[str] = (),
    python_paths: Sequence[str] = (),
    bundle_native: bool = False,
    search: Optional[LibrarySearch] = None,
) -> SealPlan:
    """Walk ``src`` and ``python_paths`` and return the plan; raises on anything unsealable.

    ``bundle_native`` also plans the host libraries the sealed shared objects need, found with
    ``search`` (default: as this machine's dynamic linker would).
    """
    root = _existing_dir(src, "SRC", "pass the directory that holds your application")
    for _, region in rules:
        if region not in REGIONS:
            raise UsageError(f"unknown region {region!r}", f"use one of: {', '.join(REGIONS)}")
    plan = SealPlan(
        src=root,
        python_paths=[],
        rules=[(normalize_pattern(p), r) for p, r in rules],
        skip=[normalize_pattern(p) for p in skip],
    )
    for given in python_paths:
        path = _existing_dir(given, "python path", "pass an existing directory such as a site-packages")
        if path in plan.python_paths:
            raise UsageError(f"the python path {given!r} is given twice", "give each python path once")
        if path == root or _is_within(path, root):
            raise UsageError(
                f"the python path {given!r} contains SRC",
                "pass the package directory itself (e.g. .../site-packages), not a parent of SRC",
            )
        plan.python_paths.append(path)
    walker = _Walker(plan)
    walker.walk_tree(root, "", avoid=set(plan.python_paths))
    for index, path in enumerate(plan.python_paths):
        walker.walk_tree(path, f"{PYTHON_PATH_DIR}/{index}/", avoid=set())
    if bundle_native:
        _plan_native(plan, search)
    native_rels = [f.rel for f in plan.native_files] + [
        f"{NATIVE_DIR}/{name}" for name in (plan.native.skipped if plan.native else [])
    ]
    plan.unmatched = [
        rule for i, rule in enumerate(plan.rules)
        if i not in walker.rules_hit and not any(matches(rule[0], rel) for rel in native_rels)
    ]
    plan.unmatched += [
        (p, "skip") for i, p in enumerate(plan.skip)
        if i not in walker.skip_hit and not any(matches(p, rel) for rel in native_rels)
    ]
    return plan


def _plan_native(plan: SealPlan, search: Optional[LibrarySearch]) -> None:
    objects = [SealedObject(f.rel, f.host, f.region) for f in plan.files]
    plan.native = plan_native(objects, rules=plan.rules, skip=plan.skip, search=search)
    plan.native_files = [
        PlannedFile(lib.rel, lib.host, lib.region, lib.size) for lib in plan.native.libraries
    ]


class _Walker:
    """Depth-first, sorted walk that resolves symlinks within a tree and records what rules hit."""

    def __init__(self, plan: SealPlan) -> None:
        self.plan = plan
        self.rules_hit: Set[int] = set()
        self.skip_hit: Set[int] = set()

    def walk_tree(self, root: str, prefix: str, avoid: Set[str]) -> None:
        """Iterative (deep trees cannot exhaust the stack); directories are listed in sorted order."""
        pending: List[Tuple[str, str, FrozenSet[str]]] = [(root, "", frozenset({root}))]
        while pending:
            real_dir, rel_dir, active = pending.pop()
            subdirs = self._walk_dir(root, real_dir, prefix, rel_dir, active, avoid)
            pending.extend(reversed(subdirs))

    def _walk_dir(
        self, root: str, real_dir: str, prefix: str, rel_dir: str, active: FrozenSet[str], avoid: Set[str]
    ) -> List[Tuple[str, str, FrozenSet[str]]]:
        """Plan the files of one directory; returns its subdirectories still to walk."""
        subdirs: List[Tuple[str, str, FrozenSet[str]]] = []
        shown = _shown(root, rel_dir)
        try:
            names = sorted(os.listdir(real_dir))
        except OSError as exc:
            raise SourceError(
                f"cannot list the directory {shown!r}: {exc.strerror}",
                "make it readable (chmod u+rx), or leave it out with --skip",
            ) from None
        for name in names:
            rel = f"{rel_dir}{name}"
            if name == ALWAYS_SKIPPED or self._skipped(prefix + rel):
                continue
            _check_name(root, rel)
            if not prefix and not rel_dir and name == RESERVED_TOP:
                raise SourceError(
                    f"SRC has a top-level {RESERVED_TOP!r}, which images reserve for their metadata",
                    "rename it, or leave it out with --skip .citadel (is SRC already an image?)",
                )
            host = os.path.join(real_dir, name)
            try:
                info = os.lstat(host)
            except OSError as exc:
                raise SourceError(
                    f"cannot inspect {_shown(root, rel)!r}: {exc.strerror}",
                    "check that the tree is not changing while it is sealed",
                ) from None
            real = host
            if stat.S_ISLNK(info.st_mode):
                real, info = self._resolve_link(root, rel, host)
            if stat.S_ISDIR(info.st_mode):
                if real in avoid:
                    continue  # a python-path tree inside SRC: sealed once, as python path
                if real in active:
                    raise SourceError(
                        f"the symlink {_shown(root, rel)!r} loops back to a directory above it",
                        "remove the link, or leave it out with --skip",
                    )
                subdirs.append((real, rel + "/", active | {real}))
            elif stat.S_ISREG(info.st_mode):
                if not os.access(real, os.R_OK):
                    raise SourceError(
                        f"cannot read {_shown(root, rel)!r}: permission denied",
                        "make it readable (chmod u+r), or leave it out with --skip",
                    )
                self.plan.files.append(
                    PlannedFile(prefix + rel, real, self._region(prefix + rel), info.st_size)
                )
            else:
                raise SourceError(
                    f"{_shown(root, rel)!r} is not a regular file or directory ({_kind(info.st_mode)})",
                    "remove it from the tree, or leave it out with --skip",
                )
        return subdirs

    def _resolve_link(self, root: str, rel: str, host: str) -> Tuple[str, os.stat_result]:
        target = os.path.realpath(host)
        if not (target == root or _is_within(root, target)):
            raise SourceError(
                f"the symlink {_shown(root, rel)!r} points outside the tree (to {target!r})",
                "copy the target into the tree, or leave the link out with --skip",
            )
        try:
            return target, os.stat(target)
        except OSError:
            raise SourceError(
                f"the symlink {_shown(root, rel)!r} points to nothing (dangling)",
                "fix or remove the link, or leave it out with --skip",
            ) from None

    def _skipped(self, image_rel: str) -> bool:
        hit = False
        for index, pattern in enumerate(self.plan.skip):
            if matches(pattern, image_rel):
                self.skip_hit.add(index)
                hit = True
        return hit

    def _region(self, image_rel: str) -> str:
        """Last matching rule wins (exactly regions.region_for), noting which rules matched."""
        region = ENCRYPTED
        for index, (pattern, rule_region) in enumerate(self.plan.rules):
            if matches(pattern, image_rel):
                region = rule_region
                self.rules_hit.add(index)
        return region


def _existing_dir(path: str, what: str, remedy: str) -> str:
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist", remedy)
    if not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is not a directory", remedy)
    return os.path.realpath(path)


def _is_within(parent: str, path: str) -> bool:
    """True if ``path`` is strictly below ``parent`` (both absolute, resolved)."""
    return path.startswith(parent.rstrip(os.sep) + os.sep)


def _shown(root: str, rel: str) -> str:
    return os.path.join(root, rel) if rel else root


def _check_name(root: str, rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(
            f"the name {_shown(root, rel)!r} is not valid UTF-8",
            "rename it (the manifest records names as UTF-8), or leave it out with --skip",
        ) from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "an unknown kind of file"


def find_relative(base: str, path: str) -> Optional[str]:
    """``path`` relative to ``base`` as a POSIX path when it lies at or below it, else None."""
    base_real, path_real = os.path.realpath(base), os.path.realpath(path)
    if path_real == base_real:
        return ""
    if _is_within(base_real, path_real):
        return os.path.relpath(path_real, base_real).replace(os.sep, "/")
    return None
