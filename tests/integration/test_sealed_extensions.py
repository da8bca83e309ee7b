"""C extension modules load from the image through memfds, with their bundled libraries, verified first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from citadel.seal.format import UNPROTECTED
from tests.integration.engine_shields_harness import (
    SITE_PACKAGES,
    engine_code,
    last_json,
    normalised,
    python,
    run_sealed,
    run_unsealed,
    seal,
    trusted_site,
    write_tree,
)

LIBGREET = "libgreet-0a1b2c3d.so.1"
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")

GREET_C = r"""
#include <unistd.h>
int greet_value(int x) { return getpid() > 0 ? 6 * x : 0; }  /* getpid: a libc.so.6 dependency */
"""

# single-phase init, calls into the bundled library
FAST_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <unistd.h>
int greet_value(int x);
static PyObject *times_six(PyObject *self, PyObject *arg) {
    long x = PyLong_AsLong(arg);
    if (x == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLong(getppid() >= 0 ? greet_value((int)x) : 0);
}
static PyMethodDef methods[] = {{"times_six", times_six, METH_O, "6x"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_fast", NULL, -1, methods};
PyMODINIT_FUNC PyInit__fast(void) { return PyModule_Create(&def); }
"""

# multi-phase init (PEP 489), no dependencies
PHASED_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static int exec_phased(PyObject *m) { return PyModule_AddIntConstant(m, "ANSWER", 42); }
static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec_phased}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_phased", NULL, 0, NULL, slots};
PyMODINIT_FUNC PyInit__phased(void) { return PyModuleDef_Init(&def); }
"""

MAIN = """
import json, os, sys
from fastpkg import _fast, _phased
here = os.path.dirname(os.path.abspath(__file__))
print(json.dumps({"six": _fast.times_six(7), "answer": _phased.ANSWER,
                  "fast_file": os.path.relpath(_fast.__file__, here),
                  "phased_file": os.path.relpath(_phased.__file__, here),
                  "origin": os.path.relpath(_fast.__spec__.origin, here)}))
"""


def _cc(*args: str) -> None:
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trusted_site(tmp_path_factory.mktemp("trusted-site"))


@pytest.fixture(scope="module")
def ext_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app whose package has two C extensions, one needing a library bundled in fastpkg.libs/."""
    if shutil.which("cc") is None:
        pytest.fail("a C compiler (cc) is needed to build the test extension")
    root = tmp_path_factory.mktemp("ext")
    build = write_tree(root / "build", {"greet.c": GREET_C, "fast.c": FAST_C, "phased.c": PHASED_C})
    src = write_tree(root / "src", {"main.py": MAIN, "fastpkg/__init__.py": ""})
    libs = src / "fastpkg.libs"
    libs.mkdir()
    _cc(f"-Wl,-soname,{LIBGREET}", "-o", str(libs / LIBGREET), str(build / "greet.c"))
    include = sysconfig.get_paths()["include"]
    _cc(
        f"-I{include}",
        "-o",
        str(src / "fastpkg" / f"_fast{EXT_SUFFIX}"),
        str(build / "fast.c"),
        str(libs / LIBGREET),
        "-Wl,-rpath,$ORIGIN/../fastpkg.libs",
    )
    _cc(f"-I{include}", "-o", str(src / "fastpkg" / f"_phased{EXT_SUFFIX}"), str(build / "phased.c"))
    return src


def test_extensions_load_from_memfds_like_unsealed(ext_app: Path, tmp_path: Path, site: Path) -> None:
    unsealed = run_unsealed(ext_app, "main.py")
    assert unsealed.returncode == 0, unsealed.stderr
    key = seal(ext_app, tmp_path / "img")
    sealed = run_sealed(tmp_path / "img", key, site, "main.py")
    assert sealed.returncode == 0, sealed.stderr
    assert normalised(sealed.stdout, tmp_path / "img") == normalised(unsealed.stdout, ext_app)
    assert last_json(sealed.stdout) == {
        "six": 42,
        "answer": 42,
        "fast_file": f"fastpkg/_fast{EXT_SUFFIX}",
        "phased_file": f"fastpkg/_phased{EXT_SUFFIX}",
        "origin": f"fastpkg/_fast{EXT_SUFFIX}",
    }


