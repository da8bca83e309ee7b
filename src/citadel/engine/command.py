"""How the host starts the engine: its command line and its clean environment (launcher side).

The engine runs as an isolated interpreter, ``python -I -S -B <boot.py>``: ``-I`` ignores every
``PYTHON*`` variable and the user's site directory, ``-S`` skips ``site`` (no .pth files, no
site-packages: the engine finds its trusted base through the engine manifest), ``-B`` writes no
bytecode. Its environment holds only the ``CITADEL_*`` settings and the locale, terminal, time
zone, home and cache directory. Imported by the launcher, never inside the engine; its imports
are lazy to keep `citadel run` quick.
"""

from __future__ import annotations

import os
import sys

from citadel.errors import EngineError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Dict, List, Mapping, Optional, Tuple

PASSED_THROUGH = ("LANG", "TERM", "TZ", "HOME", "XDG_CACHE_HOME")
PASSED_PREFIXES = ("LC_",)
SETTING_PREFIX = "CITADEL_"
INTERNAL = ("CITADEL_LAUNCH_FD",)  # set by the launcher for each start, never taken from the host


def boot_script() -> str:
    """Absolute path of the engine's boot script (inside this citadel installation)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.py")


def resolve_python(python: Optional[str] = None) -> str:
    """The interpreter the engine runs on, as an absolute path (default: the one running citadel)."""
    candidate = python or sys.executable
    if os.sep not in candidate:
        import shutil

        found = shutil.which(candidate)
        if found is None:
            raise EngineError(f"no Python interpreter named {candidate!r} on PATH",
                              "give the path of the interpreter, e.g. --python /usr/bin/python3")
        candidate = found
    return os.path.abspath(candidate)


def engine_command(python: Optional[str] = None, engine: Optional[str] = None) -> List[str]:
    """The argv the launcher runs: [python, "-I", "-S", "-B", <boot.py>].

    ``python`` (an explicit interpreter) wins; else ``engine`` (a CITADEL_ENGINE value: cpython,
    pypy3 or a path, citadel.engine.engines) chooses it; else the interpreter running citadel.
    """
    if python is None and engine:
        from citadel.engine.engines import engine_python

        python = engine_python(engine)
    return [resolve_python(python), "-I", "-S", "-B", boot_script()]


def engine_environment(settings_env: Mapping[str, str], host_env: Optional[Mapping[str, str]] = None
                       ) -> Dict[str, str]:
    """The engine's whole environment: CITADEL_* settings, plus locale, TERM, TZ, HOME, XDG_CACHE_HOME.

    ``settings_env`` holds the settings (host CITADEL_* variables with flags applied); only its
    CITADEL_* entries are used. The rest comes from ``host_env`` (default os.environ). PYTHON*
    and everything else of the host never reaches the engine.
    """
    host = os.environ if host_env is None else host_env
    env = {k: v for k, v in host.items() if k in PASSED_THROUGH or k.startswith(PASSED_PREFIXES)}
    for key, value in settings_env.items():
        if key.startswith(SETTING_PREFIX) and key not in INTERNAL:
            env[key] = value
    return env


def manifest_paths(python: Optional[str] = None, settings_env: Optional[Mapping[str, str]] = None
                   ) -> Tuple[str, str]:
    """(engine manifest, cache file) the engine on ``python`` uses, as bootstrap.py computes them."""
    import hashlib

    from citadel.engine.bootstrap import cache_paths

    engine_dir = os.path.dirname(os.path.abspath(__file__))
    env = engine_environment(settings_env or {})
    return cache_paths(os.path.dirname(os.path.dirname(engine_dir)), hashlib.sha256, env,
                       engine_command(python, env.get("CITADEL_ENGINE"))[0])


def measure_engine(python: Optional[str] = None, settings_env: Optional[Mapping[str, str]] = None, *,
                   rebuild: bool = False, timeout: float = 300.0) -> str:
    """The engine measurement, as the engine itself computes it (runs it with CITADEL_HASH=1).

    ``rebuild`` first rebuilds the engine manifest from the files installed now. The mode and
    CITADEL_ALLOW_DLOPEN come from ``settings_env``; CITADEL_MODE=hw is measured even where no
    TEE is present. Raises the engine's own error (cause and remedy) when it cannot.
    """
    import subprocess

    env = engine_environment(settings_env or {})
    env["CITADEL_HASH"] = "1"
    env.pop("CITADEL_VERSION", None)
    if rebuild:
        env["CITADEL_REBUILD"] = "1"
    try:
        proc = subprocess.run(engine_command(python, env.get("CITADEL_ENGINE")), env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except OSError as exc:
        raise EngineError(f"cannot start the engine interpreter: {exc.strerror}",
                          "check the --python path") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"the engine did not finish measuring itself within {timeout:.0f} s",
                          "check the machine's load and try again") from None
    digest = proc.stdout.strip()
    if proc.returncode == 0 and len(digest) == 64:
        return digest
    raise _engine_error(proc.stderr, proc.returncode)


def _engine_error(stderr: str, status: int) -> EngineError:
    """The engine's own two lines as an EngineError, or a generic one naming the status."""
    cause = remedy = ""
    for line in stderr.splitlines():
        if line.startswith("citadel: error: ") and not cause:
            cause = line[len("citadel: error: "):]
        elif line.startswith("citadel: hint: ") and not remedy:
            remedy = line[len("citadel: hint: "):]
    if cause:
        return EngineError(cause, remedy)
    tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    return EngineError(f"the engine could not measure itself (status {status}: {tail})",
                       "run `citadel doctor` to check this installation")
