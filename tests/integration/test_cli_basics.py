"""The CLI as users meet it: help, usage errors, and the README staying true."""

import re

from tests.conftest import REPO


def test_help_lists_every_command_in_the_readme(run_citadel):
    result = run_citadel(["--help"])
    assert result.returncode == 0
    readme = (REPO / "README.md").read_text()
    for command in re.findall(r"^\| `citadel (\w+)", readme, flags=re.M):
        assert command in result.stdout, f"README documents `citadel {command}` but --help does not list it"


def test_run_help_explains_settings(run_citadel):
    result = run_citadel(["run", "--help"])
    assert result.returncode == 0
    for setting in ("CITADEL_MODE", "CITADEL_HEAP", "CITADEL_ALLOW_DLOPEN", "CITADEL_HASH"):
        assert setting in result.stdout


def test_run_without_key_file_is_one_clear_error(run_citadel, tmp_path):
    result = run_citadel(["run", "--image", str(tmp_path), "app.py"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("citadel: error: --image needs --key-file")
    assert lines[1].startswith("citadel: hint: ")


def test_run_with_a_missing_image_names_it(run_citadel, tmp_path):
    key = tmp_path / "k"
    key.write_text("00" * 32)
    result = run_citadel(["run", "--image", str(tmp_path / "nope"), "--key-file", str(key), "app.py"])
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_run_with_a_malformed_key_file_says_what_a_key_looks_like(run_citadel, tmp_path):
    key = tmp_path / "k"
    key.write_text("not a key")
    result = run_citadel(["run", "--image", str(tmp_path), "--key-file", str(key), "app.py"])
    assert result.returncode != 0
    assert "64 hex digits" in result.stderr and "Traceback" not in result.stderr
