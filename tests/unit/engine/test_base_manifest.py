"""What the engine manifest builder selects from a tree, and that every byte of it is measured."""

from __future__ import annotations

import hashlib
import os
import py_compile
import sys
import time
from pathlib import Path

from citadel.engine import base_manifest
from citadel.engine.measure import measurement_of_manifest
from citadel.engine.trusted_base import parse_cache, parse_manifest

TAG = sys.implementation.cache_tag
SUFFIXES = [".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".so"]


def fake_stdlib(root: Path) -> Path:
    files = {
        "os2.py": "X = 1\n", "json2/__init__.py": "", "json2/decoder.py": "D = 1\n", "typing2.pyi": "",
        "test/test_x.py": "", "idlelib/x.py": "", "tkinter/__init__.py": "", "lib2to3/tests/data.py": "",
        "site-packages/evil.py": "", "config-3.11-x86_64-linux-gnu/Makefile": "", "README.txt": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    dynload = root / "lib-dynload"
    dynload.mkdir()
    for name in ("_json.cpython-311-x86_64-linux-gnu.so", "_testcapi.cpython-311-x86_64-linux-gnu.so",
                 "xxlimited.cpython-311-x86_64-linux-gnu.so", "_tkinter.cpython-311-x86_64-linux-gnu.so"):
        (dynload / name).write_bytes(b"\x7fELF fake")
    py_compile.compile(str(root / "os2.py"), cfile=str(root / "__pycache__" / f"os2.{TAG}.pyc"), doraise=True)
    py_compile.compile(str(root / "json2" / "decoder.py"),
                       cfile=str(root / "json2" / "__pycache__" / f"decoder.{TAG}.pyc"), doraise=True)
    py_compile.compile(str(root / "os2.py"), cfile=str(root / "__pycache__" / f"os2.{TAG}.opt-1.pyc"),
                       doraise=True, optimize=1)
    return root


def stdlib_entries(root: Path) -> list:
    return list(base_manifest._python_files("stdlib", str(root), "", SUFFIXES, base_manifest._stdlib_skip_dir,
                                            base_manifest._stdlib_skip_ext))


def test_standard_library_selection(tmp_path: Path) -> None:
    root = fake_stdlib(tmp_path / "lib")
    later = time.time() + 10
    os.utime(root / "json2" / "decoder.py", (later, later))  # its pyc is now stale: left out
    keys = sorted(key for key, _host in stdlib_entries(root))
    assert keys == [
        f"stdlib/__pycache__/os2.{TAG}.pyc",
        "stdlib/json2/__init__.py",
        "stdlib/json2/decoder.py",
        "stdlib/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
        "stdlib/os2.py",
    ]


def test_manifest_and_cache_render_and_parse(tmp_path: Path) -> None:
    root = fake_stdlib(tmp_path / "lib")
    manifest, cache = base_manifest.render(["stdlib/", "stdlib/lib-dynload/"], stdlib_entries(root),
                                           {"stdlib": str(root)})
    import_path, entries = parse_manifest(manifest)
    assert import_path == ["stdlib/", "stdlib/lib-dynload/"]
    assert entries["stdlib/os2.py"] == (hashlib.sha256(b"X = 1\n").hexdigest(), 6)
    roots, stats, digest = parse_cache(cache)
    assert roots == {"stdlib": str(root)}
    assert digest == hashlib.sha256(manifest.encode()).hexdigest()
    assert set(stats) == {"stdlib/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so"}  # natives only


def test_a_changed_standard_library_file_changes_the_measurement(tmp_path: Path) -> None:
    root = fake_stdlib(tmp_path / "lib")
    before, _ = base_manifest.render(["stdlib/"], stdlib_entries(root), {"stdlib": str(root)})
    (root / "json2" / "__init__.py").write_text("# one byte more\n")
    after, _ = base_manifest.render(["stdlib/"], stdlib_entries(root), {"stdlib": str(root)})
    assert before != after
    assert (measurement_of_manifest(before.encode(), mode="sim", allow_dlopen=False)
            != measurement_of_manifest(after.encode(), mode="sim", allow_dlopen=False))


def test_the_same_files_elsewhere_give_the_same_manifest(tmp_path: Path) -> None:
    one = fake_stdlib(tmp_path / "one")
    two = tmp_path / "two"
    import shutil

    shutil.copytree(one, two)  # copytree keeps mtimes, so the pycs stay current
    first, _ = base_manifest.render(["stdlib/"], stdlib_entries(one), {"stdlib": str(one)})
    second, _ = base_manifest.render(["stdlib/"], stdlib_entries(two), {"stdlib": str(two)})
    assert first == second


def test_citadel_selection_is_the_engine_safe_part() -> None:
    assert base_manifest._source_of(f"citadel/engine/__pycache__/boot.{TAG}.pyc") == "citadel/engine/boot.py"
    import fnmatch

    def selected(rel: str) -> bool:
        return any(fnmatch.fnmatchcase(rel, p) for p in base_manifest.CITADEL_FILES)

    assert selected("citadel/engine/guard.py") and selected("citadel/seal/format.py")
    assert not selected("citadel/cli/main.py") and not selected("citadel/cas/app.py")
    assert not selected("citadel/seal/sealer.py")


def test_site_dirs_follow_a_venv() -> None:
    dirs = base_manifest.site_dirs()
    assert any(os.path.isdir(os.path.join(d, "cryptography")) for d in dirs)
