"""numpy, sealed with `citadel seal` and run with `citadel run`: bytecode used, host libraries bundled.

The real console script seals a copy of numpy (+ numpy.libs) as a python path; the sealer compiles
its modules and bundles the host libraries its extensions need (libstdc++, libgcc_s, libz). The
real engine then runs an app using numpy without CITADEL_ALLOW_DLOPEN: every library it loads
beyond glibc's core comes from the image, and no sealed numpy module is compiled at import.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tests.conftest import citadel_cmd, clean_env
from tests.integration import engine_harness

engine_cache = engine_harness.engine_cache  # the engine builds its manifest in a private cache

numpy = pytest.importorskip("numpy")
SITE = Path(numpy.__file__).resolve().parent.parent

APP = r'''
import json, sys, time

compiled = []
def count_compiles(event, args):
    if event == "compile" and isinstance(args[1], str) and args[1].endswith(".py"):
        compiled.append(args[1])
sys.addaudithook(count_compiles)

start = time.perf_counter()
import numpy as np
import_ms = (time.perf_counter() - start) * 1000

a = np.arange(15).reshape(3, 5)
m = np.array([[3.0, 1.0], [1.0, 2.0]])
x = np.linalg.solve(m, np.array([9.0, 8.0]))
mapped = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split(None, 5)
        if len(parts) == 6:
            mapped.add(parts[5].strip())
print(json.dumps({
    "shape": list(a.shape), "ndim": a.ndim, "dtype": a.dtype.name, "itemsize": a.itemsize,
    "det": round(float(np.linalg.det(m)), 9), "solve": [round(float(v), 9) for v in x],
    "compiled_numpy": len([f for f in compiled if "/numpy/" in f]),
    "import_ms": import_ms,
    "libraries": sorted(m for m in mapped if ".so" in m),
}))
'''

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_and_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("numpy-app")
    (root / "app").mkdir()
    (root / "app" / "app.py").write_text(APP)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(SITE / "numpy", root / "site" / "numpy", ignore=ignore)
    if not (SITE / "numpy.libs").is_dir():
        pytest.skip("this numpy wheel bundles no libraries (numpy.libs)")
    shutil.copytree(SITE / "numpy.libs", root / "site" / "numpy.libs", ignore=ignore)
    return root


def seal(root: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        citadel_cmd() + ["seal", str(root / "app"), "-o", str(root / f"{name}.img"), "--python-path",
                         str(root / "site"), "--key-out", str(root / f"{name}.key"), "--force", *extra],
        capture_output=True, text=True, env=clean_env(), timeout=600,
    )


def run(root: Path, name: str, cache: Path) -> Dict:
    env = clean_env(CITADEL_MODE="sim", CITADEL_CACHE_DIR=str(cache))
    assert "CITADEL_ALLOW_DLOPEN" not in env
    done = subprocess.run(
        citadel_cmd() + ["run", "--image", str(root / f"{name}.img"), "--key-file", str(root / f"{name}.key"),
                         "app.py"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def from_host(libraries: List[str], name: str) -> List[str]:
    return [lib for lib in libraries if lib.startswith("/") and lib.rsplit("/", 1)[-1].startswith(name)]


def test_sealed_numpy_runs_in_the_engine_with_bundled_libraries_and_bytecode(
    app_and_site: Path, engine_cache: Path
) -> None:
    sealed = seal(app_and_site, "full", "--json")
    assert sealed.returncode == 0, sealed.stderr
    assert "warning" not in sealed.stderr
    doc = json.loads(sealed.stdout)
    assert doc["bytecode"]["enabled"] and doc["bytecode"]["compiled"] > 400
    assert doc["bytecode"]["failed"] == []
    native = {lib["name"]: lib for lib in doc["native"]["libraries"]}
    assert {"libstdc++.so.6", "libgcc_s.so.1", "libz.so.1"} <= set(native)
    assert not any(n.startswith(("libc.so", "libm.so", "ld-linux", "libscipy_openblas")) for n in native)
    for name, lib in native.items():
        assert lib["image_path"] == f".citadel/native/{name}" and lib["region"] == "authenticated"
        assert Path(lib["source"]).is_file() and lib["needed_by"]
    assert doc["native"]["missing"] == [] and doc["native"]["unreadable"] == []

    result = run(app_and_site, "full", engine_cache)
    assert result["shape"] == [3, 5] and result["ndim"] == 2
    assert (result["dtype"], result["itemsize"]) == ("int64", 8)
    assert result["det"] == 5.0 and result["solve"] == [2.0, 3.0]
    assert result["compiled_numpy"] == 0, "the sealed pycs were not used"
    libraries = result["libraries"]
    for name in ("libstdc++.so.6", "libz.so.1"):  # verified copies from memfds, never the host's files
        assert f"/memfd:{name} (deleted)" in libraries
        assert from_host(libraries, name.split(".so")[0] + ".so") == []
    assert "/memfd:libgcc_s.so.1 (deleted)" in libraries


def test_without_bytecode_the_engine_compiles_and_the_summary_names_bundled_libraries(
    app_and_site: Path, engine_cache: Path
) -> None:
    sealed = seal(app_and_site, "nobytecode", "--no-compile")
    assert sealed.returncode == 0, sealed.stderr
    lines = dict(line.split(":", 1) for line in sealed.stdout.splitlines() if not line.startswith("native:"))
    assert "bytecode" not in lines
    natives = [line for line in sealed.stdout.splitlines() if line.startswith("native:")]
    assert any("libstdc++.so.6 <- /" in line and line.endswith("(authenticated)") for line in natives)
    result = run(app_and_site, "nobytecode", engine_cache)
    assert result["shape"] == [3, 5] and result["det"] == 5.0
    assert result["compiled_numpy"] > 50


def test_no_bundle_native_leaves_the_libraries_out(app_and_site: Path) -> None:
    sealed = seal(app_and_site, "nonative", "--no-bundle-native", "--no-compile", "--json")
    assert sealed.returncode == 0, sealed.stderr
    doc = json.loads(sealed.stdout)
    assert doc["native"] == {"enabled": False, "libraries": [], "missing": [], "unreadable": [], "skipped": []}
    assert not (app_and_site / "nonative.img" / ".citadel" / "native").exists()
