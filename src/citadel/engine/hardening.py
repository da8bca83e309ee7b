"""Process hardening: not dumpable, no core files, bounded heap and stacks, no new programs.

Applied once, before the engine reads its key:

- ``prctl(PR_SET_DUMPABLE, 0)``: no core dumps, and other processes of the same user cannot
  ptrace it or read its memory through /proc (root still can: see the simulation notice).
- ``RLIMIT_CORE = 0``: belt and braces for core files.
- ``CITADEL_HEAP`` -> ``RLIMIT_DATA`` (soft and hard). RLIMIT_DATA counts private writable memory
  (the Python heap, C allocations, thread stacks) and, unlike RLIMIT_AS, not the address space that
  glibc reserves per thread arena or file mappings, so threaded programs get what they ask for.
- ``CITADEL_STACK`` -> the stack size of new threads, and the main thread's RLIMIT_STACK.
- a seccomp filter that makes execve/execveat fail with EPERM, under the audit-hook guard that
  explains the refusal: even code that calls libc directly cannot start another program. The one
  exception is execve whose path *pointer* is one of the `EXEC_SLOTS` page-aligned addresses from
  `EXEC_PATH_ADDRESS` on: read-only pages mapped there at start (all of them, before the filter is
  installed) hold the engine interpreter's path (slot 0) and, in the CAS flow, the programs the
  session allows (`allowed_executables`, slots 1.. written once by `pin_programs` before the program
  runs; unused slots hold an empty path, which execve refuses). So only a child engine or an allowed
  program can be started (`citadel.engine.processes`). The filter is installed before the release is
  known, so it names the slot *addresses*, not the paths; every engine maps the same slots, so the
  stacked filters a child inherits allow its own child engines too.

Engine-safe: stdlib only, Python 3.9, Linux.
"""

from __future__ import annotations

import os
import struct
import sys

from citadel.engine.settings import Settings, format_size
from citadel.errors import UsageError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Dict, Optional, Sequence

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

# Classic BPF, as <linux/filter.h> and <linux/seccomp.h> define it.
SOCK_FILTER = struct.Struct("HBBI")  # code, jump if true, jump if false, k
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4
X32_SYSCALL_BIT = 0x40000000
# machine -> (AUDIT_ARCH_*, execve, execveat)
EXEC_SYSCALLS = {
    "x86_64": (0xC000003E, 59, 322),
    "aarch64": (0xC00000B7, 221, 281),
}


#: where every engine maps the read-only pages holding the paths execve may run (x86-64 and aarch64
#: user space, far from the heap, the stacks and the mmap area); see `map_exec_path`
EXEC_PATH_ADDRESS = 0x1C17ADE10000
PAGE = 4096
#: pages from EXEC_PATH_ADDRESS on: slot 0 the engine interpreter, slots 1.. the allowed programs
EXEC_SLOTS = 17
MAX_ALLOWED_PROGRAMS = EXEC_SLOTS - 1
PROT_READ, PROT_WRITE = 1, 2
MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x02, 0x20, 0x100000
SECCOMP_DATA_ARG0 = 16  # seccomp_data.args[0]: low 32 bits here, high 32 bits at +4 (little-endian)
_exec_path: Optional[bytes] = None  # the path mapped at EXEC_PATH_ADDRESS, once it is
_pinned: Optional[Dict[bytes, int]] = None  # allowed program path -> its slot's address, once pinned


