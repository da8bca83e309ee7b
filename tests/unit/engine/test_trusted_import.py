"""The verifying finder of the trusted base, on a small trusted tree built in a temporary directory:
what the manifest pins is served, anything else or anything changed is refused."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import py_compile
import sys
import time
from pathlib import Path
from typing import Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine import base_manifest
from citadel.engine.trusted_base import (
    MANIFEST_HEADER,
    ManifestFormatError,
    TrustedBase,
    index_manifest,
    parse_manifest,
)
from citadel.engine.trusted_import import HostPathFinder, TrustedFinder, UnverifiedCodeRefuser

TAG = sys.implementation.cache_tag


def make_base(tmp_path: Path, files: dict, *, with_pyc: bool = False) -> Tuple[TrustedBase, Path]:
    """A TrustedBase whose one import root 'lib' holds ``files``."""
    root = tmp_path / "lib"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if with_pyc and rel.endswith(".py"):
            py_compile.compile(str(path), cfile=str(path.parent / "__pycache__" / f"{path.stem}.{TAG}.pyc"),
                               doraise=True)
    entries = list(base_manifest._python_files("lib", str(root), "", [".so"]))
    manifest, cache = base_manifest.render(["lib/"], entries, {"lib": str(root)})
    digest = hashlib.sha256(manifest.encode()).hexdigest()
    return TrustedBase(manifest, cache, hashlib.sha256, digest), root


def load(base: TrustedBase, name: str) -> object:
    finder = TrustedFinder(base)
    parent = name.rpartition(".")[0]
    if parent:  # the finder learns package directories as it serves packages
        finder.find_spec(parent)
    spec = finder.find_spec(name)
    assert spec is not None, name
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[attr-defined]
    return module


def test_serves_modules_and_packages_the_manifest_pins(tmp_path: Path) -> None:
    base, root = make_base(tmp_path, {"top.py": "X = 1\n", "pkg/__init__.py": "Y = 2\n", "pkg/mod.py": "Z = 3\n"})
    assert load(base, "top").X == 1  # type: ignore[attr-defined]
    package = load(base, "pkg")
    assert package.Y == 2 and package.__path__ == [str(root / "pkg")]  # type: ignore[attr-defined]
    assert load(base, "pkg.mod").Z == 3  # type: ignore[attr-defined]
    assert TrustedFinder(base).find_spec("absent") is None
    assert TrustedFinder(base).find_spec("pkg.mod") is None  # parent not served by this finder yet


def test_a_changed_source_is_refused(tmp_path: Path) -> None:
    base, root = make_base(tmp_path, {"top.py": "X = 1\n"})
    (root / "top.py").write_text("X = 666\n")
    with pytest.raises(Exception) as caught:
        load(base, "top")
    assert caught.value.cause == f"the engine file {root / 'top.py'} differs from the measured engine"  # type: ignore[attr-defined]
    assert "citadel measure --rebuild" in caught.value.remedy  # type: ignore[attr-defined]


def test_current_bytecode_is_used_and_a_changed_one_is_ignored(tmp_path: Path) -> None:
    base, root = make_base(tmp_path, {"top.py": "X = 1\n"}, with_pyc=True)
    pyc = root / "__pycache__" / f"top.{TAG}.pyc"
    assert f"lib/__pycache__/top.{TAG}.pyc" in base.entries
    module = load(base, "top")
    assert module.X == 1 and module.__spec__.cached == str(pyc)  # type: ignore[attr-defined]
    # bytecode that says X = 666, with a header that is current for the source: never run
    evil = root / "evil.py"
    evil.write_text("X = 666\n")
    py_compile.compile(str(evil), cfile=str(tmp_path / "evil.pyc"), doraise=True)
    header = pyc.read_bytes()[:16]
    pyc.write_bytes(header + (tmp_path / "evil.pyc").read_bytes()[16:])
    assert load(base, "top").X == 1  # type: ignore[attr-defined]


def test_a_touched_source_falls_back_to_the_verified_source(tmp_path: Path) -> None:
    base, root = make_base(tmp_path, {"top.py": "X = 1\n"}, with_pyc=True)
    later = time.time() + 5
    os.utime(root / "top.py", (later, later))  # same bytes, so the pyc is no longer current, the source is fine
    assert load(base, "top").X == 1  # type: ignore[attr-defined]


def test_native_files_pass_by_stat_identity_and_are_hashed_when_strict(tmp_path: Path) -> None:
    base, root = make_base(tmp_path, {"native.so": "pretend ELF"})
    base.verify_file("lib/native.so")
    assert "lib/native.so" in base._by_stat
    (root / "native.so").write_text("pretend ELF")  # same bytes, new ctime: hashed, and fine
    base._by_stat.clear()
    base.verify_file("lib/native.so")
    assert "lib/native.so" in base._by_hash
    (root / "native.so").write_text("other ELF!!")
    base._by_hash.clear()
    with pytest.raises(Exception, match="differs from the measured engine"):
        base.verify_file("lib/native.so")


def test_strict_mode_rehashes_what_stat_identity_accepted(tmp_path: Path) -> None:
    base, root = make_base(tmp_path, {"native.so": "pretend ELF"})
    base.verify_file("lib/native.so")
    st = os.stat(root / "native.so")
    with open(root / "native.so", "r+b") as fh:  # same size, same mtime: only the bytes differ
        fh.write(b"X")
    os.utime(root / "native.so", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(Exception, match="differs from the measured engine"):
        base.set_strict()


def test_key_of_maps_host_paths_back_to_manifest_keys(tmp_path: Path) -> None:
    base, root = make_base(tmp_path, {"pkg/__init__.py": "", "pkg/mod.py": ""})
    assert base.key_of(str(root / "pkg" / "mod.py")) == "lib/pkg/mod.py"
    assert base.key_of(str(root / "pkg" / ".." / "pkg" / "mod.py")) == "lib/pkg/mod.py"
    assert base.key_of(str(tmp_path / "elsewhere.py")) is None


def test_host_directories_serve_nothing_and_what_they_hold_is_refused(tmp_path: Path) -> None:
    (tmp_path / "planted.py").write_text("")
    finder = HostPathFinder(str(tmp_path))
    assert finder.find_spec("planted") is None
    assert finder.find_spec("absent") is None
    with pytest.raises(ImportError, match="neither sealed in the image nor part of the measured engine"):
        UnverifiedCodeRefuser().find_spec("planted")
    assert UnverifiedCodeRefuser().find_spec("absent") is None


def test_cache_must_belong_to_the_manifest(tmp_path: Path) -> None:
    base, _root = make_base(tmp_path, {"top.py": ""})
    manifest = MANIFEST_HEADER + "\nimport lib/\n" + "\n".join(base.entries.values()) + "\n"
    cache = "citadel-engine-cache/v1\nmanifest-sha256\t" + "0" * 64 + "\nroot\tlib\t/x\n"
    with pytest.raises(Exception, match="does not belong to the cached manifest"):
        TrustedBase(manifest, cache, hashlib.sha256, hashlib.sha256(manifest.encode()).hexdigest())


keys = st.lists(st.from_regex(r"[a-z]{1,8}/[a-z0-9_./-]{1,30}", fullmatch=True), min_size=1, max_size=20, unique=True)


@settings(max_examples=60)
@given(keys, st.data())
def test_manifest_text_round_trips(key_list: list, data: st.DataObject) -> None:
    lines = []
    expected = {}
    for key in sorted(key_list):
        digest = data.draw(st.binary(min_size=32, max_size=32)).hex()
        size = data.draw(st.integers(min_value=0, max_value=1 << 40))
        lines.append(f"{digest} {size} {key}")
        expected[key] = (digest, size)
    text = f"{MANIFEST_HEADER}\nimport stdlib/ citadel/\n" + "\n".join(lines) + "\n"
    assert parse_manifest(text) == (["stdlib/", "citadel/"], expected)


@pytest.mark.parametrize("text, defect", [
    ("citadel-engine-manifest/v2\nimport a/\n", "bad header"),
    (f"{MANIFEST_HEADER}\nimport a/\n{'0' * 64} 1 a/x", "newline"),
    (f"{MANIFEST_HEADER}\nimport a\n{'0' * 64} 1 a/x\n", "bad import directory"),
    (f"{MANIFEST_HEADER}\nimport a/\n{'0' * 64} 1 a/y\n{'0' * 64} 1 a/x\n", "out of order"),
    (f"{MANIFEST_HEADER}\nimport a/\n{'0' * 64} 1 a/x\n{'0' * 64} 1 a/x\n", "twice"),
    (f"{MANIFEST_HEADER}\nimport a/\n{'0' * 63} 1 a/x\n", "malformed"),
    (f"{MANIFEST_HEADER}\nimport a/\n{'G' * 64} 1 a/x\n", "not lowercase hex"),
    (f"{MANIFEST_HEADER}\nimport a/\n{'0' * 64} one a/x\n", "malformed"),
    (f"{MANIFEST_HEADER}\nimport a/\nshort\n", "fewer than three fields"),
])
def test_malformed_manifests_are_refused(text: str, defect: str) -> None:
    with pytest.raises(ManifestFormatError, match=defect):
        parse_manifest(text)


def test_index_is_what_the_full_parser_reads() -> None:
    text = f"{MANIFEST_HEADER}\nimport a/\n{'1' * 64} 12 a/x y.py\n"
    import_path, index = index_manifest(text)
    assert import_path == ["a/"] and list(index) == ["a/x y.py"]
    assert parse_manifest(text)[1] == {"a/x y.py": ("1" * 64, 12)}
