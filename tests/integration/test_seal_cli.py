"""`citadel seal` as users run it: a real process, real files, real keys."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from citadel.seal.format import AUTHENTICATED, ENCRYPTED, MANIFEST_PATH, UNPROTECTED
from citadel.seal.image import SealedImage
from citadel.seal.keyfile import read_key_file
from tests.conftest import citadel_cmd, clean_env

PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def make_tree(root: Path, files: Dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """app/ (with static files, a cache, a .git) and a virtual environment .venv/ beside it."""
    make_tree(
        tmp_path / "app",
        {
            "app.py": b"import dep\nprint(dep.X)\n",
            "static/site.css": b"body {}\n",
            "cache/state": b"0",
            ".git/HEAD": b"ref: refs/heads/main\n",
            "__pycache__/app.cpython-311.pyc": b"stale",
        },
    )
    make_tree(
        tmp_path / ".venv",
        {"pyvenv.cfg": b"home = /usr/bin\n", f"lib/{PYVER}/site-packages/dep.py": b"X = 1\n"},
    )
    return tmp_path


def leftovers(directory: Path) -> List[str]:
    return [n for n in os.listdir(directory) if ".sealing-" in n or ".tmp-" in n or ".replaced-" in n]


def assert_one_clear_error(result: subprocess.CompletedProcess, code: int, says: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("citadel: error: ") and says in lines[0], lines[0]
    assert lines[1].startswith("citadel: hint: ")
    assert result.stdout == ""


# --- the happy paths ----------------------------------------------------------------------------------
def test_help_examples_run_as_written(run_citadel, workdir: Path) -> None:
    help_text = run_citadel(["seal", "--help"]).stdout
    examples = [
        line.split("#")[0].strip()
        for line in help_text.split("examples:")[1].splitlines()
        if line.strip().startswith("citadel seal")
    ]
    assert len(examples) >= 4
    for example in examples:
        result = run_citadel(shlex.split(example)[1:], cwd=str(workdir))
        assert result.returncode == 0, f"{example}\n{result.stderr}"
        assert "Traceback" not in result.stderr
    full = SealedImage.open(str(workdir / "full.img"), read_key_file(str(workdir / "full.key")))
    assert full.read(".citadel/python-path/0/dep.py") == b"X = 1\n"
    assert not any(rel.startswith(".venv") for rel in full.manifest.files)


def test_plain_output_names_image_tag_and_key_and_warns_the_key_is_secret(run_citadel, workdir: Path) -> None:
    result = run_citadel(["seal", "app", "-o", "app.img", "--skip", ".git"], cwd=str(workdir))
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["image"] == str(workdir / "app.img")
    assert "secret" in result.stderr
    image = SealedImage.open(fields["image"], bytes.fromhex(fields["key"]), expected_tag=fields["tag"])
    assert image.read("app.py") == b"import dep\nprint(dep.X)\n"
    assert fields["files"].startswith("3 (")
    # the host's stale pyc is replaced by a fresh one compiled from the sealed source
    assert image.read("__pycache__/app.cpython-311.pyc")[:4] == importlib.util.MAGIC_NUMBER


def test_json_output_has_every_field(run_citadel, workdir: Path) -> None:
    result = run_citadel(
        [
            "seal",
            "app",
            "-o",
            "app.img",
            "--json",
            "--authenticate",
            "static/*",
            "--exclude",
            "cache",
            "--skip",
            ".git",
            "--venv",
            ".venv",
        ],
        cwd=str(workdir),
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"image", "tag", "key", "key_file", "files", "bytes", "regions", "python_path",
                        "bytecode", "native"}
    assert doc["key_file"] is None
    assert doc["regions"] == {ENCRYPTED: 2, AUTHENTICATED: 1, UNPROTECTED: 1}
    assert doc["files"] == 4 and doc["bytes"] == len(b"import dep\nprint(dep.X)\nbody {}\n0X = 1\n")
    assert doc["python_path"] == [
        {
            "image_path": ".citadel/python-path/0",
            "source": str(workdir / ".venv" / "lib" / PYVER / "site-packages"),
        }
    ]
    image = SealedImage.open(doc["image"], bytes.fromhex(doc["key"]), expected_tag=doc["tag"])
    assert image.region_of("cache/state") == UNPROTECTED


def test_key_out_is_private_and_the_key_is_not_printed(run_citadel, workdir: Path) -> None:
    result = run_citadel(["seal", "app", "-o", "app.img", "--key-out", "app.key", "--json"], cwd=str(workdir))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    key = read_key_file(str(workdir / "app.key"))
    assert "key" not in doc and key.hex() not in result.stdout + result.stderr
    assert doc["key_file"] == str(workdir / "app.key")
    assert stat.S_IMODE(os.stat(workdir / "app.key").st_mode) == 0o600
    SealedImage.open(doc["image"], key, expected_tag=doc["tag"])


def test_reseal_with_key_file_keeps_the_key(run_citadel, workdir: Path) -> None:
    first = run_citadel(["seal", "app", "-o", "app.img", "--key-out", "app.key"], cwd=str(workdir))
    assert first.returncode == 0, first.stderr
    (workdir / "app" / "new.py").write_text("NEW = 1\n")
    again = run_citadel(
        ["seal", "app", "-o", "app.img", "--key-file", "app.key", "--force", "--quiet"], cwd=str(workdir)
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr == "" and "key:" not in again.stdout
    image = SealedImage.open(str(workdir / "app.img"), read_key_file(str(workdir / "app.key")))
    assert image.read("new.py") == b"NEW = 1\n"


def test_a_mistyped_rule_is_warned_about(run_citadel, workdir: Path) -> None:
    result = run_citadel(["seal", "app", "-o", "app.img", "--exclude", "cahce", "-q"], cwd=str(workdir))
    assert result.returncode == 0
    assert "citadel: warning: --exclude 'cahce' matched no path" in result.stderr


# --- one clear error, nothing written ------------------------------------------------------------------
def _seal_existing_image(w: Path) -> List[str]:
    subprocess.run(
        citadel_cmd() + ["seal", "app", "-o", "app.img", "-q"],
        cwd=w,
        env=clean_env(),
        check=True,
        capture_output=True,
    )
    return ["seal", "app", "-o", "app.img"]


def _symlink_outside(w: Path) -> List[str]:
    os.symlink("/etc/hostname", w / "app" / "hostname")
    return ["seal", "app", "-o", "app.img"]


def _dangling(w: Path) -> List[str]:
    os.symlink("nowhere.py", w / "app" / "gone.py")
    return ["seal", "app", "-o", "app.img"]


def _fifo(w: Path) -> List[str]:
    os.mkfifo(w / "app" / "pipe")
    return ["seal", "app", "-o", "app.img"]


def _key_out_exists(w: Path) -> List[str]:
    (w / "app.key").write_text("precious\n")
    return ["seal", "app", "-o", "app.img", "--key-out", "app.key"]


def _malformed_key_file(w: Path) -> List[str]:
    (w / "app.key").write_text("not a key\n")
    return ["seal", "app", "-o", "app.img", "--key-file", "app.key"]


def _other_files(w: Path) -> List[str]:
    make_tree(w / "app.img", {"notes.txt": b"mine"})
    return ["seal", "app", "-o", "app.img", "--force"]


ERROR_CASES: Dict[str, tuple] = {
    "src_missing": (lambda w: ["seal", "nope", "-o", "app.img"], 2, "does not exist"),
    "src_is_a_file": (lambda w: ["seal", "app/app.py", "-o", "app.img"], 2, "is not a directory"),
    "image_inside_src": (lambda w: ["seal", "app", "-o", "app/app.img"], 2, "would seal itself"),
    "image_contains_src": (lambda w: ["seal", "app", "-o", ".", "--force"], 2, "contains SRC"),
    "image_exists_without_force": (_seal_existing_image, 2, "already exists"),
    "image_is_a_directory_of_other_files": (_other_files, 2, "not a sealed image"),
    "image_parent_missing": (lambda w: ["seal", "app", "-o", "out/app.img"], 2, "does not exist"),
    "key_out_exists_without_force": (_key_out_exists, 2, "already exists"),
    "key_out_directory_missing": (
        lambda w: ["seal", "app", "-o", "app.img", "--key-out", "keys/app.key"],
        2,
        "does not exist",
    ),
    "key_out_inside_src": (
        lambda w: ["seal", "app", "-o", "app.img", "--key-out", "app/app.key"],
        2,
        "inside SRC",
    ),
    "key_file_missing": (
        lambda w: ["seal", "app", "-o", "app.img", "--key-file", "nope.key"],
        2,
        "does not exist",
    ),
    "key_file_malformed": (_malformed_key_file, 1, "64 hex digits"),
    "symlink_outside_tree": (_symlink_outside, 1, "outside the tree"),
    "dangling_symlink": (_dangling, 1, "dangling"),
    "fifo_in_tree": (_fifo, 1, "FIFO"),
    "python_path_missing": (
        lambda w: ["seal", "app", "-o", "app.img", "--python-path", "deps"],
        2,
        "does not exist",
    ),
    "venv_without_site_packages": (
        lambda w: ["seal", "app", "-o", "app.img", "--venv", "app"],
        2,
        "no lib/python*/site-packages",
    ),
    "empty_pattern": (lambda w: ["seal", "app", "-o", "app.img", "--exclude", ""], 2, "pattern"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_input_is_one_clear_error_and_writes_nothing(run_citadel, workdir: Path, case: str) -> None:
    setup, code, says = ERROR_CASES[case]
    args = setup(workdir)
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    key_before = (workdir / "app.key").read_bytes() if (workdir / "app.key").exists() else None
    image_before = (
        (workdir / "app.img" / MANIFEST_PATH).read_bytes()
        if (workdir / "app.img" / MANIFEST_PATH).exists()
        else None
    )
    result = run_citadel(args, cwd=str(workdir))
    assert_one_clear_error(result, code, says)
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before, (
        "nothing added or removed"
    )
    assert not leftovers(workdir) and not leftovers(workdir / "app")
    if key_before is not None:
        assert (workdir / "app.key").read_bytes() == key_before
    if image_before is not None:
        assert (workdir / "app.img" / MANIFEST_PATH).read_bytes() == image_before


def test_unreadable_file_is_one_clear_error(workdir: Path) -> None:
    """Root reads every file, so as root the command runs without the capabilities that allow it."""
    secret = workdir / "app" / "secret.py"
    secret.write_text("KEY = 1\n")
    os.chmod(secret, 0)
    prefix: List[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, "--bounding-set", caps, "--inh-caps", caps]
    result = subprocess.run(
        prefix + citadel_cmd() + ["seal", "app", "-o", "app.img"],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_clear_error(result, 1, "secret.py")
    assert "permission denied" in result.stderr.splitlines()[0]
    assert not (workdir / "app.img").exists() and not leftovers(workdir)


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(workdir: Path) -> None:
    """RLIMIT_FSIZE makes writes past 64 KiB fail (EFBIG) the way a full disk fails them (ENOSPC)."""
    (workdir / "app" / "big.bin").write_bytes(os.urandom(1 << 20))

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    result = subprocess.run(
        citadel_cmd() + ["seal", "app", "-o", "app.img"],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
    )
    assert_one_clear_error(result, 1, "cannot write the image")
    assert not (workdir / "app.img").exists() and not leftovers(workdir)


def test_termination_while_sealing_leaves_nothing(workdir: Path) -> None:
    big = workdir / "app" / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: cheap to make, still 1 GiB to read, encrypt and write
    proc = subprocess.Popen(
        citadel_cmd() + ["seal", "app", "-o", "app.img"],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not leftovers(workdir) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert leftovers(workdir), "the seal should still be running (staging directory present)"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert not (workdir / "app.img").exists() and not leftovers(workdir)


# --- sealed dependencies: numpy, as in the reference --------------------------------------------------
def test_sealed_numpy_reads_back_identical(run_citadel, tmp_path: Path) -> None:
    import numpy

    installed = Path(numpy.__file__).resolve().parent.parent
    site = tmp_path / "site-packages"
    site.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(installed / "numpy", site / "numpy", ignore=ignore, symlinks=True)
    if (installed / "numpy.libs").is_dir():
        shutil.copytree(installed / "numpy.libs", site / "numpy.libs", ignore=ignore, symlinks=True)
    app = make_tree(tmp_path / "app", {"app.py": b"import numpy as np\nprint(np.arange(6).reshape(2, 3))\n"})
    result = run_citadel(
        [
            "seal",
            str(app),
            "-o",
            str(tmp_path / "app.img"),
            "--python-path",
            str(site),
            "--key-out",
            str(tmp_path / "app.key"),
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    image = SealedImage.open(doc["image"], read_key_file(str(tmp_path / "app.key")), expected_tag=doc["tag"])
    prefix = doc["python_path"][0]["image_path"] + "/"
    libraries = [rel for rel in image.manifest.files if rel.endswith(".so") or ".so." in rel]
    shared = [rel for rel in libraries if rel.startswith(prefix)]
    assert any(rel.startswith(prefix + "numpy/_core/_multiarray_umath") for rel in shared)
    bundled = [rel for rel in libraries if rel.startswith(".citadel/native/")]
    assert bundled and all(image.region_of(rel) == AUTHENTICATED for rel in bundled)
    for rel in shared:
        assert image.region_of(rel) == ENCRYPTED
        assert image.read(rel) == (site / rel[len(prefix) :]).read_bytes(), rel
    assert (
        doc["bytes"]
        == sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) + (app / "app.py").stat().st_size
    )
