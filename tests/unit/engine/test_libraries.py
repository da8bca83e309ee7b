"""The registry of libraries the engine verified (the guard consults it for ctypes.dlopen)."""

from __future__ import annotations

import pytest

from citadel.engine import libraries


def test_only_registered_paths_are_allowed() -> None:
    path = "/proc/self/fd/999999"
    assert not libraries.is_allowed(path)
    libraries.allow(path)
    assert libraries.is_allowed(path)
    assert path in libraries.allowed()
    assert not libraries.is_allowed("/proc/self/fd/9999990")
    assert not libraries.is_allowed("/usr/lib/libevil.so")


def test_dependency_policy_decides_and_defaults_to_allow() -> None:
    libraries.check_dependency("libc.so.6", "pkg/mod.so")  # no policy: allowed
    seen: list[tuple[str, str]] = []

    def policy(name: str, needed_by: str) -> None:
        seen.append((name, needed_by))
        if name == "libevil.so":
            raise PermissionError(name)

    libraries.set_dependency_check(policy)
    try:
        libraries.check_dependency("libm.so.6", "a.so")
        with pytest.raises(PermissionError):
            libraries.check_dependency("libevil.so", "b.so")
    finally:
        libraries.set_dependency_check(None)
    assert seen == [("libm.so.6", "a.so"), ("libevil.so", "b.so")]
