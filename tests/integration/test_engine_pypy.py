"""The PyPy engine: `citadel run --engine pypy3` runs the same sealed pure-Python app as CPython.

Real processes throughout: the installed `citadel` console script, Debian's PyPy 3.9 in the PyPy
engine environment that scripts/test.sh sets up (citadel.engine.engines.setup_pypy_engine), a
sealed app of several modules with a data file, and a real CAS whose session accepts both engines'
measurements.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from citadel.engine.engines import engine_python, pypy_engine_dir, setup_commands
from citadel.errors import CitadelError, UsageError
from citadel.seal.image import SealedImage
from tests.conftest import citadel_cmd, clean_env
from tests.integration.cas.conftest import Deployment, _deploy
from tests.integration.engine_harness import KEY, sealed_app
from tests.integration.test_engine_cas import create_session, run_env

APP = {
    "main.py": """
        import json, os, sys
        from pkg import util
        from pkg.shapes import Rect, describe

        numbers = util.load("data/numbers.txt")
        out = {
            "engine_independent": True,
            "sum": sum(numbers),
            "mean": sum(numbers) / len(numbers),
            "rects": [describe(Rect(w, h)) for w, h in zip(numbers, numbers[1:])],
            "argv": sys.argv[1:],
            "file": os.path.relpath(__file__, os.path.dirname(os.path.dirname(util.__file__))),
            "doc": util.__doc__,
            "json": json.dumps({"pi": 3.141592653589793, "e": [2.718281828459045, None, True]}, sort_keys=True),
        }
        try:
            util.fail(len(numbers))
        except ZeroDivisionError as exc:
            import traceback
            frames = traceback.extract_tb(exc.__traceback__)
            out["frames"] = [(os.path.basename(f.filename), f.lineno, f.name, f.line) for f in frames]
            out["error"] = repr(exc)
        print(json.dumps(out, sort_keys=True))
        if "--crash" in sys.argv:
            util.crash()
    """,
    "pkg/__init__.py": "",
    "pkg/util.py": '''
        """Helpers of the sealed app."""
        import os


        def load(rel):
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            with open(os.path.join(root, rel), encoding="utf-8") as fh:
                return [int(line) for line in fh if line.strip()]


        def fail(n):
            return n // 0


        def crash():
            raise RuntimeError("the sealed app crashed on purpose")
    ''',
    "pkg/shapes.py": """
        class Rect:
            def __init__(self, w, h):
                self.w, self.h = w, h

            def area(self):
                return self.w * self.h


        def describe(rect):
            return f"{rect.w}x{rect.h}={rect.area()}"
    """,
    "data/numbers.txt": "3\n1\n4\n1\n5\n9\n2\n6\n",
}


@pytest.fixture(scope="module")
def pypy() -> str:
    """The PyPy engine's interpreter; fails (not skips) when scripts/test.sh did not set it up."""
    try:
        python = engine_python("pypy3")
    except CitadelError as exc:
        pytest.fail(f"{exc.cause}; {exc.remedy}")
    assert python is not None
    return python


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_app(tmp_path_factory.mktemp("pypy-app"), APP)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pypy-key") / "app.key"
    path.write_text(KEY.hex() + "\n")
    path.chmod(0o600)
    return path


