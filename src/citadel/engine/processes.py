"""Processes inside the engine: the engine's own interpreter starts a child *engine*; other programs run
only where the session allows them by path (CAS flow), outside the engine's protection.

``os.fork`` and multiprocessing's ``fork`` method need nothing here: a forked child keeps every shield
(they live in the process). Everything that starts a program goes through
``_posixsubprocess.fork_exec`` (subprocess.Popen, multiprocessing's ``spawn`` and ``forkserver``
methods and its resource tracker, concurrent.futures); `install` replaces it with `fork_exec` below:

* a command ``[sys.executable, *python_args]`` becomes a child engine: the process is forked, set up
  as ``_posixsubprocess`` would (descriptors, working directory, signals, ``preexec_fn``), and
  exec'd as ``python -I -S -B boot.py`` with the engine's own settings and ``CITADEL_CHILD_FD``; the
  child boots, verifies itself and asks its parent over that socket for its configuration
  (`citadel.engine.processes_channel`): the same image, key and tag, the program (``-c``, ``-m`` or
  a sealed script with its arguments), the working directory and the program's environment;
* in the CAS flow, a program whose real path the session allows (``allowed_executables``, pinned
  by `install` in hardening's read-only exec pages) is forked, set up the same way and exec'd from
  its pinned page with the arguments and environment the caller gave; a one-line warning says it
  runs OUTSIDE the engine's protection (no sealed files, no volumes, unprotected output);
* any other program is refused (`GuardRefusal`), and the seccomp filter lets execve run only the
  paths on hardening's read-only pages (`hardening.EXEC_PATH_ADDRESS`).

Engine-safe: stdlib + `cryptography`, Python 3.9.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from citadel.engine import hardening
from citadel.engine.guard import GuardRefusal

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

    from citadel.engine.request import LaunchRequest
    from citadel.seal.image import SealedImage

CHILD_FD = "CITADEL_CHILD_FD"
#: settings a child engine does not repeat (it would print the version again, or only measure)
NOT_INHERITED = ("CITADEL_LAUNCH_FD", CHILD_FD, "CITADEL_VERSION", "CITADEL_HASH", "CITADEL_REBUILD")
PROGRAM_REMEDY = ("inside the engine, os.fork, multiprocessing and subprocess of sys.executable (a child engine) "
                  "work; other programs are not allowed by this engine's policy: a session can allow a program by "
                  "listing its absolute path in the service's allowed_executables (docs/policy.md)")
_FLAGS = frozenset("bBdEhiIOqsSuvVxRP")  # python flags without a value
_VALUE_FLAGS = frozenset("WX")  # python flags with a value
CONFIG_TIMEOUT = 120.0  # seconds a parent waits for a child engine's hello (a first start builds a manifest)


class _Parent:
    """What a child engine receives from this one."""

    __slots__ = ("image", "key", "measurement", "engine_env")

    def __init__(self, image: Optional[SealedImage], key: Optional[bytes], measurement: str,
                 engine_env: Dict[str, str]) -> None:
        self.image, self.key, self.measurement, self.engine_env = image, key, measurement, engine_env


_parent: Optional[_Parent] = None
_warned: Set[str] = set()  # allowed programs this process warned about


def engine_environment(env: Mapping[str, str]) -> Dict[str, str]:
    """The environment a child engine starts with: this engine's own at start, less NOT_INHERITED."""
    return {k: v for k, v in env.items() if k not in NOT_INHERITED}


def install(*, image: Optional[SealedImage], key: Optional[bytes], measurement: str,
            engine_env: Mapping[str, str], allowed_programs: Sequence[str] = ()) -> None:
    """Let the program start child engines (after the guard is installed); once per process.

    ``allowed_programs`` (the CAS flow: the release's allowed_executables) are pinned by their real
    paths in hardening's exec pages; if that is impossible they stay refused, with a warning.
    """
    global _parent
    if _parent is not None:
        return
    from citadel.engine import guard

    _parent = _Parent(image, key, measurement, engine_environment(engine_env))
    if allowed_programs:
        _pin(allowed_programs)
    import _posixsubprocess

    _posixsubprocess.fork_exec = fork_exec  # type: ignore[assignment]
    installed = guard.installed()
    if installed is not None:
        installed.program_check = is_startable


