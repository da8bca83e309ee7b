"""Sealed bytecode: unchecked hash-based pycs compiled in memory from the exact bytes sealed."""

from __future__ import annotations

import _imp
import importlib.util
import marshal
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest

from citadel.engine.importer import ImageCode, SealedSourceLoader
from citadel.errors import TamperedImage
from citadel.seal import bytecode, sealer
from citadel.seal.bytecode import FLAG_HASH_BASED, PYC_HEADER, compile_source, is_source, pyc_path
from citadel.seal.format import AUTHENTICATED, ENCRYPTED, FILE_HEADER, UNPROTECTED, FileEntry
from citadel.seal.image import SealedImage
from citadel.seal.sealer import SealResult, seal_tree

KEY = bytes(range(32))
TAG = sys.implementation.cache_tag

APP = {
    "app.py": b"import pkg\nprint(pkg.VALUE)\n",
    "pkg/__init__.py": b"# -*- coding: latin-1 -*-\nVALUE = '\xe9t\xe9'\n",
    "pkg/mod.py": b"def twice(x):\n    return 2 * x\n",
    "static/page.py": b"X = 1\n",  # authenticated
    "plugins/free.py": b"Y = 2\n",  # unprotected
    "vendor/py2.py": b"print 'hello'\n",
    "vendor/nul.py": b"X = 1\x00\n",
    "pkg/__pycache__/mod.cpython-311.pyc": b"stale",
    "README.txt": b"not python\n",
}
RULES = [("static", AUTHENTICATED), ("plugins", UNPROTECTED)]


def entry(image: SealedImage, rel: str) -> FileEntry:
    found = image.entry(rel)
    assert found is not None, rel
    return found