def test_libraries_and_extensions_are_mapped_from_memory_only(ext_app: Path, tmp_path: Path, site: Path) -> None:
    key = seal(ext_app, tmp_path / "img")
    body = """
        import json
        from fastpkg import _fast
        from citadel.engine import importer, libraries
        maps = open("/proc/self/maps").read()
        print(json.dumps({
            "loaded": importer.installed_libraries(),
            "memfd_greet": "/memfd:LIB (deleted)" in maps,
            "memfd_fast": "/memfd:_fast" in maps,
            "image_paths_mapped": [l for l in maps.splitlines() if IMAGE in l],
            "allowed": sorted(p.rsplit("/", 1)[0] for p in libraries.allowed()),
        }))
        """.replace("LIB", LIBGREET).replace("IMAGE", repr(str((tmp_path / "img").resolve())))
    done = python(engine_code(tmp_path / "img", key, site, body=body))
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout) == {
        "loaded": [f"fastpkg.libs/{LIBGREET}"],
        "memfd_greet": True,
        "memfd_fast": True,
        "image_paths_mapped": [],
        "allowed": ["/proc/self/fd", "/proc/self/fd"],
    }


def test_tampered_bundled_library_is_never_loaded(ext_app: Path, tmp_path: Path, site: Path) -> None:
    key = seal(ext_app, tmp_path / "img", rules=[("fastpkg.libs/*", "authenticated")])
    lib = tmp_path / "img" / "fastpkg.libs" / LIBGREET
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    done = python(
        engine_code(
            tmp_path / "img",
            key,
            site,
            body="""
        try:
            from fastpkg import _fast
        finally:
            print("greet mapped:", "LIB" in open("/proc/self/maps").read())
        """.replace("LIB", LIBGREET),
        )
    )
    assert done.returncode != 0
    assert f"sealed file 'fastpkg.libs/{LIBGREET}' does not match its recorded SHA-256" in done.stderr
    assert done.stdout == "greet mapped: False\n"


def test_extension_in_the_unprotected_region_is_refused(ext_app: Path, tmp_path: Path, site: Path) -> None:
    key = seal(ext_app, tmp_path / "img", rules=[(f"fastpkg/_phased{EXT_SUFFIX}", UNPROTECTED)])
    done = python(engine_code(tmp_path / "img", key, site, body="from fastpkg import _phased\n"))
    assert done.returncode != 0
    assert (
        f"refusing to import 'fastpkg._phased': 'fastpkg/_phased{EXT_SUFFIX}' is in the image's unprotected region"
    ) in done.stderr


def test_load_extension_from_bytes_for_the_trusted_base(ext_app: Path, tmp_path: Path, site: Path) -> None:
    """The helper the engine uses for verified extensions outside the image (no image needed)."""
    path = ext_app / "fastpkg" / f"_phased{EXT_SUFFIX}"
    code = f"""
import sys
sys.path += [{str(Path(__file__).resolve().parents[2] / "src")!r}]
import importlib.machinery
from citadel.engine.extensions import load_extension_from_bytes
data = open({str(path)!r}, "rb").read()
spec = importlib.machinery.ModuleSpec("_phased", None, origin="/verified/_phased.so")
module = load_extension_from_bytes(spec, data)
mapped = "/memfd:_phased.so" in open("/proc/self/maps").read()
print(module.ANSWER, module.__file__, sys.modules["_phased"] is module, mapped)
"""
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "42 /verified/_phased.so True True\n"


NUMPY_MAIN = """
import json, sys
import numpy as np
a = np.arange(15).reshape(3, 5)
m = np.array([[4.0, 7.0, 2.0], [3.0, 6.0, 1.0], [2.0, 5.0, 3.0]])
big = np.linspace(0, 1, 400 * 400).reshape(400, 400) + np.eye(400)
print(repr(a))
print(json.dumps({"shape": a.shape, "ndim": a.ndim, "dtype": a.dtype.name, "itemsize": a.itemsize,
                  "type": type(a).__name__, "inv": np.round(np.linalg.inv(m), 6).tolist(),
                  "det": round(float(np.linalg.det(m)), 6),
                  "solve": np.round(np.linalg.solve(big, np.ones(400))[:3], 9).tolist(),
                  "matmul": float((big @ big).trace()).hex(),
                  "file": np.__file__.rsplit("numpy", 1)[1]}))
"""


