"""The measurement is what the engine runs: CITADEL_HASH prints what anyone can recompute from the
engine manifest and the measured settings, it changes with each of them, and an engine file that
differs from the manifest is refused, never run. Engine files are changed only in a copy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from citadel.engine.command import measure_engine
from citadel.engine.measure import MEASUREMENT_HEADER, measurement_of_manifest
from tests.integration import engine_harness
from tests.integration.engine_harness import (
    cached_manifest,
    engine_copy,
    launch,
    request,
    sealed_app,
    two_line_error,
)

engine_cache = engine_harness.engine_cache  # fixtures shared by the engine tests
settings = engine_harness.settings

HELLO = {"hello.py": 'print("hello world")\n'}


def hash_of(settings: dict, **extra: str) -> str:
    result = launch(None, {**settings, "CITADEL_HASH": "1", **extra})
    assert result.returncode == 0, result.stderr
    digest = result.stdout.strip()
    assert len(digest) == 64 and int(digest, 16) >= 0
    return digest


def test_hash_prints_the_measurement_anyone_can_recompute(settings: dict, engine_cache: Path) -> None:
    digest = hash_of(settings)
    manifest = cached_manifest(engine_cache)
    assert digest == measurement_of_manifest(manifest, mode="sim", allow_dlopen=False, engine="cpython")
    text = (f"{MEASUREMENT_HEADER}\nengine-manifest={hashlib.sha256(manifest).hexdigest()}\n"
            "allow_dlopen=0\nengine=cpython\nmode=sim\n")
    assert digest == hashlib.sha256(text.encode()).hexdigest()  # docs/measurement.md, by hand


def test_citadel_measure_api_agrees_with_the_engine(settings: dict) -> None:
    assert measure_engine(settings_env=settings) == hash_of(settings)


def test_measurement_changes_with_allow_dlopen_and_mode(settings: dict) -> None:
    sim = hash_of(settings)
    dlopen = hash_of(settings, CITADEL_ALLOW_DLOPEN="1")
    hw = hash_of(settings, CITADEL_MODE="hw")  # measured, not run: no TEE is needed to print it
    assert len({sim, dlopen, hw}) == 3
    assert hash_of(settings, CITADEL_HEAP="64M", CITADEL_STACK="1M", CITADEL_LOG="debug") == sim


def test_the_running_engine_reports_the_same_measurement(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, HELLO)
    result = launch(request(image=image, argv=["hello.py"]), {**settings, "CITADEL_VERSION": "1"})
    assert result.returncode == 0, result.stderr
    assert f"citadel: measurement: {hash_of(settings)}" in result.stderr


@pytest.fixture
def copied_engine(tmp_path: Path) -> tuple:
    """(boot.py of a private copy of citadel, settings with its own cache directory)."""
    boot = engine_copy(tmp_path / "engine")
    cache = tmp_path / "cache"
    return boot, {"CITADEL_MODE": "sim", "CITADEL_CACHE_DIR": str(cache)}, cache


def test_measurement_changes_when_an_engine_file_changes(copied_engine: tuple) -> None:
    boot, env, cache = copied_engine
    before = launch(None, {**env, "CITADEL_HASH": "1"}, boot=boot)
    assert before.returncode == 0, before.stderr
    manifest_before = cached_manifest(cache)
    errors = boot.parent.parent / "errors.py"
    errors.write_text(errors.read_text() + "\n# one more line\n")
    after = launch(None, {**env, "CITADEL_HASH": "1", "CITADEL_REBUILD": "1"}, boot=boot)
    assert after.returncode == 0, after.stderr
    assert after.stdout != before.stdout
    changed = set(cached_manifest(cache).splitlines()) ^ set(manifest_before.splitlines())
    # the source's line changed, and its bytecode, no longer current for it, left the manifest
    assert {line.split(b" ", 2)[2] for line in changed} == {
        b"citadel/citadel/errors.py", b"citadel/citadel/__pycache__/errors.cpython-311.pyc"}


def test_an_engine_file_that_differs_from_the_manifest_is_refused(tmp_path: Path, copied_engine: tuple) -> None:
    boot, env, _cache = copied_engine
    image = sealed_app(tmp_path, HELLO)
    assert launch(request(image=image, argv=["hello.py"]), env, boot=boot).returncode == 0  # builds the manifest
    image_module = boot.parent.parent / "seal" / "image.py"  # imported only to open the image
    image_module.write_text(image_module.read_text() + "\nprint('changed code ran')\n")
    result = launch(request(image=image, argv=["hello.py"]), env, boot=boot)
    assert result.returncode == 70
    assert result.stdout == ""
    cause, remedy = two_line_error(result)
    assert cause == f"the engine file {image_module} differs from the measured engine"
    assert "citadel measure --rebuild" in remedy


@pytest.mark.parametrize("name", ["boot.py", "bootstrap.py", "trusted_base.py", "trusted_import.py"])
def test_the_boot_files_themselves_are_checked(tmp_path: Path, copied_engine: tuple, name: str) -> None:
    boot, env, _cache = copied_engine
    assert launch(None, {**env, "CITADEL_HASH": "1"}, boot=boot).returncode == 0
    target = boot.parent / name
    target.write_text(target.read_text() + "\n# changed after measuring\n")
    result = launch(None, {**env, "CITADEL_HASH": "1"}, boot=boot)
    assert result.returncode == 70
    cause, _ = two_line_error(result)
    assert cause == f"the engine file {target} differs from the measured engine"


def test_hash_checks_every_file_of_the_trusted_base(copied_engine: tuple) -> None:
    """`citadel measure` does not print a measurement for files that are no longer what it names."""
    boot, env, _cache = copied_engine
    assert launch(None, {**env, "CITADEL_HASH": "1"}, boot=boot).returncode == 0
    evidence = boot.parent.parent / "attest" / "evidence.py"  # not imported by CITADEL_HASH itself
    evidence.write_text(evidence.read_text() + "\n")
    result = launch(None, {**env, "CITADEL_HASH": "1"}, boot=boot)
    assert result.returncode == 70
    assert str(evidence) in two_line_error(result)[0]


def test_a_damaged_manifest_cache_is_one_clear_error(copied_engine: tuple) -> None:
    boot, env, cache = copied_engine
    assert launch(None, {**env, "CITADEL_HASH": "1"}, boot=boot).returncode == 0
    manifest = sorted(cache.glob("*.manifest"))[0]
    manifest.write_bytes(manifest.read_bytes().replace(b"citadel-engine-manifest/v1", b"something-else/v9", 1))
    result = launch(None, {**env, "CITADEL_HASH": "1"}, boot=boot)
    assert result.returncode == 70
    cause, remedy = two_line_error(result)
    assert "citadel measure --rebuild" in remedy
