"""The engine's command line and environment, as the launcher builds them."""

from __future__ import annotations

import os
import sys

from citadel.engine.command import boot_script, engine_command, engine_environment, manifest_paths


def test_engine_command_is_an_isolated_interpreter_running_boot() -> None:
    command = engine_command()
    assert command == [os.path.abspath(sys.executable), "-I", "-S", "-B", boot_script()]
    assert os.path.isfile(command[-1]) and command[-1].endswith("citadel/engine/boot.py")


def test_environment_keeps_settings_and_locale_only() -> None:
    host = {"PYTHONPATH": "/evil", "PYTHONHOME": "/evil", "PATH": "/bin", "LD_PRELOAD": "/evil.so", "LANG": "C.UTF-8",
            "LC_ALL": "C", "TERM": "xterm", "TZ": "UTC", "HOME": "/home/u", "XDG_CACHE_HOME": "/c",
            "CITADEL_MODE": "hw", "SECRET": "x"}
    env = engine_environment({"CITADEL_MODE": "sim", "CITADEL_HEAP": "1G", "CITADEL_LAUNCH_FD": "9",
                              "PYTHONPATH": "/evil"}, host)
    assert env == {"LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "xterm", "TZ": "UTC", "HOME": "/home/u",
                   "XDG_CACHE_HOME": "/c", "CITADEL_MODE": "sim", "CITADEL_HEAP": "1G"}


def test_manifest_location_follows_cache_settings(tmp_path: object) -> None:
    manifest, cache = manifest_paths(settings_env={"CITADEL_CACHE_DIR": "/somewhere"})
    assert manifest.startswith("/somewhere/engine-") and manifest.endswith(".manifest")
    assert cache == manifest[: -len(".manifest")] + ".cache"