def citadel(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(citadel_cmd() + list(args), capture_output=True, text=True,
                          env=clean_env(LANG="C.UTF-8", **env), timeout=300)


def run_app(engine: str, app: Path, key_file: Path, *args: str) -> subprocess.CompletedProcess:
    return citadel("run", "--mode", "sim", "--engine", engine, "--image", str(app), "--key-file", str(key_file),
                   "main.py", *args)


def traceback_frames(stderr: str) -> List[str]:
    """The engine-independent part of a printed traceback: its File lines and the exception line."""
    lines = stderr.splitlines()
    start = lines.index("Traceback (most recent call last):")
    return [line for line in lines[start:] if line.startswith("  File ")] + [lines[-1]]


def test_the_same_sealed_app_gives_the_same_output_on_cpython_and_pypy(pypy: str, app: Path, key_file: Path) -> None:
    cpython = run_app("cpython", app, key_file, "one", "--two")
    on_pypy = run_app("pypy3", app, key_file, "one", "--two")
    assert cpython.returncode == 0, cpython.stderr
    assert on_pypy.returncode == 0, on_pypy.stderr
    assert on_pypy.stdout == cpython.stdout
    out = json.loads(cpython.stdout)
    assert out["sum"] == 31 and out["argv"] == ["one", "--two"] and out["file"] == "main.py"
    assert out["rects"][:2] == ["3x1=3", "1x4=4"] and out["doc"] == "Helpers of the sealed app."
    assert [frame[:3] for frame in out["frames"]] == [["main.py", 18, "<module>"], ["util.py", 13, "fail"]]
    assert out["frames"][1][3] == "return n // 0", "source lines come from the sealed files"


def test_an_uncaught_exception_prints_the_same_traceback_on_both(pypy: str, app: Path, key_file: Path) -> None:
    cpython = run_app("cpython", app, key_file, "--crash")
    on_pypy = run_app("pypy3", app, key_file, "--crash")
    assert (cpython.returncode, on_pypy.returncode) == (1, 1), (cpython.stderr, on_pypy.stderr)
    assert traceback_frames(on_pypy.stderr) == traceback_frames(cpython.stderr)
    frames = traceback_frames(cpython.stderr)
    assert frames[-1] == "RuntimeError: the sealed app crashed on purpose"
    assert str(app / "pkg" / "util.py") in frames[-2] and "citadel/engine" not in cpython.stderr + on_pypy.stderr


def test_the_two_engines_have_different_measurements(pypy: str) -> None:
    cpython = citadel("measure", "--mode", "sim", "--json")
    on_pypy = citadel("measure", "--mode", "sim", "--engine", "pypy3", "--json")
    by_setting = citadel("measure", "--mode", "sim", CITADEL_ENGINE="pypy3")
    assert cpython.returncode == 0 and on_pypy.returncode == 0 and by_setting.returncode == 0, on_pypy.stderr
    cp, pp = json.loads(cpython.stdout), json.loads(on_pypy.stdout)
    assert re.fullmatch("[0-9a-f]{64}", pp["measurement"])
    assert cp["measurement"] != pp["measurement"]
    assert by_setting.stdout.strip() == pp["measurement"]
    assert cp["engine_manifest"] != pp["engine_manifest"], "each interpreter has its own engine manifest"
    manifest = Path(pp["engine_manifest"]).read_text()
    assert "cryptography/cryptography/__init__.py" in manifest and "/pypy" in manifest.split("\n", 2)[1] + \
        "".join(line for line in manifest.splitlines() if " exe/" in line)


def test_the_guard_refuses_other_programs_on_pypy(pypy: str, tmp_path: Path, key_file: Path) -> None:
    marker = tmp_path / "ran"
    image = sealed_app(tmp_path, {"spawn.py": f"""
        import os, subprocess
        try:
            subprocess.run(["true"])
        except PermissionError as exc:
            print("caught:", exc)
        # PyPy 3.9 raises no audit events for these: the guard wraps them, so they get its message
        try:
            os.system("touch {marker}")
        except PermissionError as exc:
            print("system refused:", exc)
        try:
            os.execv("/bin/true", ["true"])
        except PermissionError as exc:
            print("execv refused:", exc)
        subprocess.Popen(["true"])
    """})
    done = citadel("run", "--mode", "sim", "--engine", "pypy3", "--image", str(image), "--key-file", str(key_file),
                   "spawn.py")
    assert done.returncode == 77, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("caught: running other programs is not allowed inside the engine")
    assert lines[1].startswith("system refused: running other programs is not allowed"), lines
    assert lines[2].startswith("execv refused: running other programs is not allowed"), lines
    assert not marker.exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("citadel: error: ")]
    assert len(errors) == 1 and "running other programs is not allowed" in errors[0], done.stderr
    assert "(at spawn.py line 16)" in errors[0]


