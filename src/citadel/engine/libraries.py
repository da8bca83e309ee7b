"""The shared libraries the engine has verified and may load after start (engine-safe).

The extension loader registers the memfd path of every library it decrypted and verified
before handing it to the dynamic linker; the audit-hook guard consults this registry when a
``ctypes.dlopen`` event arrives, so only these (and what the settings allow) are loaded.

A sealed library may also need libraries the image does not hold (``libc.so.6``,
``libstdc++.so.6``): the system's dynamic linker would load those from the host. Before loading a
sealed library, the extension loader asks :func:`check_dependency` about each such name, so the
guard can refuse (by raising) before anything is mapped.
"""

from __future__ import annotations

import threading
from typing import Callable, FrozenSet, Optional, Set

#: check(name, needed_by): return to let the system's dynamic linker load ``name`` (a DT_NEEDED
#: name the image does not hold) for the image file ``needed_by``; raise to refuse
DependencyCheck = Callable[[str, str], None]

_lock = threading.Lock()
_allowed: Set[str] = set()
_dependency_check: Optional[DependencyCheck] = None


def allow(path: str) -> None:
    """Allow ``path`` (exactly as it will be passed to dlopen) to be loaded."""
    with _lock:
        _allowed.add(path)


def is_allowed(path: str) -> bool:
    """True if ``path`` was verified by the engine and registered with :func:`allow`."""
    return path in _allowed


def allowed() -> FrozenSet[str]:
    """A snapshot of every registered path (for diagnostics and tests)."""
    with _lock:
        return frozenset(_allowed)


def set_dependency_check(check: Optional[DependencyCheck]) -> None:
    """Install the policy for system libraries that sealed libraries need (the guard does this)."""
    global _dependency_check
    _dependency_check = check


def check_dependency(name: str, needed_by: str) -> None:
    """Ask the policy about ``name``; without a policy (tests, tools) every name is allowed."""
    check = _dependency_check
    if check is not None:
        check(name, needed_by)
