"""`citadel run --cas ...`: the launch job and the engine settings the CLI builds for the CAS flow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import pytest

from citadel.cli.engine_flags import add_cas_arguments, add_image_arguments, add_volume_arguments
from citadel.cli.image_job import cas_job_from_args, cas_requested
from citadel.errors import UsageError

PIN = "6d" * 32


def parse(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_image_arguments(parser, required=False)
    parser.add_argument("-m", dest="module")
    add_volume_arguments(parser)
    add_cas_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.img").mkdir()
    return {"HOME": str(tmp_path / "home"), "LANG": "C.UTF-8", "SECRET_OF_THE_HOST": "x"}


def test_when_the_cas_flow_is_asked_for() -> None:
    assert cas_requested(parse(["--cas", "https://cas:8443"]), {})
    assert cas_requested(parse(["--config-id", "a/b"]), {})
    assert cas_requested(parse([]), {"CITADEL_CONFIG_ID": "a/b"})
    assert not cas_requested(parse(["--key-file", "k"]), {"CITADEL_CONFIG_ID": "a/b"})
    assert not cas_requested(parse([]), {"CITADEL_CAS_ADDR": "https://cas:8443"})


def test_the_job_carries_the_target_the_host_env_and_args(env: Dict[str, str], tmp_path: Path) -> None:
    args = parse(["--cas", "cas.example:9443", "--cas-fingerprint", f"sha256:{PIN}", "--config-id", "hello/app",
                  "--image", "app.img", "--volume", "results=vol"])
    built = cas_job_from_args(args, ["--verbose"], env)
    doc = json.loads(built.job.request())
    assert doc["cas"] == {"addr": "https://cas.example:9443", "config_id": "hello/app", "fingerprint": PIN}
    assert (doc["key"], doc["expected_tag"], doc["argv"]) == (None, None, [])
    assert doc["host_env"] == env and doc["host_args"] == ["--verbose"]
    assert doc["volumes"] == [{"name": "results", "host_dir": str(tmp_path / "vol")}]
    assert built.settings == {"CITADEL_CAS_ADDR": "https://cas.example:9443", "CITADEL_CONFIG_ID": "hello/app",
                              "CITADEL_CAS_FINGERPRINT": PIN,
                              "CITADEL_PLATFORM_KEY": str(tmp_path / "home" / ".config" / "citadel" / "platform.key")}
    assert built.pinned.explicit


@pytest.mark.parametrize("argv, fragment", [
    (["--key-file", "k"], "--key-file cannot be used with a CAS"),
    (["--tag", "ab"], "--tag cannot be used with a CAS"),
    (["-m", "pkg"], "-m cannot be used with a CAS"),
    (["--tag-store", "t.json"], "--tag-store cannot be used with a CAS"),
    (["--volume", "results=vol:/data"], "names a mount path or options"),
    (["--volume", "results"], "is not NAME=HOST_DIR"),
    (["--volume", "a=x", "--volume", "a=y"], "names 'a' twice"),
])
def test_what_the_policy_decides_is_refused_on_the_command_line(env: Dict[str, str], argv: List[str],
                                                                 fragment: str) -> None:
    args = parse(["--cas", "https://cas:8443", "--cas-fingerprint", PIN, "--config-id", "hello/app",
                  "--image", "app.img", *argv])
    with pytest.raises(UsageError, match=fragment):
        cas_job_from_args(args, [], env)


@pytest.mark.parametrize("argv, fragment", [
    (["--cas", "https://cas:8443", "--cas-fingerprint", PIN, "--image", "app.img"], "needs --config-id"),
    (["--cas", "https://cas:8443", "--cas-fingerprint", PIN, "--config-id", "hello"], "is not SESSION/SERVICE"),
    (["--cas", "https://cas:8443", "--cas-fingerprint", PIN, "--config-id", "hello/app"], "--image is required"),
    (["--cas", "https://cas:8443", "--config-id", "hello/app", "--image", "app.img"], "no fingerprint is pinned"),
])
def test_missing_parts_are_named(env: Dict[str, str], argv: List[str], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        cas_job_from_args(parse(argv), [], env)
