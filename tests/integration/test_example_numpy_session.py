"""examples/numpy-session, end to end, by running the shell commands of its README as they stand.

The README's first block installs NumPy into `site` with pip; the test makes the same directory by
copying the test environment's numpy and numpy.libs (no network). Its second block seals the
session script with `site` as a python path, runs it with the real `citadel run` and types the same
session into `citadel python`; both must show the reference session's values, line by line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.conftest import CITADEL_BIN, REPO, clean_env

EXAMPLE = REPO / "examples" / "numpy-session"

numpy = pytest.importorskip("numpy")
SITE = Path(numpy.__file__).resolve().parent.parent

# What the reference's session (scone-python-docs.txt, "NumPy") displayed for a, a.shape, a.ndim,
# a.dtype.name, a.itemsize and type(a); type(a) spelled as Python 3 spells it (the reference ran 2.7).
REFERENCE = [
    "array([[ 0,  1,  2,  3,  4],",
    "       [ 5,  6,  7,  8,  9],",
    "       [10, 11, 12, 13, 14]])",
    "(3, 5)",
    "2",
    "'int64'",
    "8",
    "<class 'numpy.ndarray'>",
]

def readme_blocks() -> List[str]:
    text = (EXAMPLE / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2, "the README has two sh blocks: installing numpy, then sealing and running"
    return blocks


def make_site(work: Path) -> None:
    """What `python -m pip install --target site numpy` makes, from the numpy the tests run with."""
    if not (SITE / "numpy.libs").is_dir():
        pytest.skip("this numpy wheel bundles no libraries (numpy.libs)")
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("numpy", "numpy.libs"):
        shutil.copytree(SITE / name, work / "site" / name, ignore=ignore)


def run_readme(work: Path, script: str) -> subprocess.CompletedProcess:
    if not CITADEL_BIN.exists():  # a source checkout without the console script
        script = 'citadel() { python -m citadel.cli.main "$@"; }\n' + script
    env = clean_env(CITADEL_MODE="sim")
    assert "CITADEL_ALLOW_DLOPEN" not in env
    env["PATH"] = f"{CITADEL_BIN.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_readme_installs_numpy_into_a_site_directory_for_the_engines_python() -> None:
    install = readme_blocks()[0].strip()
    assert install == "python -m pip install --target site numpy"


def test_readme_seals_numpy_and_the_engine_shows_the_reference_sessions_values(tmp_path: Path) -> None:
    work = tmp_path / "numpy-session"
    shutil.copytree(EXAMPLE, work)
    make_site(work)
    proc = run_readme(work, readme_blocks()[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # stdout: the seal's summary, then step 2 (the script), then step 3 (the typed session, after prompts)
    lines = proc.stdout.splitlines()
    assert REFERENCE[0] in lines, proc.stdout
    first = lines.index(REFERENCE[0])
    summary, script, typed = lines[:first], lines[first:first + len(REFERENCE)], lines[first + len(REFERENCE):]
    assert script == REFERENCE
    assert "\n".join(typed).replace(">>> ", "").replace(">>>", "").splitlines() == REFERENCE
    assert "Traceback" not in proc.stderr

    # both runs opened the image step 1 sealed; CITADEL_VERSION=1 reported the settings and the mode
    sealed_tag = dict(line.split(":", 1) for line in summary if ":" in line)["tag"].strip()
    assert re.fullmatch(r"[0-9a-f]{64}", sealed_tag)
    assert re.findall(r"^citadel: image: ([0-9a-f]{64}) ", proc.stderr, flags=re.M) == [sealed_tag]
    assert re.findall(r"^Image: ([0-9a-f]{64}) ", proc.stderr, flags=re.M) == [sealed_tag]  # the console banner
    for line in ("citadel: CITADEL_HEAP=256M", "citadel: CITADEL_MODE=sim", "citadel: CITADEL_ALLOW_DLOPEN=0"):
        assert line in proc.stderr.splitlines()
    assert "memory is not protected" in proc.stderr
    assert any(line.startswith("native:") and "libstdc++.so.6" in line for line in summary)

    # the image holds the program and numpy encrypted: none of their source is on disk in the clear
    image = work / "numpy.img"
    assert (image / ".citadel" / "native" / "libstdc++.so.6").is_file()
    assert b"np.arange(15)" not in (image / "session.py").read_bytes()
    sealed_init = next(image.glob(".citadel/python-path/*/numpy/__init__.py")).read_bytes()
    assert (SITE / "numpy" / "__init__.py").read_bytes()[:200] not in sealed_init


def test_the_unsealed_script_prints_the_same_lines() -> None:
    """The program is ordinary Python: run by python directly, it prints the same session."""
    proc = subprocess.run([sys.executable, str(EXAMPLE / "app" / "session.py")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == REFERENCE
