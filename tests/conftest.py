"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
CITADEL_BIN = Path(sys.executable).parent / "citadel"


def citadel_cmd() -> list[str]:
    """The installed console script when present (as users run it), else the module."""
    if CITADEL_BIN.exists():
        return [str(CITADEL_BIN)]
    return [sys.executable, "-m", "citadel.cli.main"]


# The engine caches its manifest; tests use a private cache so edits to the engine's files while
# developing never meet a stale cache in ~/.cache (the engine would rightly refuse to start).
_TEST_CACHE = os.environ.setdefault("CITADEL_CACHE_DIR", tempfile.mkdtemp(prefix="citadel-test-cache-"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITADEL_", "PYTHON"))}
    env["CITADEL_CACHE_DIR"] = _TEST_CACHE
    env.update(extra)
    return env


@pytest.fixture
def run_citadel():
    """Run the real `citadel` command as a subprocess; returns CompletedProcess (text)."""

    def _run(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120,
             input: str | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(citadel_cmd() + list(args), capture_output=True, text=True,
                              env=env if env is not None else clean_env(CITADEL_MODE="sim"),
                              timeout=timeout, input=input, cwd=cwd)

    return _run


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The shared hardware evidence (../shared/vectors beside the repo). Absent -> fail, never skip."""
    for candidate in (REPO.parent / "shared" / "vectors", REPO / "shared" / "vectors"):
        if candidate.is_dir():
            return candidate
    pytest.fail("../shared/vectors not found beside the repository; the evidence tests need it")
