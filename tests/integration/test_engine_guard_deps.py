"""A sealed C extension that needs a host library the image does not hold is refused up front.

The extension links libstdc++ (a real host library the measured engine does not include). Sealed
with --no-bundle-native, the dynamic linker would map the host's copy unverified; the guard's
dependency check refuses before anything is mapped, naming the library and the remedy. Sealed
the default way, the library is bundled and the extension runs. With CITADEL_ALLOW_DLOPEN=1 the
host's copy is loaded with a warning (debugging). The real `citadel seal` and `citadel run`.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import citadel_cmd, clean_env
from tests.integration.engine_shields_harness import write_tree

EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")

NEEDS_CXX_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *unused) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "42"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_needs_cxx", NULL, -1, methods};
PyMODINIT_FUNC PyInit__needs_cxx(void) { return PyModule_Create(&def); }
"""

MAIN = """
import cxxpkg._needs_cxx as ext
print("answer", ext.answer())
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None:
        pytest.fail("a C compiler (cc) is needed to build the test extension")
    root = tmp_path_factory.mktemp("deps")
    build = write_tree(root / "build", {"needs.c": NEEDS_CXX_C})
    src = write_tree(root / "src", {"main.py": MAIN, "cxxpkg/__init__.py": ""})
    include = sysconfig.get_paths()["include"]
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", f"-I{include}", "-o",
                    str(src / "cxxpkg" / f"_needs_cxx{EXT_SUFFIX}"), str(build / "needs.c"),
                    "-Wl,--no-as-needed", "-lstdc++"], check=True, capture_output=True)
    needed = subprocess.run(["readelf", "-d", str(src / "cxxpkg" / f"_needs_cxx{EXT_SUFFIX}")],
                            capture_output=True, text=True)
    assert "libstdc++.so.6" in needed.stdout, needed.stdout
    return src


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


def _seal(app: Path, out: Path, *extra: str) -> None:
    done = subprocess.run(citadel_cmd() + ["seal", str(app), "-o", str(out), "--key-out", f"{out}.key", *extra],
                          capture_output=True, text=True, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr


def _run(image: Path, cache: Path, **settings: str) -> subprocess.CompletedProcess:
    env = clean_env(CITADEL_MODE="sim", CITADEL_CACHE_DIR=str(cache), **settings)
    return subprocess.run(citadel_cmd() + ["run", "--image", str(image), "--key-file", f"{image}.key", "main.py"],
                          capture_output=True, text=True, env=env, timeout=120)


def test_host_library_of_a_sealed_extension_is_refused_up_front(app: Path, tmp_path: Path, cache: Path) -> None:
    image = tmp_path / "nonative.img"
    _seal(app, image, "--no-bundle-native")
    done = _run(image, cache)
    assert done.returncode == 77, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("citadel: ")]
    assert len(lines) == 2, done.stderr
    error, hint = lines
    assert error.startswith(f"citadel: error: the sealed file cxxpkg/_needs_cxx{EXT_SUFFIX} needs the library "
                            "libstdc++.so.6, which the image does not hold")
    assert "at main.py line 2" in error
    assert hint.startswith("citadel: hint: seal the application again without --no-bundle-native")
    assert "CITADEL_ALLOW_DLOPEN=1" in hint
    assert done.stdout == ""


def test_the_bundled_library_runs_and_debugging_may_allow_the_host_one(app: Path, tmp_path: Path,
                                                                      cache: Path) -> None:
    bundled = tmp_path / "bundled.img"
    _seal(app, bundled)
    assert list((bundled / ".citadel" / "native").glob("libstdc++.so.6*"))
    done = _run(bundled, cache)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "answer 42\n"

    unbundled = tmp_path / "unbundled.img"
    _seal(app, unbundled, "--no-bundle-native")
    allowed = _run(unbundled, cache, CITADEL_ALLOW_DLOPEN="1")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "answer 42\n"
    assert "libstdc++.so.6" in allowed.stderr and "debugging only" in allowed.stderr
