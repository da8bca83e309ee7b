"""Sealing a tree: regions, skips, symlinks, python paths, key files, and all-or-nothing output."""

from __future__ import annotations

import os
import stat
import tracemalloc
from pathlib import Path
from typing import Dict, List

import pytest

from citadel.errors import CitadelError, UsageError
from citadel.seal.format import AUTHENTICATED, ENCRYPTED, UNPROTECTED
from citadel.seal.image import SealedImage
from citadel.seal.keyfile import read_key_file
from citadel.seal.place import OutputError
from citadel.seal.regions import region_for
from citadel.seal.sealer import SealResult, seal_plan, seal_tree
from citadel.seal.walk import SourceError, plan_seal


def make_tree(root: Path, files: Dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


APP = {
    "app.py": b"import pkg\nprint(pkg.VALUE)\n",
    "pkg/__init__.py": b"VALUE = 42\n",
    "pkg/data/big.bin": bytes(range(256)) * 1000,
    "pkg/empty.txt": b"",
    "static/site.css": b"body {}\n",
    "cache/state.json": b"{}",
    "legacy/mod.pyc": b"\x00compiled",
    "pkg/__pycache__/x.cpython-311.pyc": b"stale",
    "__pycache__/app.cpython-311.pyc": b"stale",
}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", APP)


def leftovers(directory: Path) -> List[str]:
    """Staging directories or temporary key files a failed seal might leave behind."""
    return [n for n in os.listdir(directory) if ".sealing-" in n or ".tmp-" in n or ".replaced-" in n]


def open_image(result: SealResult) -> SealedImage:
    return SealedImage.open(result.image, result.key, expected_tag=result.tag)


# --- what goes in ------------------------------------------------------------------------------
def test_every_file_reads_back_identical(src: Path, tmp_path: Path) -> None:
    result = seal_tree(str(src), str(tmp_path / "img"), chunk_size=1000)
    image = open_image(result)
    expected = {rel: data for rel, data in APP.items() if "__pycache__" not in rel}
    assert set(image.manifest.files) == set(expected)
    for rel, data in expected.items():
        assert image.read(rel) == data
    assert result.files == len(expected)
    assert result.bytes == sum(len(d) for d in expected.values())
    assert result.regions == {ENCRYPTED: len(expected), AUTHENTICATED: 0, UNPROTECTED: 0}
    assert image.manifest.chunk_size == 1000


def test_pycache_is_left_out_but_pyc_elsewhere_is_kept(src: Path, tmp_path: Path) -> None:
    image = open_image(seal_tree(str(src), str(tmp_path / "img")))
    assert not any("__pycache__" in rel for rel in image.manifest.files)
    assert not (tmp_path / "img" / "__pycache__").exists()
    assert image.read("legacy/mod.pyc") == APP["legacy/mod.pyc"]


def test_regions_follow_the_rules_in_order_last_match_wins(src: Path, tmp_path: Path) -> None:
    rules = [
        ("static", AUTHENTICATED),
        ("./cache/", UNPROTECTED),
        ("pkg", AUTHENTICATED),
        ("pkg/data/*", ENCRYPTED),
    ]
    result = seal_tree(str(src), str(tmp_path / "img"), rules=rules)
    image = open_image(result)
    assert image.region_of("app.py") == ENCRYPTED
    assert image.region_of("static/site.css") == AUTHENTICATED
    assert image.region_of("cache/state.json") == UNPROTECTED
    assert image.region_of("pkg/__init__.py") == AUTHENTICATED
    assert image.region_of("pkg/data/big.bin") == ENCRYPTED
    assert "cache/state.json" not in image.manifest.files
    assert (tmp_path / "img/cache/state.json").read_bytes() == b"{}", "unprotected files are plain copies"
    assert (tmp_path / "img/static/site.css").read_bytes() == APP["static/site.css"]
    assert image.manifest.unprotected == ["cache"]
    assert result.regions == {ENCRYPTED: 3, AUTHENTICATED: 3, UNPROTECTED: 1}


def test_planned_regions_agree_with_the_engine_rules(src: Path) -> None:
    rules = [
        ("*.py", AUTHENTICATED),
        ("pkg", UNPROTECTED),
        ("*/__init__.py", ENCRYPTED),
        ("st?tic", AUTHENTICATED),
    ]
    plan = plan_seal(str(src), rules=rules)
    for planned in plan.files:
        assert planned.region == region_for(planned.rel, rules), planned.rel


def test_rules_that_match_nothing_are_reported(src: Path) -> None:
    plan = plan_seal(str(src), rules=[("statik", AUTHENTICATED), ("static", AUTHENTICATED)], skip=["nothing"])
    assert plan.unmatched == [("statik", AUTHENTICATED), ("nothing", "skip")]


def test_skipped_paths_are_not_in_the_image(src: Path, tmp_path: Path) -> None:
    image = open_image(seal_tree(str(src), str(tmp_path / "img"), skip=["cache", "*.bin"]))
    assert "cache/state.json" not in image.manifest.files and "pkg/data/big.bin" not in image.manifest.files
    assert not (tmp_path / "img/cache").exists()


@pytest.mark.parametrize("pattern", ["", "/", ".", "./"])
def test_empty_patterns_are_refused(src: Path, pattern: str) -> None:
    with pytest.raises(UsageError, match="pattern"):
        plan_seal(str(src), rules=[(pattern, UNPROTECTED)])


def test_unknown_region_is_refused(src: Path) -> None:
    with pytest.raises(UsageError, match="unknown region"):
        plan_seal(str(src), rules=[("x", "secret")])


# --- python paths -------------------------------------------------------------------------------
def test_python_paths_go_under_citadel_python_path(src: Path, tmp_path: Path) -> None:
    deps = make_tree(
        tmp_path / "site-packages",
        {"dep/__init__.py": b"X = 1\n", "dep/__pycache__/a.pyc": b"", "dep/README.txt": b"docs"},
    )
    more = make_tree(tmp_path / "vendor", {"other.py": b"Y = 2\n"})
    result = seal_tree(
        str(src), str(tmp_path / "img"), python_paths=[str(deps), str(more)], rules=[("*.txt", AUTHENTICATED)]
    )
    image = open_image(result)
    assert image.manifest.python_path == [".citadel/python-path/0", ".citadel/python-path/1"]
    assert result.python_path == (".citadel/python-path/0", ".citadel/python-path/1")
    assert image.read(".citadel/python-path/0/dep/__init__.py") == b"X = 1\n"
    assert image.read(".citadel/python-path/1/other.py") == b"Y = 2\n"
    assert image.region_of(".citadel/python-path/0/dep/README.txt") == AUTHENTICATED, "rules see image paths"
    assert ".citadel/python-path/0/dep/__pycache__/a.pyc" not in image.manifest.files


def test_a_python_path_inside_src_is_sealed_once(src: Path, tmp_path: Path) -> None:
    deps = make_tree(src / "vendor", {"dep.py": b"Z = 3\n"})
    image = open_image(seal_tree(str(src), str(tmp_path / "img"), python_paths=[str(deps)]))
    assert ".citadel/python-path/0/dep.py" in image.manifest.files
    assert "vendor/dep.py" not in image.manifest.files


@pytest.mark.parametrize("case", ["missing", "a_file", "twice", "contains_src"])
def test_bad_python_paths_are_usage_errors(src: Path, tmp_path: Path, case: str) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "deps").mkdir()
    given = {
        "missing": [str(tmp_path / "nope")],
        "a_file": [str(tmp_path / "a_file")],
        "twice": [str(tmp_path / "deps"), str(tmp_path / "deps") + "/"],
        "contains_src": [str(tmp_path)],
    }[case]
    with pytest.raises(UsageError):
        seal_tree(str(src), str(tmp_path / "img"), python_paths=given)
    assert not (tmp_path / "img").exists()