def make_tree(root: Path, files: Dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def listing(root: Path) -> List[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def seal(src: Path, out: Path, **kwargs: object) -> SealResult:
    return seal_tree(str(src), str(out), key=KEY, rules=RULES, compile_bytecode=True, **kwargs)  # type: ignore[arg-type]


# --- the pyc itself -------------------------------------------------------------------------------
def test_pyc_is_an_unchecked_hash_based_pyc_of_the_exact_source() -> None:
    source = b"X = 6 * 7\n"
    data, why = compile_source(source, "pkg/m.py")
    assert data is not None and why == ""
    magic, flags, source_hash = PYC_HEADER.unpack_from(data)
    assert magic == importlib.util.MAGIC_NUMBER
    assert flags == FLAG_HASH_BASED  # hash-based, check_source bit clear
    assert source_hash == importlib.util.source_hash(source)
    code = marshal.loads(data[PYC_HEADER.size :])
    assert code == compile(source, "pkg/m.py", "exec", dont_inherit=True)
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["X"] == 42


@pytest.mark.parametrize(
    "source, expected",
    [
        (b"print 'py2'\n", "SyntaxError"),
        (b"def f(:\n", "SyntaxError"),
        (b"if True:\nx = 1\n", "IndentationError"),
        (b"X = 1\x00\n", ""),  # ValueError on 3.11, SyntaxError later: either way, a reason
        (b"X = " + b"(" * 300 + b")" * 300 + b"\n", ""),  # too deeply nested
    ],
)
def test_sources_that_do_not_compile_give_a_reason(source: bytes, expected: str) -> None:
    data, why = compile_source(source, "bad.py")
    assert data is None
    assert why.startswith(expected) and why


def test_compiler_warnings_are_not_shown(capfd: pytest.CaptureFixture[str]) -> None:
    data, _ = compile_source(b"PATTERN = '\\d+'\nassert (1, 'x')\n", "noisy.py")
    assert data is not None
    assert capfd.readouterr().err == ""


def test_pyc_path_is_the_name_the_importer_looks_for() -> None:
    assert pyc_path("pkg/mod.py", "cpython-311") == "pkg/__pycache__/mod.cpython-311.pyc"
    assert pyc_path("app.py", "cpython-311") == "__pycache__/app.cpython-311.pyc"
    assert pyc_path(".citadel/python-path/0/a.b.py", "t") == ".citadel/python-path/0/__pycache__/a.b.t.pyc"
    if sys.pycache_prefix is None and TAG:
        assert pyc_path("pkg/mod.py", TAG) == importlib.util.cache_from_source("pkg/mod.py")
    assert is_source("a/b.py") and not is_source("a/b.pyc") and not is_source("a/py")


# --- sealing with bytecode ---------------------------------------------------------------------
def test_every_protected_source_gets_a_fresh_pyc_in_its_region(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", APP)
    result = seal(src, tmp_path / "img")
    image = SealedImage.open(result.image, KEY, expected_tag=result.tag)
    pycs = sorted(rel for rel in image.manifest.files if rel.endswith(".pyc"))
    assert pycs == [
        f"__pycache__/app.{TAG}.pyc",
        f"pkg/__pycache__/__init__.{TAG}.pyc",
        f"pkg/__pycache__/mod.{TAG}.pyc",
        f"static/__pycache__/page.{TAG}.pyc",
    ]
    for pyc in pycs:
        source_rel = pyc.replace("__pycache__/", "").replace(f".{TAG}.pyc", ".py")
        assert entry(image, pyc).region == entry(image, source_rel).region
        source, data = image.read(source_rel), image.read(pyc)
        assert PYC_HEADER.unpack_from(data) == (importlib.util.MAGIC_NUMBER, FLAG_HASH_BASED,
                                                importlib.util.source_hash(source))
        assert marshal.loads(data[PYC_HEADER.size :]) == compile(source, source_rel, "exec", dont_inherit=True)
    assert entry(image, f"static/__pycache__/page.{TAG}.pyc").region == AUTHENTICATED
    assert entry(image, f"pkg/__pycache__/mod.{TAG}.pyc").region == ENCRYPTED
    assert not (tmp_path / "img" / "plugins" / "__pycache__").exists()  # unprotected: nothing to import
    assert b"stale" not in image.read(f"pkg/__pycache__/mod.{TAG}.pyc")
    # the report, and the counts of the tree's files that do not include generated files
    report = result.bytecode
    assert (report.enabled, report.cache_tag, report.compiled) == (True, TAG, 4)
    assert report.bytes == sum(entry(image, p).size for p in pycs)
    assert sorted(path for path, _ in report.failed) == ["vendor/nul.py", "vendor/py2.py"]
    assert "SyntaxError" in dict(report.failed)["vendor/py2.py"]
    assert result.files == len([rel for rel in APP if "__pycache__" not in rel])
    assert image.read("vendor/py2.py") == APP["vendor/py2.py"]  # sealed as source only


def test_python_path_trees_are_compiled_too(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"app.py": b"import dep\n"})
    deps = make_tree(tmp_path / "deps", {"dep/__init__.py": b"X = 1\n", "dep/__pycache__/x.pyc": b""})
    result = seal_tree(str(src), str(tmp_path / "img"), key=KEY, python_paths=[str(deps)], compile_bytecode=True)
    image = SealedImage.open(result.image, KEY)
    assert f".citadel/python-path/0/dep/__pycache__/__init__.{TAG}.pyc" in image.manifest.files
    assert ".citadel/python-path/0/dep/__pycache__/x.pyc" not in image.manifest.files


def test_without_compile_no_bytecode_is_sealed(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", APP)
    result = seal_tree(str(src), str(tmp_path / "img"), key=KEY)
    image = SealedImage.open(result.image, KEY)
    assert not any("__pycache__" in rel for rel in image.manifest.files)
    assert result.bytecode.enabled is False and result.bytecode.compiled == 0


def test_skip_patterns_can_leave_the_bytecode_out(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.py": b"A = 1\n", "b.py": b"B = 1\n"})
    result = seal(src, tmp_path / "img", skip=[f"__pycache__/b.{TAG}.pyc"])
    image = SealedImage.open(result.image, KEY)
    assert [rel for rel in image.manifest.files if rel.endswith(".pyc")] == [f"__pycache__/a.{TAG}.pyc"]


def test_sources_over_the_size_limit_are_sealed_as_source_only(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealer, "MAX_COMPILE_SIZE", 10)
    src = make_tree(tmp_path / "src", {"small.py": b"A = 1\n", "big.py": b"B = 1234567890\n"})
    result = seal(src, tmp_path / "img")
    assert result.bytecode.compiled == 1
    assert [path for path, _ in result.bytecode.failed] == ["big.py"]
    assert SealedImage.open(result.image, KEY).read("big.py") == b"B = 1234567890\n"


def test_workers_give_the_same_image_content_and_write_nothing_outside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {f"pkg/m{i}.py": f"def f{i}(x):\n    return x + {i}\n".encode() for i in range(12)}
    files["pkg/broken.py"] = b"def (\n"
    src = make_tree(tmp_path / "src", files)
    before = listing(src)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    images = {}
    for workers in (1, 2):
        plan = sealer.plan_seal(str(src))
        result = sealer.seal_plan(plan, str(tmp_path / f"img{workers}"), key=KEY, compile_bytecode=True,
                                  compile_workers=workers)
        assert result.bytecode.compiled == 12
        assert [path for path, _ in result.bytecode.failed] == ["pkg/broken.py"]
        image = SealedImage.open(result.image, KEY)
        images[workers] = {rel: image.read(rel) for rel in image.manifest.files}
    assert images[1].keys() == images[2].keys()
    for rel, data in images[1].items():
        if rel.endswith(".pyc"):
            assert data[: PYC_HEADER.size] == images[2][rel][: PYC_HEADER.size]
            assert marshal.loads(data[PYC_HEADER.size :]) == marshal.loads(images[2][rel][PYC_HEADER.size :])
        else:
            assert data == images[2][rel]
    assert listing(src) == before  # no __pycache__ written into the source tree
    assert listing(scratch) == []  # and no plaintext anywhere temporary


def test_many_sources_use_workers_by_default(tmp_path: Path) -> None:
    files = {f"m{i}.py": f"V = {i}\n".encode() for i in range(bytecode.PARALLEL_THRESHOLD)}
    src = make_tree(tmp_path / "src", files)
    result = seal(src, tmp_path / "img")
    assert result.bytecode.compiled == len(files) and result.bytecode.failed == []


# --- the engine's importer uses them without reading the source -----------------------------------
def corrupt_sealed_file(image_root: Path, rel: str) -> None:
    """Flip one ciphertext byte: reading the file now raises TamperedImage."""
    path = image_root / rel
    data = bytearray(path.read_bytes())
    data[FILE_HEADER.size] ^= 0x01
    path.write_bytes(bytes(data))


def test_importer_uses_the_unchecked_pyc_without_reading_the_source(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_tree(tmp_path / "src", APP)
    result = seal(src, tmp_path / "img")
    corrupt_sealed_file(tmp_path / "img", "pkg/mod.py")
    image = SealedImage.open(result.image, KEY)
    loader = SealedSourceLoader(ImageCode(image), "pkg.mod", "pkg/mod.py")
    code = loader.get_code("pkg.mod")  # would raise TamperedImage if it read the source
    assert code.co_filename == str(tmp_path / "img" / "pkg" / "mod.py")
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["twice"](21) == 42
    assert namespace["twice"].__code__.co_filename == code.co_filename
    with pytest.raises(TamperedImage):
        loader.get_source("pkg.mod")
    # --check-hash-based-pycs always: the importer checks the source as CPython does
    monkeypatch.setattr(_imp, "check_hash_based_pycs", "always", raising=False)
    with pytest.raises(TamperedImage):
        loader.get_code("pkg.mod")


def test_without_bytecode_the_importer_reads_the_source(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", APP)
    result = seal_tree(str(src), str(tmp_path / "img"), key=KEY)
    corrupt_sealed_file(tmp_path / "img", "pkg/mod.py")
    loader = SealedSourceLoader(ImageCode(SealedImage.open(result.image, KEY)), "pkg.mod", "pkg/mod.py")
    with pytest.raises(TamperedImage):
        loader.get_code("pkg.mod")


def test_source_encoding_declarations_are_honoured(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", APP)
    result = seal(src, tmp_path / "img")
    loader = SealedSourceLoader(ImageCode(SealedImage.open(result.image, KEY)), "pkg", "pkg/__init__.py")
    namespace: dict = {}
    exec(loader.get_code("pkg"), namespace)
    assert namespace["VALUE"] == "été"
    assert os.path.basename(loader.get_filename("pkg")) == "__init__.py"
