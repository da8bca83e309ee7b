"""`citadel engine setup pypy3`: makes the PyPy engine's environment, and says clearly when it cannot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.mark.slow  # makes a PyPy venv and installs cryptography's wheel from the package index
def test_setup_makes_a_pypy_engine_that_measures(run_citadel, tmp_path: Path) -> None:
    target = tmp_path / "pypy-engine"
    made = run_citadel(["engine", "setup", "pypy3", "--target", str(target), "--json"], timeout=300)
    assert made.returncode == 0, made.stderr
    python = json.loads(made.stdout)["python"]
    assert os.access(python, os.X_OK)
    measured = run_citadel(["measure", "--engine", python], timeout=300)
    assert measured.returncode == 0, measured.stderr
    assert len(measured.stdout.strip()) == 64


def test_setup_without_pypy_is_one_clear_error(run_citadel, tmp_path: Path) -> None:
    result = run_citadel(["engine", "setup", "pypy3", "--target", str(tmp_path / "e"), "--pypy", "/nonexistent/pypy3"])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("citadel: error: cannot run /nonexistent/pypy3")
    assert lines[1].startswith("citadel: hint: install PyPy first") and "Traceback" not in result.stderr
    assert not (tmp_path / "e").exists()