def apply(settings: Settings, *, note: Optional[Callable[[str], None]] = None) -> None:
    """Harden this process as the module docstring says. ``note`` receives non-fatal shortfalls."""
    import resource

    _prctl(PR_SET_DUMPABLE, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if settings.heap is not None:
        limit_heap(settings.heap)
    if settings.stack is not None:
        limit_stack(settings.stack)
    try:
        forbid_exec(os.fsencode(sys.executable))
    except OSError as exc:
        if note is not None:
            note(f"the kernel refused the exec filter ({exc.strerror}); the audit-hook guard still refuses "
                 "to start programs")


def limit_heap(size: int) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY and size > hard:
        raise UsageError(f"CITADEL_HEAP={format_size(size)} is above this machine's data limit "
                         f"({format_size(hard)}, see `ulimit -d`)", "lower CITADEL_HEAP or raise the limit")
    used = data_in_use()
    if used is not None and used >= size:
        raise UsageError(f"CITADEL_HEAP={format_size(size)} is less than the engine already uses "
                         f"({used >> 20} MiB)", "raise CITADEL_HEAP, e.g. CITADEL_HEAP=256M")
    resource.setrlimit(resource.RLIMIT_DATA, (size, size))


def limit_stack(size: int) -> None:
    import _thread
    import resource

    try:
        _thread.stack_size(size)
    except ValueError:
        raise UsageError(f"CITADEL_STACK={format_size(size)} is not a stack size this system accepts",
                         "use a multiple of 4K between 64K and 1G, e.g. CITADEL_STACK=8M") from None
    _soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if hard == resource.RLIM_INFINITY or size <= hard:
        resource.setrlimit(resource.RLIMIT_STACK, (size, hard))


def data_in_use() -> Optional[int]:
    """Bytes of private writable memory in use (VmData), what RLIMIT_DATA is compared with."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def is_dumpable() -> bool:
    return _prctl(PR_GET_DUMPABLE, 0) != 0


def exec_filter(machine: str, path_address: Optional[int] = None, slots: int = 1) -> bytes:
    """The seccomp program: execve/execveat -> EPERM; a foreign ABI (x32, i386) -> EPERM; else allow.

    With ``path_address``, execve whose first argument (the path pointer) is exactly one of the
    ``slots`` page-aligned addresses ``path_address + i * PAGE`` is allowed (the read-only pages of
    `map_exec_path`).
    """
    arch, execve, execveat = EXEC_SYSCALLS[machine]
    deny = SECCOMP_RET_ERRNO | EPERM
    if path_address is not None:
        low, high = path_address & 0xFFFFFFFF, path_address >> 32
        end = low + slots * PAGE
        if low % PAGE or slots < 1 or end > 0xFFFFFFFF:
            raise ValueError("the exec slots must be page-aligned and stay inside one 4 GiB window")
        program = [
            (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
            (BPF_JEQ_K, 1, 0, arch),
            (BPF_RET_K, 0, 0, deny),
            (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
            (BPF_JGE_K, 10, 0, X32_SYSCALL_BIT),          # -> deny
            (BPF_JEQ_K, 9, 0, execveat),                  # -> deny
            (BPF_JEQ_K, 1, 0, execve),                    # -> check the path pointer
            (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARG0),      # low 32 bits of the pointer
            (BPF_JGE_K, 0, 5, low),                       # below the first slot -> deny
            (BPF_JGE_K, 4, 0, end),                       # past the last slot -> deny
            (BPF_JSET_K, 3, 0, PAGE - 1),                 # not the start of a slot -> deny
            (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARG0 + 4),  # high 32 bits
            (BPF_JEQ_K, 0, 1, high),                      # else -> deny
            (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            (BPF_RET_K, 0, 0, deny),
        ]
        return b"".join(SOCK_FILTER.pack(*instruction) for instruction in program)
    program = [
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        (BPF_JEQ_K, 1, 0, arch),
        (BPF_RET_K, 0, 0, deny),
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        (BPF_JGE_K, 3, 0, X32_SYSCALL_BIT),
        (BPF_JEQ_K, 2, 0, execve),
        (BPF_JEQ_K, 1, 0, execveat),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, deny),
    ]
    return b"".join(SOCK_FILTER.pack(*instruction) for instruction in program)


def forbid_exec(engine_path: Optional[bytes] = None) -> None:
    """Install the exec filter for this thread and every process and thread it creates later.

    With ``engine_path`` (the interpreter), the EXEC_SLOTS read-only pages are mapped from
    EXEC_PATH_ADDRESS on (that path in the first) and the filter allows execve from those addresses
    only; if the pages cannot be mapped, nothing is allowed.
    """
    import _ctypes

    machine = os.uname().machine
    if machine not in EXEC_SYSCALLS:
        raise OSError(0, f"no exec filter for {machine}")
    address = EXEC_PATH_ADDRESS if engine_path is not None and map_exec_path(engine_path) else None
    code = exec_filter(machine, address, EXEC_SLOTS)
    program = _buffer(code)
    fprog = _buffer(SOCK_FPROG.pack(len(code) // SOCK_FILTER.size, _ctypes.addressof(program)))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, _ctypes.addressof(fprog))


def map_exec_path(path: bytes) -> bool:
    """Map EXEC_SLOTS read-only pages from EXEC_PATH_ADDRESS on, ``path`` NUL-terminated in the first and
    the others empty (see `pin_programs`); False if impossible.

    A process started by exec from an engine has a fresh address space, so the addresses are free there.
    """
    global _exec_path
    if _exec_path is not None:
        return _exec_path == path
    if b"\0" in path or len(path) >= PAGE:
        return False
    size = EXEC_SLOTS * PAGE
    mmap, mprotect, memmove = _libc("mmap", "P", "PLiiiL"), _libc("mprotect", "i", "PLi"), _libc("memmove", "P", "PPL")
    mapped = mmap(EXEC_PATH_ADDRESS, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                  -1, 0)
    if mapped != EXEC_PATH_ADDRESS:  # taken, or a kernel without MAP_FIXED_NOREPLACE chose another place
        if mapped not in (None, 0, (1 << 64) - 1):
            _libc("munmap", "i", "PL")(mapped, size)
        return False
    data = _buffer(path + b"\0")
    memmove(EXEC_PATH_ADDRESS, _address_of(data), len(path) + 1)
    if mprotect(EXEC_PATH_ADDRESS, size, PROT_READ) != 0:
        return False
    _exec_path = path
    return True


def exec_path() -> Optional[bytes]:
    """The interpreter path execve may be given (at EXEC_PATH_ADDRESS), or None: exec is not possible."""
    return _exec_path


def pin_programs(paths: Sequence[bytes]) -> Dict[bytes, int]:
    """Write ``paths`` (absolute, real) into slots 1.. and make them read-only again; once per process.

    Returns path -> the address execve must be given for it. Called in the CAS flow before the
    program runs; raises OSError if the slots are not mapped, or it was called before.
    """
    global _pinned
    if _pinned is not None:
        raise OSError(0, "the allowed programs are pinned already")
    unique = list(dict.fromkeys(paths))
    if _exec_path is None:
        raise OSError(0, "the exec pages are not mapped")
    if len(unique) > MAX_ALLOWED_PROGRAMS:
        raise OSError(0, f"at most {MAX_ALLOWED_PROGRAMS} programs can be allowed")
    if any(b"\0" in p or not p.startswith(b"/") or len(p) >= PAGE for p in unique):
        raise OSError(0, "an allowed program's path is not an absolute path shorter than a page")
    _pinned = {}
    if not unique:
        return {}
    mprotect, memmove = _libc("mprotect", "i", "PLi"), _libc("memmove", "P", "PPL")
    first, size = EXEC_PATH_ADDRESS + PAGE, MAX_ALLOWED_PROGRAMS * PAGE
    if mprotect(first, size, PROT_READ | PROT_WRITE) != 0:
        raise OSError(_get_errno(), "cannot write the exec pages")
    pinned = {}
    for i, path in enumerate(unique):
        data = _buffer(path + b"\0")
        memmove(first + i * PAGE, _address_of(data), len(path) + 1)
        pinned[path] = first + i * PAGE
    if mprotect(first, size, PROT_READ) != 0:
        raise OSError(_get_errno(), "cannot make the exec pages read-only")
    _pinned = pinned
    return dict(pinned)


def program_address(path: bytes) -> Optional[int]:
    """The pinned address of an allowed program's real path, or None (not allowed, or not pinned)."""
    return (_pinned or {}).get(path)


def _get_errno() -> int:
    import _ctypes

    return int(_ctypes.get_errno())


def _address_of(buffer: Any) -> int:
    import _ctypes

    return int(_ctypes.addressof(buffer))


def _libc(name: str, restype: str, argtypes: str) -> Any:
    """A libc function with simple C types (ctypes type codes: P pointer, i int, L unsigned long)."""
    if not _RAW:
        import ctypes

        codes = {"P": ctypes.c_void_p, "i": ctypes.c_int, "L": ctypes.c_ulong}
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
        function.restype = codes[restype]
        function.argtypes = [codes[c] for c in argtypes]
        return function
    import _ctypes

    types = {code: type(f"C_{code}", (_ctypes._SimpleCData,), {"_type_": code}) for code in set(restype + argtypes)}

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = types[restype]

    class Libc:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]

    function = Function((name, Libc()))  # type: ignore[arg-type]
    function.argtypes = tuple(types[c] for c in argtypes)
    return function


