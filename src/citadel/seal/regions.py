"""Which region a path of the tree belongs to (engine-safe).

Rules are (pattern, region) pairs applied in order; the last rule that matches wins and the
default is ``encrypted``. A pattern is an ``fnmatch`` glob against the POSIX path relative to
the tree root; a pattern that matches a directory covers everything below it.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable, Sequence, Tuple

from citadel.seal.format import ENCRYPTED, REGIONS

Rule = Tuple[str, str]  # (pattern, region)


def _ancestors_and_self(relpath: str) -> Iterable[str]:
    parts = relpath.split("/")
    for end in range(1, len(parts) + 1):
        yield "/".join(parts[:end])


def matches(pattern: str, relpath: str) -> bool:
    """True if the pattern names this path or a directory that contains it."""
    pattern = pattern.strip("/")
    return any(fnmatchcase(candidate, pattern) for candidate in _ancestors_and_self(relpath))


def region_for(relpath: str, rules: Sequence[Rule]) -> str:
    region = ENCRYPTED
    for pattern, rule_region in rules:
        if rule_region not in REGIONS:
            raise ValueError(f"unknown region {rule_region!r}")
        if matches(pattern, relpath):
            region = rule_region
    return region


def is_unprotected(relpath: str, patterns: Sequence[str]) -> bool:
    return any(matches(p, relpath) for p in patterns)