# --- symlinks and odd files ----------------------------------------------------------------------
def test_symlinks_within_the_tree_are_followed(src: Path, tmp_path: Path) -> None:
    os.symlink("../app.py", src / "pkg" / "alias.py")
    os.symlink("pkg", src / "pkglink")
    image = open_image(seal_tree(str(src), str(tmp_path / "img")))
    assert image.read("pkg/alias.py") == APP["app.py"]
    assert image.read("pkglink/__init__.py") == APP["pkg/__init__.py"]
    assert not any(
        os.path.islink(os.path.join(d, n)) for d, ds, fs in os.walk(tmp_path / "img") for n in ds + fs
    )


def test_symlink_leaving_the_tree_is_refused_naming_it(src: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", src / "pkg" / "leak.txt")
    with pytest.raises(SourceError, match="leak.txt.*outside the tree"):
        seal_tree(str(src), str(tmp_path / "img"))
    assert not (tmp_path / "img").exists() and not leftovers(tmp_path)


def test_symlink_leaving_a_python_path_tree_is_refused(src: Path, tmp_path: Path) -> None:
    deps = make_tree(tmp_path / "deps", {"ok.py": b""})
    os.symlink(src / "app.py", deps / "app.py")
    with pytest.raises(SourceError, match="outside the tree"):
        seal_tree(str(src), str(tmp_path / "img"), python_paths=[str(deps)])


def test_dangling_symlink_is_refused(src: Path, tmp_path: Path) -> None:
    os.symlink("missing.py", src / "dangling.py")
    with pytest.raises(SourceError, match="dangling"):
        seal_tree(str(src), str(tmp_path / "img"))


def test_symlink_loop_is_refused(src: Path, tmp_path: Path) -> None:
    os.symlink("..", src / "pkg" / "up")
    with pytest.raises(SourceError, match="loops"):
        seal_tree(str(src), str(tmp_path / "img"))


def test_a_skipped_bad_symlink_is_fine(src: Path, tmp_path: Path) -> None:
    os.symlink("/etc/passwd", src / "leak")
    seal_tree(str(src), str(tmp_path / "img"), skip=["leak"])


def test_fifo_is_refused_without_hanging(src: Path, tmp_path: Path) -> None:
    os.mkfifo(src / "pipe")
    with pytest.raises(SourceError, match="pipe.*FIFO"):
        seal_tree(str(src), str(tmp_path / "img"))


def test_name_that_is_not_utf8_is_refused(src: Path, tmp_path: Path) -> None:
    with open(os.path.join(os.fsencode(src), b"bad-\xff.py"), "wb") as fh:
        fh.write(b"x")
    with pytest.raises(SourceError, match="UTF-8"):
        seal_tree(str(src), str(tmp_path / "img"))


def test_top_level_citadel_directory_is_reserved(src: Path, tmp_path: Path) -> None:
    make_tree(src, {".citadel/manifest": b"not mine"})
    with pytest.raises(SourceError, match="reserve"):
        seal_tree(str(src), str(tmp_path / "img"))
    seal_tree(str(src), str(tmp_path / "img"), skip=[".citadel"])


@pytest.mark.parametrize("case", ["missing", "a_file"])
def test_src_must_be_a_directory(tmp_path: Path, case: str) -> None:
    if case == "a_file":
        (tmp_path / case).write_text("x")
    with pytest.raises(UsageError, match="SRC"):
        seal_tree(str(tmp_path / case), str(tmp_path / "img"))


# --- where the image goes ----------------------------------------------------------------------
def test_image_inside_src_is_refused_unless_skipped(src: Path) -> None:
    with pytest.raises(UsageError, match="would seal itself"):
        seal_tree(str(src), str(src / "img"))
    assert not (src / "img").exists() and not leftovers(src)
    (src / "build").mkdir()
    result = seal_tree(str(src), str(src / "build" / "img"), skip=["build"])
    assert "build/img/app.py" not in open_image(result).manifest.files


def test_image_containing_src_is_refused(src: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="destroy"):
        seal_tree(str(src), str(tmp_path), force=True)
    assert (src / "app.py").exists()


def test_existing_image_needs_force_and_is_replaced_whole(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "img"
    first = seal_tree(str(src), str(out))
    with pytest.raises(UsageError, match="already exists"):
        seal_tree(str(src), str(out))
    assert open_image(first).tag == first.tag, "a refused seal leaves the old image as it was"
    os.remove(src / "static/site.css")
    second = seal_tree(str(src), str(out), force=True)
    image = open_image(second)
    assert "static/site.css" not in image.manifest.files and not (out / "static").exists()
    assert not leftovers(tmp_path)


def test_a_directory_of_other_files_is_never_replaced(src: Path, tmp_path: Path) -> None:
    other = make_tree(tmp_path / "documents", {"thesis.tex": b"years of work"})
    with pytest.raises(UsageError, match="not a sealed image"):
        seal_tree(str(src), str(other), force=True)
    assert (other / "thesis.tex").read_bytes() == b"years of work"


def test_an_empty_directory_is_filled(src: Path, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    open_image(seal_tree(str(src), str(tmp_path / "img")))


@pytest.mark.parametrize("case", ["a_file", "a_symlink", "no_parent"])
def test_unusable_image_paths_are_refused(src: Path, tmp_path: Path, case: str) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "a_symlink")
    out = tmp_path / ("no/such/img" if case == "no_parent" else case)
    with pytest.raises(UsageError):
        seal_tree(str(src), str(out), force=True)
    assert (tmp_path / "a_file").read_text() == "x" and not (tmp_path / "no").exists()


def test_a_file_that_changes_while_sealing_leaves_nothing(src: Path, tmp_path: Path) -> None:
    def grow_while_read(rel: str, _n: int) -> None:
        if rel == "pkg/data/big.bin":
            with open(src / rel, "ab") as fh:
                fh.write(b"appended by another program")

    with pytest.raises(SourceError, match="big.bin.*changed"):
        seal_tree(str(src), str(tmp_path / "img"), progress=grow_while_read, chunk_size=4096)
    assert not (tmp_path / "img").exists() and not leftovers(tmp_path)


def test_a_file_that_shrinks_while_sealing_leaves_nothing(src: Path, tmp_path: Path) -> None:
    def shrink_while_read(rel: str, _n: int) -> None:
        if rel == "pkg/data/big.bin":
            os.truncate(src / rel, 10)

    with pytest.raises(SourceError, match="big.bin.*changed"):
        seal_tree(str(src), str(tmp_path / "img"), progress=shrink_while_read, chunk_size=4096)
    assert not (tmp_path / "img").exists() and not leftovers(tmp_path)


def test_an_interrupt_keeps_the_old_image(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "img"
    first = seal_tree(str(src), str(out), key_out=str(tmp_path / "k"))

    def interrupt(rel: str, _n: int) -> None:
        if rel.startswith("pkg/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seal_tree(str(src), str(out), force=True, key_out=str(tmp_path / "k"), progress=interrupt)
    assert open_image(first).read("app.py") == APP["app.py"]
    assert read_key_file(str(tmp_path / "k")) == first.key, "the old key file is untouched"
    assert not leftovers(tmp_path)


# --- keys -----------------------------------------------------------------------------------------
def test_key_file_is_private_and_holds_the_key(src: Path, tmp_path: Path) -> None:
    result = seal_tree(str(src), str(tmp_path / "img"), key_out=str(tmp_path / "app.key"))
    assert result.key_file == str(tmp_path / "app.key")
    assert stat.S_IMODE(os.stat(tmp_path / "app.key").st_mode) == 0o600
    assert (tmp_path / "app.key").read_text() == result.key.hex() + "\n"
    assert read_key_file(str(tmp_path / "app.key")) == result.key


def test_key_file_is_not_overwritten_without_force(src: Path, tmp_path: Path) -> None:
    (tmp_path / "app.key").write_text("precious")
    with pytest.raises(UsageError, match="already exists"):
        seal_tree(str(src), str(tmp_path / "img"), key_out=str(tmp_path / "app.key"))
    assert (tmp_path / "app.key").read_text() == "precious"
    assert not (tmp_path / "img").exists(), "the key is checked before anything is sealed"
    result = seal_tree(str(src), str(tmp_path / "img"), key_out=str(tmp_path / "app.key"), force=True)
    assert read_key_file(str(tmp_path / "app.key")) == result.key


@pytest.mark.parametrize("where", ["src", "img"])
def test_key_file_inside_the_tree_or_image_is_refused(src: Path, tmp_path: Path, where: str) -> None:
    key_out = src / "app.key" if where == "src" else tmp_path / "img" / "app.key"
    with pytest.raises(UsageError, match="inside"):
        seal_tree(str(src), str(tmp_path / "img"), key_out=str(key_out))
    assert not key_out.exists()


def test_reused_key_opens_both_images(src: Path, tmp_path: Path) -> None:
    first = seal_tree(str(src), str(tmp_path / "one"), key_out=str(tmp_path / "k"))
    plan = plan_seal(str(src))
    second = seal_plan(
        plan,
        str(tmp_path / "two"),
        key=read_key_file(str(tmp_path / "k")),
        key_out=str(tmp_path / "k"),
        key_source=str(tmp_path / "k"),
    )
    assert second.key == first.key and second.key_file == str(tmp_path / "k")
    assert second.tag != first.tag, "every sealing has a fresh manifest salt and nonce"
    open_image(second)


@pytest.mark.parametrize("key", [b"", b"short", bytes(33)])
def test_bad_key_length_is_refused(src: Path, tmp_path: Path, key: bytes) -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        seal_tree(str(src), str(tmp_path / "img"), key=key)


@pytest.mark.parametrize("chunk_size", [0, -1, 2**32])
def test_bad_chunk_size_is_refused(src: Path, tmp_path: Path, chunk_size: int) -> None:
    with pytest.raises(UsageError, match="chunk size"):
        seal_tree(str(src), str(tmp_path / "img"), chunk_size=chunk_size)


def test_result_repr_never_shows_the_key(src: Path, tmp_path: Path) -> None:
    result = seal_tree(str(src), str(tmp_path / "img"))
    assert result.key.hex() not in repr(result)


def test_errors_carry_a_cause_and_a_remedy(src: Path, tmp_path: Path) -> None:
    os.symlink("/etc/passwd", src / "leak")
    with pytest.raises(CitadelError) as caught:
        seal_tree(str(src), str(tmp_path / "img"))
    lines = caught.value.diagnostics().splitlines()
    assert (
        len(lines) == 2 and lines[0].startswith("citadel: error: ") and lines[1].startswith("citadel: hint: ")
    )


def test_key_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_key_file(str(tmp_path / "nope"))
    (tmp_path / "k").write_bytes(b"\xff" * 64)
    with pytest.raises(CitadelError, match="64 hex digits"):
        read_key_file(str(tmp_path / "k"))


def test_output_error_is_a_citadel_error() -> None:
    assert issubclass(OutputError, CitadelError) and issubclass(SourceError, CitadelError)


# --- streaming --------------------------------------------------------------------------------------
def test_progress_reports_every_byte(src: Path, tmp_path: Path) -> None:
    seen: Dict[str, int] = {}

    def progress(rel: str, n: int) -> None:
        seen[rel] = seen.get(rel, 0) + n

    result = seal_tree(
        str(src), str(tmp_path / "img"), progress=progress, chunk_size=4096, rules=[("static", AUTHENTICATED)]
    )
    assert sum(seen.values()) == result.bytes
    assert seen["pkg/data/big.bin"] == len(APP["pkg/data/big.bin"])


def test_sealing_streams_in_constant_memory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "large.bin", "wb") as fh:
        for _ in range(32):
            fh.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        seal_tree(str(src), str(tmp_path / "img"), rules=[("nothing-matches", AUTHENTICATED)])
        _, peak_encrypted = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        seal_tree(str(src), str(tmp_path / "img2"), rules=[("large.bin", AUTHENTICATED)])
        _, peak_copied = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_encrypted < 4 << 20, f"sealing a 32 MiB file peaked at {peak_encrypted} bytes"
    assert peak_copied < 4 << 20, f"copying a 32 MiB file peaked at {peak_copied} bytes"