def _pin(paths: Sequence[str]) -> None:
    from citadel.engine import log

    try:
        hardening.pin_programs([os.fsencode(os.path.realpath(p)) for p in paths])
    except OSError as exc:
        log.warning(f"the session allows {len(paths)} program(s), but this engine cannot let the exec filter run "
                    f"them ({exc.strerror}); they stay refused")


def is_startable(path: Any) -> bool:
    """The guard's check of a program about to start: a child engine, or a program the session allows."""
    return is_engine_interpreter(path) or allowed_address(path) is not None


def allowed_address(path: Any) -> Optional[int]:
    """The pinned exec address of ``path`` if its real path is a program the session allows, else None."""
    if _parent is None:
        return None
    try:
        given = os.fsdecode(os.fspath(path))
    except TypeError:
        return None
    if not given.startswith("/"):
        return None  # named by its path only: a bare name or a relative path depends on PATH and the cwd
    return hardening.program_address(os.fsencode(os.path.realpath(given)))


def is_engine_interpreter(path: Any) -> bool:
    """True if ``path`` is this engine's interpreter and child engines can be started at all."""
    if _parent is None or hardening.exec_path() is None:
        return False
    try:
        given = os.fsdecode(os.fspath(path))
    except TypeError:
        return False
    return os.path.realpath(given) == os.path.realpath(sys.executable)


def refusal(program: Any) -> GuardRefusal:
    return GuardRefusal(f"running other programs is not allowed inside the engine yet (the program {program!r} "
                        "is not allowed by this engine's policy)", PROGRAM_REMEDY)