def test_a_missing_pypy_engine_is_one_clear_error(tmp_path: Path, key_file: Path, app: Path) -> None:
    done = citadel("run", "--engine", "/nonexistent/pypy3", "--image", str(app), "--key-file", str(key_file),
                   "main.py")
    assert done.returncode != 0
    assert done.stderr.splitlines() == [
        "citadel: error: CITADEL_ENGINE=/nonexistent/pypy3 is not an executable interpreter",
        "citadel: hint: give the absolute path of a Python interpreter, or use cpython or pypy3"]
    bad = citadel("run", "--engine", "jython", "--image", str(app), "--key-file", str(key_file), "main.py")
    assert bad.returncode == UsageError("", "").exit_code and "CITADEL_ENGINE='jython' is not an engine" in bad.stderr
    assert pypy_engine_dir() in setup_commands(pypy_engine_dir())


# --- attested on PyPy: one session accepts both engines ---------------------------------------------
@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from _deploy(tmp_path_factory, "sqlite", None)


def _measure(deployment: Deployment, cache: Path, engine: str) -> str:
    done = subprocess.run(citadel_cmd() + ["measure", "--mode", "sim", "--engine", engine, "--cas",
                                           deployment.server.url, "--cas-fingerprint", deployment.server.fingerprint],
                          capture_output=True, text=True, env=run_env(deployment, cache), timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_one_session_accepts_the_cpython_and_the_pypy_engine(
        pypy: str, deployment: Deployment, app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cpython, on_pypy = _measure(deployment, cache, "cpython"), _measure(deployment, cache, "pypy3")
    assert cpython != on_pypy
    name = f"s{secrets.token_hex(6)}"
    create_session(deployment, f"""\
name: {name}
version: "1"
services:
  - name: app
    command: main.py from-the-policy
    image:
      key: $$citadel:image_key$$
      tag: {SealedImage.open(str(app), KEY).tag}
    attestation:
      tee: [sim]
      measurements: [{cpython}, {on_pypy}]
      tolerate: [sim]
secrets:
  - {{name: image_key, kind: binary, value: "{KEY.hex()}"}}
""")
    outputs = {}
    for engine in ("cpython", "pypy3"):
        done = subprocess.run(citadel_cmd() + ["run", "--engine", engine, "--cas", deployment.server.url,
                                               "--cas-fingerprint", deployment.server.fingerprint,
                                               "--config-id", f"{name}/app", "--image", str(app)],
                              capture_output=True, text=True, timeout=120,
                              env=run_env(deployment, cache, CITADEL_VERSION="1"))
        assert done.returncode == 0, done.stderr
        measured = cpython if engine == "cpython" else on_pypy
        assert f"citadel: measurement: {measured}" in done.stderr
        outputs[engine] = done.stdout
    assert outputs["pypy3"] == outputs["cpython"]
    assert json.loads(outputs["pypy3"])["argv"] == ["from-the-policy"]
    # a session that lists only the CPython engine refuses the PyPy one
    other = f"s{secrets.token_hex(6)}"
    create_session(deployment, f"""\
name: {other}
version: "1"
services:
  - name: app
    command: main.py
    image:
      key: $$citadel:image_key$$
    attestation:
      tee: [sim]
      measurements: [{cpython}]
      tolerate: [sim]
secrets:
  - {{name: image_key, kind: binary, value: "{KEY.hex()}"}}
""")
    refused = subprocess.run(citadel_cmd() + ["run", "--engine", "pypy3", "--cas", deployment.server.url,
                                              "--cas-fingerprint", deployment.server.fingerprint,
                                              "--config-id", f"{other}/app", "--image", str(app)],
                             capture_output=True, text=True, timeout=120, env=run_env(deployment, cache))
    assert refused.returncode == 77, refused.stderr
    assert "measurement_not_accepted" in refused.stderr
    assert os.path.basename(pypy).startswith("python")