# prctl(2) through _ctypes itself on CPython: the ctypes package costs ~2 ms of start-up and adds
# nothing here. Other interpreters (PyPy's _ctypes is a different implementation) use ctypes.
SOCK_FPROG = struct.Struct("=H6xQ")  # struct sock_fprog on LP64: unsigned short len, pad, filter pointer
_RAW = sys.implementation.name == "cpython"
_prctl_function: Any = None


def _buffer(data: bytes) -> Any:
    """A C buffer holding ``data`` (what ctypes.create_string_buffer makes), kept alive by the caller."""
    if not _RAW:
        import ctypes

        return ctypes.create_string_buffer(data, len(data))
    import _ctypes

    class Char(_ctypes._SimpleCData):
        _type_ = "c"

    class Buffer(_ctypes.Array):
        _type_ = Char
        _length_ = len(data)

    return Buffer.from_buffer_copy(data)


def _prctl_via_ctypes() -> Any:
    import ctypes

    function = ctypes.CDLL(None, use_errno=True).prctl
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_int
    return function


def _prctl_via_raw_ctypes() -> Any:
    import _ctypes

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class ULong(_ctypes._SimpleCData):
        _type_ = "L"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    class Libc:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]

    function = Function(("prctl", Libc()))  # type: ignore[arg-type]
    function.argtypes = (Int, ULong, ULong, ULong, ULong)
    return function


def _prctl(option: int, arg2: int, arg3: int = 0) -> int:
    """prctl(2) through libc; raises OSError with the errno on failure."""
    global _prctl_function
    import _ctypes

    if _prctl_function is None:
        _prctl_function = _prctl_via_raw_ctypes() if _RAW else _prctl_via_ctypes()
    result = int(_prctl_function(option, arg2, arg3, 0, 0))
    if result < 0:
        err = _ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result