# --- the command line of the child ---------------------------------------------------------------------
def python_program(args: Sequence[str]) -> Dict[str, Any]:
    """The launch-request fields for ``python ARGS`` (what follows the interpreter): command, module or script."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "-m") or (arg[:2] in ("-c", "-m") and len(arg) > 2):
            value = arg[2:] if len(arg) > 2 else (args[i + 1] if i + 1 < len(args) else None)
            rest = list(args[i + (1 if len(arg) > 2 else 2):])
            if value is None:
                break
            if arg[1] == "c":
                return {"command": value, "argv": ["-c", *rest]}
            return {"module": value, "argv": [value, *rest]}
        if arg == "-" or not arg.startswith("-"):
            if arg == "-":
                break
            return {"argv": [arg, *args[i + 1:]]}
        if arg[1:2] in _VALUE_FLAGS:
            i += 1 if len(arg) > 2 else 2
            continue
        if arg.startswith("--") or not set(arg[1:]) <= _FLAGS:
            raise GuardRefusal(f"a child engine does not take the interpreter option {arg!r}",
                               "start child engines with -c, -m or a sealed script")
        i += 1
    raise GuardRefusal(f"a child engine needs something to run (python {' '.join(args)})",
                       "start child engines with -c CODE, -m MODULE or a sealed script; they have no console")


def child_config(args: Sequence[str], cwd: Optional[str], env: Optional[Mapping[str, str]]) -> bytes:
    """The configuration a child engine receives: a launch request (docs/engine.md) plus ``env``."""
    if _parent is None:
        raise refusal(args[0] if args else "")
    image = _parent.image
    doc: Dict[str, Any] = {
        "version": 1, "image": image.root if image is not None else None,
        "key": _parent.key.hex() if image is not None and _parent.key is not None else None,
        "expected_tag": image.tag if image is not None else None, "interactive": False,
        "cwd": os.path.abspath(cwd) if cwd else os.getcwd(),
        "env": dict(os.environ) if env is None else dict(env),
    }
    doc.update(python_program(list(args[1:])))
    return json.dumps(doc).encode("utf-8")


# --- fork_exec ---------------------------------------------------------------------------------------
def fork_exec(args: Sequence[Any], executable_list: Sequence[Any], close_fds: bool, fds_to_keep: Sequence[int],
              cwd: Any, env: Optional[Sequence[bytes]], p2cread: int, p2cwrite: int, c2pread: int, c2pwrite: int,
              errread: int, errwrite: int, errpipe_read: int, errpipe_write: int, restore_signals: bool,
              call_setsid: bool, *rest: Any) -> int:
    """`_posixsubprocess.fork_exec` for child engines (same arguments, 3.9 to 3.12); refuses other programs."""
    try:
        paths = [os.fsdecode(p) for p in executable_list]
    except TypeError:
        raise refusal("_posixsubprocess.fork_exec") from None
    engine = any(is_engine_interpreter(p) for p in paths)
    program = None if engine else next((p for p in paths if allowed_address(p) is not None), None)
    if not engine and program is None:
        raise refusal(os.fsdecode(args[0]) if args else (paths[0] if paths else ""))
    if len(rest) == 7:  # 3.11+: pgid_to_set, gid, extra_groups, uid, child_umask, preexec_fn, allow_vfork
        pgid, gid, groups, uid, umask, preexec = rest[:6]
    else:  # 3.9, 3.10: gid, extra_groups, uid, child_umask, preexec_fn
        pgid, (gid, groups, uid, umask, preexec) = -1, rest[:5]
    if gid is not None or groups is not None or uid is not None:
        raise GuardRefusal(f"a {'child engine' if engine else 'program started inside the engine'} cannot change "
                           "its user or groups", "start it without user=, group= or extra_groups=")
    setup = _ChildSetup(fds_to_keep, close_fds, cwd, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                        errpipe_read, errpipe_write, restore_signals, call_setsid, pgid, umask, preexec)
    if program is not None:
        return _start_program(program, [os.fsencode(a) for a in args], env, setup)
    program_env = None if env is None else dict(_env_item(item) for item in env)
    config = child_config([os.fsdecode(a) for a in args], os.fsdecode(cwd) if cwd is not None else None,
                          program_env)
    return _start_child(config, setup)


def _start_program(path: str, argv: List[bytes], env: Optional[Sequence[Any]], setup: _ChildSetup) -> int:
    """Fork and exec an allowed program from its pinned page (OUTSIDE the engine's protection); its pid."""
    from citadel.engine import log

    address = allowed_address(path)
    if address is None:
        raise refusal(path)
    real = os.path.realpath(path)
    if real not in _warned:
        _warned.add(real)
        log.warning(f"running {real} OUTSIDE the engine's protection (the session allows it): it sees no sealed "
                    "files and no volumes, and its output is not protected")
    execve = _execve_function(address)  # resolved before fork: the child only calls it
    envp = ([os.fsencode(item) for item in env] if env is not None
            else [os.fsencode(f"{k}={v}") for k, v in os.environ.items()])
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _exec_child(setup, -1, execve, argv, envp)
    return pid


def _env_item(item: Any) -> Tuple[str, str]:
    name, _, value = os.fsdecode(item).partition("=")
    return name, value


class _ChildSetup:
    """What `_posixsubprocess` does in the child between fork and exec, as plain values."""

    def __init__(self, fds_to_keep: Sequence[int], close_fds: bool, cwd: Any, p2cread: int, p2cwrite: int,
                 c2pread: int, c2pwrite: int, errread: int, errwrite: int, errpipe_read: int, errpipe_write: int,
                 restore_signals: bool, call_setsid: bool, pgid: int, umask: int, preexec: Any) -> None:
        self.fds_to_keep, self.close_fds, self.cwd = list(fds_to_keep), close_fds, cwd
        self.p2cread, self.p2cwrite, self.c2pread, self.c2pwrite = p2cread, p2cwrite, c2pread, c2pwrite
        self.errread, self.errwrite = errread, errwrite
        self.errpipe_read, self.errpipe_write = errpipe_read, errpipe_write
        self.restore_signals, self.call_setsid, self.pgid, self.umask, self.preexec = (
            restore_signals, call_setsid, pgid, umask, preexec)


def _start_child(config: bytes, setup: _ChildSetup) -> int:
    """Fork, exec the child engine, and hand it ``config`` over the channel; returns its pid."""
    import socket

    from citadel.engine.processes_channel import parent_send

    if _parent is None:
        raise refusal("")
    execve = _execve_function()  # resolved before fork: the child only calls it
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = [os.fsencode(a) for a in (sys.executable, "-I", "-S", "-B",
                                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.py"))]
    envp = [os.fsencode(f"{k}={v}") for k, v in _parent.engine_env.items()]
    envp.append(os.fsencode(f"{CHILD_FD}={theirs.fileno()}"))
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _exec_child(setup, theirs.fileno(), execve, argv, envp)
    theirs.close()
    try:
        ours.settimeout(CONFIG_TIMEOUT)
        parent_send(ours, _parent.measurement, config)
    except BaseException:
        _end_child(pid)
        raise
    finally:
        ours.close()
    return pid


def _end_child(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        return


def _exec_child(setup: _ChildSetup, channel: int, execve: Any, argv: List[bytes], envp: List[bytes]) -> None:
    """In the forked child: set up as _posixsubprocess does, then exec the engine (or report and exit)."""
    stage = "noexec"
    try:
        for fd in (setup.p2cwrite, setup.c2pread, setup.errread, setup.errpipe_read):
            if fd != -1:
                os.close(fd)
        c2pwrite, errwrite = setup.c2pwrite, setup.errwrite
        if c2pwrite == 0:
            c2pwrite = os.dup(c2pwrite)
        while errwrite in (0, 1):
            errwrite = os.dup(errwrite)
        for fd, target in ((setup.p2cread, 0), (c2pwrite, 1), (errwrite, 2)):
            if fd == target:
                os.set_inheritable(fd, True)
            elif fd != -1:
                os.dup2(fd, target)
        if setup.cwd is not None:
            os.chdir(setup.cwd)
        if setup.umask >= 0:
            os.umask(setup.umask)
        if setup.restore_signals:
            import signal

            for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
        if setup.call_setsid:
            os.setsid()
        if setup.pgid >= 0:
            os.setpgid(0, setup.pgid)
        if setup.preexec is not None:
            stage = "preexec"
            setup.preexec()
            stage = "noexec"
        keep = {0, 1, 2, setup.errpipe_write, *setup.fds_to_keep} | ({channel} if channel >= 0 else set())
        for fd in keep - {0, 1, 2, setup.errpipe_write}:
            os.set_inheritable(fd, True)
        if setup.close_fds:
            _close_fds_except(sorted(keep))
        stage = ""
        execve(argv, envp)
    except BaseException as exc:
        if stage == "preexec":
            message = b"SubprocessError:0:Exception occurred in preexec_fn."
        else:
            number = getattr(exc, "errno", None) or 0
            message = b"OSError:%x:%s" % (number, stage.encode())
        with contextlib.suppress(OSError):
            os.write(setup.errpipe_write, message)
    finally:
        os._exit(255)


def _close_fds_except(keep: List[int]) -> None:
    low = 3
    for fd in keep:
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, max(low, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536))


def _execve_function(address: Optional[int] = None) -> Any:
    """execve(ADDRESS, argv, envp) through libc, the only exec the seccomp filter allows: the engine
    interpreter at EXEC_PATH_ADDRESS, or an allowed program at its pinned ``address``."""
    import ctypes

    path_address = hardening.EXEC_PATH_ADDRESS if address is None else address
    if hardening.exec_path() is None:
        raise GuardRefusal("this engine cannot start child engines: its interpreter's path could not be mapped "
                           "where the exec filter allows it", "run the program without subprocesses, or use "
                           "multiprocessing's fork start method")
    function = ctypes.CDLL(None, use_errno=True).execve
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    function.restype = ctypes.c_int

    def execve(argv: List[bytes], envp: List[bytes]) -> None:
        c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
        c_envp = (ctypes.c_char_p * (len(envp) + 1))(*envp, None)
        function(path_address, ctypes.addressof(c_argv), ctypes.addressof(c_envp))
        raise OSError(ctypes.get_errno(), "cannot start the program")

    return execve


# --- the child's side ----------------------------------------------------------------------------------
def receive_launch(fd_text: str, measurement: str) -> Tuple[LaunchRequest, Dict[str, str]]:
    """In a child engine: the configuration from the parent (request, program environment)."""
    from citadel.engine.processes_channel import child_hello, child_receive
    from citadel.engine.request import parse_request
    from citadel.errors import UsageError

    if not fd_text.isdigit() or int(fd_text) < 3:
        raise UsageError(f"{CHILD_FD}={fd_text!r} is not a usable file descriptor",
                         "child engines are started by their parent engine, not by hand")
    fd = int(fd_text)
    try:
        private, hello = child_hello(fd, measurement)
        raw = child_receive(fd, private, hello)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    request = parse_request(raw)
    env = json.loads(raw.decode("utf-8")).get("env")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise UsageError("the child engine's configuration has no environment", "start the program again")
    return request, env


def set_environment(env: Mapping[str, str]) -> None:
    """Make os.environ (and the C environment) exactly ``env`` (the program's, as its parent gave it)."""
    for name in list(os.environ):
        if name not in env:
            del os.environ[name]
    os.environ.update(env)
