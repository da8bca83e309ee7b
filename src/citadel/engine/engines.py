"""Which interpreter the engine runs on: CPython (the default) or PyPy (launcher side).

``CITADEL_ENGINE`` (or ``--engine``) names it: ``cpython`` is the interpreter running citadel,
``pypy3`` the PyPy engine environment, any absolute path that interpreter. The PyPy engine
environment is a venv made with Debian's ``pypy3`` holding ``cryptography`` 41.0.7 (the newest with
a PyPy 3.9 wheel); the engine's own files come from this citadel installation, as for CPython
(boot.py finds them beside itself). It lives in ``<the venv running citadel>/pypy-engine``, or,
when citadel is not installed in a venv, in ``$XDG_DATA_HOME/citadel/pypy-engine`` (default
``~/.local/share/citadel/pypy-engine``). docs/engine.md, "Engines". Imported by the launcher, never
inside the engine; standard library only.
"""

from __future__ import annotations

import os
import subprocess
import sys

from citadel.engine.settings import parse_engine
from citadel.errors import EngineError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import List, Optional

PYPY_ENGINE_DIR = "pypy-engine"
#: cryptography 41.0.7 is the newest release with a PyPy 3.9 wheel (pypy39_pp73 manylinux)
PYPY_CRYPTOGRAPHY = "cryptography>=41,<42"
#: the packages whose files the engine imports (compiled for PyPy at set-up so it starts faster)
ENGINE_PACKAGES = ("citadel/__init__.py", "citadel/errors.py", "citadel/crypto.py", "citadel/seal",
                   "citadel/attest", "citadel/engine", "citadel/volume")


def pypy_engine_dir(environ: Optional[dict] = None) -> str:
    """Where the PyPy engine environment lives (see the module docstring)."""
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return os.path.join(sys.prefix, PYPY_ENGINE_DIR)
    env = os.environ if environ is None else environ
    data = env.get("XDG_DATA_HOME", "")
    if not data or not os.path.isabs(data):
        data = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "citadel", PYPY_ENGINE_DIR)


def setup_commands(target: str) -> str:
    """The shell commands that make the PyPy engine environment at ``target`` (for messages and docs)."""
    return (f"apt-get install pypy3 pypy3-venv; pypy3 -m venv {target} && "
            f"{target}/bin/python -m pip install --only-binary=:all: '{PYPY_CRYPTOGRAPHY}'")


def engine_python(engine: Optional[str], *, pypy_dir: Optional[str] = None) -> Optional[str]:
    """The interpreter for a ``CITADEL_ENGINE`` value; None (unset) means the one running citadel.

    Raises UsageError for a value that is no engine, EngineError when the PyPy engine environment
    (or the named interpreter) is missing, with the commands that set it up. ``pypy_dir``
    overrides where the PyPy engine environment is looked for (default: pypy_engine_dir()).
    """
    if engine is None or not engine.strip():
        return None
    choice = parse_engine("CITADEL_ENGINE", engine)
    if choice == "cpython":
        if sys.implementation.name == "cpython":
            return sys.executable
        return _on_path("python3")
    if choice == "pypy3":
        target = pypy_dir or pypy_engine_dir()
        python = os.path.join(target, "bin", "python")
        if not os.access(python, os.X_OK):
            raise EngineError(f"the PyPy engine is not set up: {python} does not exist",
                              f"set it up once: {setup_commands(target)}")
        if not os.path.isdir(os.path.join(target, "lib", "pypy3.9", "site-packages", "cryptography")):
            raise EngineError(f"the PyPy engine at {target} has no cryptography package",
                              f"install it: {target}/bin/python -m pip install --only-binary=:all: "
                              f"'{PYPY_CRYPTOGRAPHY}'")
        return python
    if not os.access(choice, os.X_OK) or os.path.isdir(choice):
        raise EngineError(f"CITADEL_ENGINE={choice} is not an executable interpreter",
                          "give the absolute path of a Python interpreter, or use cpython or pypy3")
    return choice


def _on_path(name: str) -> str:
    import shutil

    found = shutil.which(name)
    if found is None:
        raise EngineError(f"no interpreter named {name} on PATH for CITADEL_ENGINE=cpython",
                          "give the interpreter's absolute path in CITADEL_ENGINE instead")
    return found


def setup_pypy_engine(target: Optional[str] = None, *, pypy: str = "pypy3", citadel_dir: Optional[str] = None
                      ) -> str:
    """Make (or complete) the PyPy engine environment; returns its interpreter.

    Runs ``pypy3 -m venv``, installs cryptography's binary wheel with pip (network or a local
    index), and compiles the engine's own modules for PyPy (``__pycache__/*.pypy39.pyc``, which
    the engine manifest then lists) so the engine need not compile them at every start.
    """
    target = target or pypy_engine_dir()
    python = os.path.join(target, "bin", "python")
    if not os.access(python, os.X_OK):
        _run([pypy, "-m", "venv", target], f"install PyPy first: {setup_commands(target)}")
    _run([python, "-m", "pip", "install", "-q", "--only-binary=:all:", PYPY_CRYPTOGRAPHY],
         "check the network (or PIP_INDEX_URL) and try again")
    parent = citadel_dir or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [os.path.join(parent, rel) for rel in ENGINE_PACKAGES]
    _run([python, "-m", "compileall", "-q", *paths], "check that the citadel installation is writable")
    return python


def _run(argv: List[str], remedy: str) -> None:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as exc:
        raise EngineError(f"cannot run {argv[0]}: {exc.strerror}", remedy) from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no message").splitlines()[-1]
        raise EngineError(f"{' '.join(argv[:3])} failed (status {proc.returncode}): {tail}", remedy)