def test_numpy_from_a_sealed_python_path(tmp_path: Path, site: Path) -> None:
    packages = tmp_path / "site-packages"
    ignore = shutil.ignore_patterns("__pycache__", "tests")
    for name in ("numpy", "numpy.libs"):
        shutil.copytree(SITE_PACKAGES / name, packages / name, ignore=ignore)
    app = write_tree(tmp_path / "app", {"main.py": NUMPY_MAIN})
    unsealed = run_unsealed(app, "main.py", python_paths=[packages])
    assert unsealed.returncode == 0, unsealed.stderr
    key = seal(app, tmp_path / "img", python_paths=[packages])
    sealed = run_sealed(tmp_path / "img", key, site, "main.py")
    assert sealed.returncode == 0, sealed.stderr
    assert sealed.stdout == unsealed.stdout
    assert sealed.stdout.startswith("array([[ 0,  1,  2,  3,  4],\n       [ 5,  6,  7,  8,  9],\n")
    result = last_json(sealed.stdout)
    assert (result["shape"], result["ndim"], result["dtype"], result["itemsize"]) == ([3, 5], 2, "int64", 8)
    body = """
        import json
        import numpy
        from citadel.engine import importer
        maps = open("/proc/self/maps").read()
        print(json.dumps(importer.installed_libraries()))
        print("openblas from memfd:", "/memfd:libscipy_openblas" in maps,
              "from disk:", "/numpy.libs/" in maps)
        """
    done = python(engine_code(tmp_path / "img", key, site, body=body))
    assert done.returncode == 0, done.stderr
    loaded, memfd = done.stdout.splitlines()
    names = [p.rsplit("/", 1)[1] for p in json.loads(loaded)]
    bundled = sorted(p.name for p in (SITE_PACKAGES / "numpy.libs").iterdir())
    assert sorted(names) == bundled  # every bundled library, each loaded once
    order = {name.split("-")[0].split(".")[0]: i for i, name in enumerate(names)}
    # dependency order: quadmath before gfortran (which needs it) before OpenBLAS (which needs gfortran)
    assert order["libquadmath"] < order["libgfortran"] < next(i for n, i in order.items() if "openblas" in n)
    assert memfd == "openblas from memfd: True from disk: False"


def test_system_dependencies_are_put_to_the_policy_before_anything_loads(
    ext_app: Path, tmp_path: Path, site: Path
) -> None:
    """Names the image does not hold go to libraries.check_dependency (the guard's hook) first."""
    key = seal(ext_app, tmp_path / "img")
    body = """
        import json
        from citadel.engine import libraries
        asked = []
        def policy(name, needed_by):
            asked.append([name, needed_by])
            if REFUSE_LIBC and name == "libc.so.6":
                raise PermissionError(f"policy refuses {name} for {needed_by}")
        libraries.set_dependency_check(policy)
        try:
            from fastpkg import _fast
            outcome = "loaded"
        except PermissionError as exc:
            outcome = str(exc)
        maps = open("/proc/self/maps").read()
        print(json.dumps({"asked": asked, "outcome": outcome,
                          "mapped": ["/memfd:@GREET@" in maps, "/memfd:_fast" in maps]}))
        """.replace("@GREET@", LIBGREET)
    allowed = python(engine_code(tmp_path / "img", key, site, body=body.replace("REFUSE_LIBC", "False")))
    assert allowed.returncode == 0, allowed.stderr
    fast = f"fastpkg/_fast{EXT_SUFFIX}"
    result = last_json(allowed.stdout)
    assert result["outcome"] == "loaded" and result["mapped"] == [True, True]
    assert ["libc.so.6", f"fastpkg.libs/{LIBGREET}"] in result["asked"]
    assert ["libc.so.6", fast] in result["asked"]
    assert not [name for name, _ in result["asked"] if name == LIBGREET]  # sealed: never asked about

    refused = python(engine_code(tmp_path / "img", key, site, body=body.replace("REFUSE_LIBC", "True")))
    assert refused.returncode == 0, refused.stderr
    assert last_json(refused.stdout)["outcome"] == f"policy refuses libc.so.6 for fastpkg.libs/{LIBGREET}"
    assert last_json(refused.stdout)["mapped"] == [False, False]
