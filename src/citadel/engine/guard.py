"""The audit-hook guard: which libraries may load after start, and which programs may start.

An audit hook (PEP 578) sees every ``ctypes.dlopen`` and every attempt to start a program; once
added it cannot be removed, and a forked child keeps it. The guard also wraps the two loaders
Python code can reach directly (``_imp.create_dynamic`` for extension modules, ``_ctypes.dlopen``
for libraries), so it can check what the dynamic linker mapped *after* a trusted load, and it
replaces ``_posixsubprocess.fork_exec``. Under it, hardening's seccomp filter makes execve fail
even for code that calls libc directly.

A library may load when it is part of the measured engine (in the engine manifest, or mapped when
the engine started), or verified by the image (registered with `citadel.engine.libraries` by the
extension loader), or when ``CITADEL_ALLOW_DLOPEN=1`` allows unprotected libraries (debugging; it
warns once per library and is part of the measurement). Everything else raises
:class:`GuardRefusal`, which is a PermissionError for the program and a CitadelError for the engine.
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import _imp
import os
import sys

from citadel.engine import libraries, log
from citadel.engine.trusted_base import TrustedBase, mapped_files
from citadel.engine.trusted_import import set_mapping_tolerance
from citadel.errors import CitadelError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Optional, Set

PROCESS_EVENTS = frozenset({"os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "pty.spawn"})
NO_PROGRAMS_REMEDY = ("inside the engine, os.fork, multiprocessing and subprocess of sys.executable (a child "
                      "engine) work; other programs are not allowed by this engine's policy: a session can allow "
                      "a program by listing its absolute path in the service's allowed_executables "
                      "(docs/policy.md)")
DLOPEN_REMEDY = ("seal the library into the image (it is then verified and loaded from memory), or set "
                 "CITADEL_ALLOW_DLOPEN=1 to allow unprotected libraries while debugging (this changes the "
                 "measurement, so a policy that pins it will refuse the engine)")
DEPENDENCY_REMEDY = ("seal the application again without --no-bundle-native (`citadel seal` then bundles the host "
                     "libraries its extensions need), or set CITADEL_ALLOW_DLOPEN=1 while debugging (this changes "
                     "the measurement)")


class GuardRefusal(CitadelError, PermissionError):
    """The guard refused an operation; uncaught, the engine prints these two lines and exits 77."""


class Guard:
    """The policy; ``hook`` is what sys.addaudithook receives."""

    def __init__(self, base: Optional[TrustedBase], *, allow_dlopen: bool) -> None:
        self.base = base
        self.allow_dlopen = allow_dlopen
        self.start_paths: Set[str] = set(mapped_files())
        self.start_names = {os.path.basename(p) for p in self.start_paths}
        self.engine_names = set(self.start_names)
        if base is not None:
            self.engine_names |= {k.rpartition("/")[2] for k in base.entries if k.startswith(("system/", "libpython/"))}
        self._warned: Set[str] = set()
        # set by citadel.engine.processes: True for the engine's own interpreter (started as a child engine)
        # and for the programs the session allows (allowed_executables, CAS flow)
        self.program_check: Optional[Callable[[Any], bool]] = None

    # -- the audit hook ---------------------------------------------------------------------------
    def hook(self, event: str, args: tuple) -> None:
        if event == "ctypes.dlopen":
            self.check_library(args[0] if args else None)
        elif event in PROCESS_EVENTS:
            if event == "subprocess.Popen" and self.program_check is not None and args and self.program_check(args[0]):
                subprocess = sys.modules.get("subprocess")
                if subprocess is not None:  # fork_exec, never posix_spawn: processes.fork_exec starts them
                    subprocess._USE_POSIX_SPAWN = False  # type: ignore[attr-defined]
                return
            raise GuardRefusal(f"running other programs is not allowed inside the engine yet "
                               f"({event}: {_describe_program(event, args)})", NO_PROGRAMS_REMEDY)

    # -- libraries ----------------------------------------------------------------------------------
    def check_library(self, name: Any) -> None:
        """Allow ``name`` (as given to dlopen) or raise GuardRefusal."""
        if name is None:
            return  # the main program and what is already loaded
        text = os.fsdecode(name) if isinstance(name, (bytes, str)) else str(name)
        if self.is_measured_or_sealed(text):
            return
        if self.allow_dlopen:
            self.warn_unprotected(text)
            return
        raise GuardRefusal(f"refusing to load the library {text}: it is neither part of the measured "
                           "engine nor verified by the sealed image", DLOPEN_REMEDY)

    def is_measured_or_sealed(self, name: str) -> bool:
        if libraries.is_allowed(name):
            return True
        if "/" not in name:
            # A bare name is looked up by soname: the dynamic linker answers with the library already
            # loaded, or one it finds on the host; only names of the measured engine are allowed,
            # and the wrapper checks afterwards that the file mapped is the measured one.
            return name in self.engine_names
        if name in self.start_paths or os.path.realpath(name) in self.start_paths:
            return True
        if self.base is not None:
            key = self.base.key_of(name)
            if key is not None:
                self.base.verify_file(key)
                return True
        return False

    def check_dependency(self, name: str, needed_by: str) -> None:
        """Before a sealed library loads: a DT_NEEDED ``name`` the image does not hold may come from the
        host only if it is a library of the measured engine (checked again once mapped); else refuse,
        before the dynamic linker maps anything (`citadel.engine.libraries.set_dependency_check`)."""
        if name in self.engine_names or any(n.startswith(name + ".") for n in self.engine_names):
            return  # libc.so.6, or libz.so.1 whose measured file is libz.so.1.2.13
        if self.allow_dlopen:
            self.warn_unprotected(name)
            return
        raise GuardRefusal(f"the sealed file {needed_by} needs the library {name}, which the image does not hold "
                           "and the measured engine does not include; the dynamic linker would load it "
                           "unverified from this machine's disk", DEPENDENCY_REMEDY)

    def warn_unprotected(self, name: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning(f"loading the unprotected library {name} (CITADEL_ALLOW_DLOPEN=1: debugging only)")

    def tolerate_mapping(self, path: str) -> bool:
        """After a load: a mapped ELF file outside the manifest is accepted only when allowed."""
        if libraries.is_allowed(path):
            return True
        if self.allow_dlopen:
            self.warn_unprotected(path)
            return True
        return False

    def verify_mappings(self, what: str) -> None:
        if self.base is not None:
            self.base.verify_mappings(what, self.tolerate_mapping)

    # -- wrappers of the loaders Python code can call -------------------------------------------------
    def wrap_create_dynamic(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def create_dynamic(spec: Any, file: Any = None) -> Any:
            origin = getattr(spec, "origin", None) or ""
            if not self.is_measured_or_sealed(origin):
                if not self.allow_dlopen:
                    raise GuardRefusal(f"refusing to load the extension module {spec.name} from {origin}: it is "
                                       "neither part of the measured engine nor verified by the sealed image",
                                       DLOPEN_REMEDY)
                self.warn_unprotected(origin)
            module = original(spec) if file is None else original(spec, file)
            # sealed modules too: every host library the dynamic linker mapped for them passed
            # check_dependency (a measured name), and is now checked against the manifest
            self.verify_mappings(f"the extension module {spec.name}")
            return module

        return create_dynamic

    def wrap_dlopen(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def dlopen(name: Any, mode: int = os.RTLD_LOCAL) -> Any:
            self.check_library(name)
            handle = original(name, mode)
            if name is not None:  # sealed libraries too: what ld.so mapped for them is checked (check_dependency)
                self.verify_mappings(f"the library {os.fsdecode(name)}")
            return handle

        return dlopen


def _describe_program(event: str, args: tuple) -> str:
    if event == "os.system":
        return repr(args[0]) if args else "a shell command"
    if event == "subprocess.Popen":
        return repr(args[1]) if len(args) > 1 else "a program"
    if event == "os.spawn":
        return repr(args[1]) if len(args) > 1 else "a program"
    return repr(args[0]) if args else "a program"


def _refuse_fork_exec(*args: Any, **kwargs: Any) -> Any:
    raise GuardRefusal("running other programs is not allowed inside the engine yet (_posixsubprocess.fork_exec)",
                       NO_PROGRAMS_REMEDY)


# PyPy 3.9 raises no audit events for these (CPython does): wrap them so the guard sees them
# and refuses with its clear message instead of leaving it to the seccomp filter's bare EPERM.
_PYPY_PROCESS_CALLS = {
    "system": ("os.system", lambda a: (a[0],)),
    "execv": ("os.exec", lambda a: (a[0], a[1], None)),
    "execve": ("os.exec", lambda a: (a[0], a[1], a[2])),
    "spawnv": ("os.spawn", lambda a: (a[0], a[1], a[2], None)),
    "spawnve": ("os.spawn", lambda a: (a[0], a[1], a[2], a[3])),
    "spawnvp": ("os.spawn", lambda a: (a[0], a[1], a[2], None)),
    "spawnvpe": ("os.spawn", lambda a: (a[0], a[1], a[2], a[3])),
    "posix_spawn": ("os.posix_spawn", lambda a: (a[0], a[1], a[2])),
    "posix_spawnp": ("os.posix_spawn", lambda a: (a[0], a[1], a[2])),
}


def _audit_process_calls() -> None:
    for name, (event, audit_args) in _PYPY_PROCESS_CALLS.items():
        original = getattr(os, name, None)
        if original is None:
            continue

        def audited(*args: Any, _original: Callable[..., Any] = original, _event: str = event,
                    _audit_args: Callable[[tuple], tuple] = audit_args, **kwargs: Any) -> Any:
            sys.audit(_event, *_audit_args(args + (None,) * 4))
            return _original(*args, **kwargs)

        setattr(os, name, audited)


_installed: Optional[Guard] = None


def installed() -> Optional[Guard]:
    """The guard of this process, if installed."""
    return _installed


def install(base: Optional[TrustedBase], *, allow_dlopen: bool) -> Guard:
    """Install the guard once per process (an audit hook cannot be removed); returns it."""
    global _installed
    if _installed is not None:
        return _installed
    guard = Guard(base, allow_dlopen=allow_dlopen)
    _imp.create_dynamic = guard.wrap_create_dynamic(_imp.create_dynamic)
    import _ctypes

    wrapped = guard.wrap_dlopen(_ctypes.dlopen)
    _ctypes.dlopen = wrapped
    ctypes_module = sys.modules.get("ctypes")
    if ctypes_module is not None:
        ctypes_module._dlopen = wrapped  # type: ignore[attr-defined]
    import _posixsubprocess

    _posixsubprocess.fork_exec = _refuse_fork_exec
    if sys.implementation.name == "pypy":
        _audit_process_calls()
    set_mapping_tolerance(guard.tolerate_mapping)
    libraries.set_dependency_check(guard.check_dependency)
    if base is not None:  # what the engine's start-up loaded, checked in one pass, then load by load
        base.verify_mappings("the engine's start-up", guard.tolerate_mapping)
        base.defer_mappings = False
    sys.addaudithook(guard.hook)
    _installed = guard
    return guard
