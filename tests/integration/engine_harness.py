"""Start the real engine the way the launcher does: `python -I -S -B boot.py`, a clean environment,
and the launch request through a pipe whose descriptor CITADEL_LAUNCH_FD names.

Each test session builds its own engine manifest in a temporary CITADEL_CACHE_DIR (the first start
does it), so the tests never touch the user's cache. Tests that change engine files work on a copy
of the citadel package (`engine_copy`) with its own cache directory: installed files are never modified.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import pytest

from citadel.engine.command import engine_command, engine_environment
from citadel.seal.sealer import seal_tree

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PYTHON = sys.executable
KEY = bytes(range(32))

Files = Dict[str, Union[str, bytes]]


def write_tree(root: Path, files: Files) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    return root


def sealed_app(tmp_path: Path, files: Files, *, name: str = "app") -> Path:
    """Seal ``files`` into tmp_path/<name>-image with the fixed test KEY; returns the image path."""
    src = write_tree(tmp_path / f"{name}-src", files)
    image = tmp_path / f"{name}-image"
    seal_tree(str(src), str(image), key=KEY)
    return image


def request(*, image: Optional[Path] = None, argv: Sequence[str] = (), module: Optional[str] = None,
            interactive: bool = False, command: Optional[str] = None, cwd: Optional[Path] = None,
            key: Optional[bytes] = None, expected_tag: Optional[str] = None) -> dict:
    """A launch request document (docs/engine.md)."""
    doc = {
        "version": 1,
        "image": str(image) if image is not None else None,
        "key": (key or KEY).hex() if image is not None else None,
        "expected_tag": expected_tag,
        "argv": list(argv),
        "module": module,
        "interactive": interactive,
        "cwd": str(cwd) if cwd is not None else None,
    }
    if command is not None:
        doc["command"] = command
    return doc


def launch(doc: Optional[dict], settings: Mapping[str, str], *, boot: Optional[Path] = None,
           stdin: Optional[str] = None, timeout: float = 120, raw_request: Optional[bytes] = None
           ) -> subprocess.CompletedProcess:
    """Run the engine to completion with this request and these CITADEL_* settings (text output)."""
    env = engine_environment(settings, {"LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp")})
    command = engine_command(PYTHON)
    if boot is not None:
        command[-1] = str(boot)
    read_end = write_end = -1
    pass_fds: tuple = ()
    if doc is not None or raw_request is not None:
        read_end, write_end = os.pipe()
        env["CITADEL_LAUNCH_FD"] = str(read_end)
        pass_fds = (read_end,)
    proc = subprocess.Popen(command, env=env, pass_fds=pass_fds, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if read_end >= 0:
        os.close(read_end)
        payload = raw_request if raw_request is not None else json.dumps(doc).encode()
        with contextlib.suppress(BrokenPipeError):  # the engine may exit before reading it
            os.write(write_end, payload)
        os.close(write_end)
    try:
        out, err = proc.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the engine did not finish within {timeout} s; stderr: {err}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def two_line_error(result: subprocess.CompletedProcess) -> tuple:
    """(cause, remedy) of an engine error, after checking it is exactly that and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("citadel: ")]
    errors = [line for line in lines if line.startswith("citadel: error: ")]
    hints = [line for line in lines if line.startswith("citadel: hint: ")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    return errors[0][len("citadel: error: "):], hints[0][len("citadel: hint: "):]


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory private to this test session (the engine builds its manifest there)."""
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture
def settings(engine_cache: Path) -> Dict[str, str]:
    """The default settings for a test engine: simulation mode, the session's cache."""
    return {"CITADEL_MODE": "sim", "CITADEL_CACHE_DIR": str(engine_cache)}


def engine_copy(root: Path) -> Path:
    """A copy of the citadel package under root/src (pycs and mtimes kept); returns its boot.py."""
    target = root / "src" / "citadel"
    shutil.copytree(SRC / "citadel", target, symlinks=False)
    return target / "engine" / "boot.py"


def cached_manifest(cache_dir: Path) -> bytes:
    """The one engine manifest in a cache directory (tests give each engine its own directory)."""
    manifests = sorted(cache_dir.glob("engine-*.manifest"))
    assert len(manifests) == 1, manifests
    return manifests[0].read_bytes()
