"""Choosing the engine's interpreter: CITADEL_ENGINE values, the PyPy engine environment, clear errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine.command import engine_command
from citadel.engine.engines import PYPY_CRYPTOGRAPHY, engine_python, pypy_engine_dir, setup_commands
from citadel.engine.settings import parse_engine, parse_settings
from citadel.errors import EngineError, UsageError


@pytest.mark.parametrize(("text", "expected"), [
    ("cpython", "cpython"), ("CPython", "cpython"), (" pypy3 ", "pypy3"), ("pypy", "pypy3"), ("PyPy3", "pypy3"),
    ("/usr/bin/pypy3", "/usr/bin/pypy3"), ("/opt/py/bin/python3.9", "/opt/py/bin/python3.9"),
])
def test_engine_names_and_absolute_paths_are_accepted(text: str, expected: str) -> None:
    assert parse_engine("CITADEL_ENGINE", text) == expected


@pytest.mark.parametrize("text", ["jython", "pypy2", "python3", "bin/pypy3", "/usr/bin/", "", "/a\0b"])
def test_anything_else_is_a_usage_error_naming_the_setting(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_engine("CITADEL_ENGINE", text)
    assert caught.value.cause == f"CITADEL_ENGINE={text!r} is not an engine"
    assert "CITADEL_ENGINE=pypy3" in caught.value.remedy


@settings(max_examples=60)
@given(st.text(max_size=30))
def test_parse_engine_returns_a_known_engine_or_an_absolute_path(text: str) -> None:
    try:
        value = parse_engine("CITADEL_ENGINE", text)
    except UsageError:
        return
    assert value in ("cpython", "pypy3") or (value.startswith("/") and "\0" not in value)


def test_the_engine_knows_the_setting_and_rejects_a_bad_value() -> None:
    assert parse_settings({"CITADEL_ENGINE": "pypy3"}).engine == "pypy3"
    assert parse_settings({"CITADEL_ENGINE": "pypy3"}).unknown == ()
    assert parse_settings({}).engine is None
    with pytest.raises(UsageError):
        parse_settings({"CITADEL_ENGINE": "ironpython"})


def test_unset_means_the_interpreter_running_citadel() -> None:
    assert engine_python(None) is None and engine_python("") is None
    assert engine_command()[0] == os.path.abspath(sys.executable)
    assert engine_command(engine="cpython")[0] == os.path.abspath(sys.executable)


def test_an_explicit_python_wins_over_the_engine_setting(tmp_path: Path) -> None:
    assert engine_command("/usr/bin/python3", engine="pypy3")[0] == "/usr/bin/python3"


def test_a_path_must_be_an_executable(tmp_path: Path) -> None:
    assert engine_python(sys.executable) == sys.executable
    with pytest.raises(EngineError) as caught:
        engine_python(str(tmp_path / "missing-python"))
    assert caught.value.cause.endswith("is not an executable interpreter")
    with pytest.raises(EngineError):
        engine_python(str(tmp_path))  # a directory is not an interpreter


def test_a_missing_pypy_engine_says_how_to_set_it_up(tmp_path: Path) -> None:
    target = str(tmp_path / "pypy-engine")
    with pytest.raises(EngineError) as caught:
        engine_python("pypy3", pypy_dir=target)
    assert caught.value.cause == f"the PyPy engine is not set up: {target}/bin/python does not exist"
    assert caught.value.remedy == f"set it up once: {setup_commands(target)}"
    assert f"pypy3 -m venv {target}" in caught.value.remedy and PYPY_CRYPTOGRAPHY in caught.value.remedy


def test_a_pypy_engine_without_cryptography_is_named(tmp_path: Path) -> None:
    target = tmp_path / "pypy-engine"
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "python").symlink_to(sys.executable)
    with pytest.raises(EngineError) as caught:
        engine_python("pypy3", pypy_dir=str(target))
    assert caught.value.cause == f"the PyPy engine at {target} has no cryptography package"
    site = target / "lib" / "pypy3.9" / "site-packages" / "cryptography"
    site.mkdir(parents=True)
    assert engine_python("pypy3", pypy_dir=str(target)) == str(target / "bin" / "python")


def test_the_pypy_engine_lives_beside_the_venv_running_citadel() -> None:
    if sys.prefix != sys.base_prefix:
        assert pypy_engine_dir() == os.path.join(sys.prefix, "pypy-engine")
    else:
        assert pypy_engine_dir({"HOME": "/home/ada"}) == "/home/ada/.local/share/citadel/pypy-engine"
