"""Programs a session allows (allowed_executables): a real CAS, the real `citadel run`, a sealed app.

The listed program (named by its real path) runs, with a warning that it is outside the engine's
protection; a program not listed is refused with a hint naming allowed_executables; the kernel's
exec filter still refuses an exec from any other pointer; a relative path is refused when the
session is created, pointing at its line; and an engine run without a CAS allows no program.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest

from citadel.seal.image import SealedImage
from tests.integration import engine_harness
from tests.integration.cas.conftest import Deployment, _deploy
from tests.integration.engine_harness import KEY, launch, request, sealed_app
from tests.integration.test_engine_cas import create_session, measure, policy, run

engine_cache = engine_harness.engine_cache  # fixtures shared by the engine tests
settings = engine_harness.settings

ECHO = os.path.realpath("/bin/echo")
TRUE = os.path.realpath("/bin/true")

APP = """
import ctypes, json, os, subprocess, sys
out = {}
echo = subprocess.run([sys.argv[1], "hi"], capture_output=True, text=True)
out["echo"] = [echo.returncode, echo.stdout]
try:
    subprocess.run([sys.argv[2]])
    out["true"] = "ran"
except PermissionError as exc:
    out["true"] = [str(exc), exc.remedy]
# the kernel: the same path from any other pointer is refused (only the pinned page passes)
libc = ctypes.CDLL(None, use_errno=True)
path = sys.argv[1].encode()
argv = (ctypes.c_char_p * 3)(path, b"direct", None)
out["direct"] = [libc.execv(path, argv), os.strerror(ctypes.get_errno())]
print(json.dumps(out))
"""

HOST_APP = """
import subprocess, sys
try:
    subprocess.run([sys.argv[1], "hi"])
    print("ran")
except PermissionError as exc:
    print("refused:", exc.remedy)
"""

HINT = ("a session can allow a program by listing its absolute path in the service's allowed_executables "
        "(docs/policy.md)")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from _deploy(tmp_path_factory, "sqlite", None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_app(tmp_path_factory.mktemp("app"), {"app.py": APP})


def _policy(name: str, measurement: str, tag: str, allowed: str) -> str:
    return policy(name, measurement, tag, "unused", host_arguments=True, command="app.py",
                  extra_service=f"    allowed_executables: {allowed}\n")


def test_an_allowed_program_runs_with_a_warning_and_nothing_else_does(
        deployment: Deployment, cache: Path, image: Path) -> None:
    measurement = measure(deployment, cache)
    tag = SealedImage.open(str(image), KEY).tag
    name = f"s{secrets.token_hex(6)}"
    create_session(deployment, _policy(name, measurement, tag, f"[{ECHO}]"))
    done = run(deployment, cache, image, f"{name}/app", ECHO, TRUE)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["echo"] == [0, "hi\n"]
    warnings = [line for line in done.stderr.splitlines() if "OUTSIDE the engine's protection" in line]
    assert warnings == [f"citadel: warning: running {ECHO} OUTSIDE the engine's protection (the session allows "
                        "it): it sees no sealed files and no volumes, and its output is not protected"]
    cause, remedy = out["true"]
    assert cause == f"running other programs is not allowed inside the engine yet (subprocess.Popen: {[TRUE]!r})"
    assert remedy.endswith(HINT)
    assert out["direct"] == [-1, "Operation not permitted"]


def test_a_relative_path_is_refused_at_session_create_with_a_pointer(
        deployment: Deployment, tmp_path: Path) -> None:
    path = tmp_path / "relative.yaml"
    path.write_text(_policy("relative", "ab" * 32, "cd" * 32, "[bin/echo]"))
    result = deployment.server.cli(["session", "create", str(path)])
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "allowed_executables" in text)
    assert result.returncode == 1, result.stderr
    assert f"{path}:{line}:" in result.stderr and "'bin/echo' is not an absolute path" in result.stderr


def test_an_engine_run_without_a_cas_allows_no_program(tmp_path: Path, settings: dict) -> None:
    host_image = sealed_app(tmp_path, {"host.py": HOST_APP})
    result = launch(request(image=host_image, argv=["host.py", ECHO]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: ") and result.stdout.endswith(HINT + "\n"), result.stdout
    assert "OUTSIDE" not in result.stderr
