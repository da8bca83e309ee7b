"""`citadel run --volume ...`: the flags become the launch request's "volumes" (keys read from files)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List

import pytest

from citadel.cli.engine_flags import add_image_arguments, add_volume_arguments
from citadel.cli.image_job import job_from_args, volumes_from_args
from citadel.errors import UsageError

KEY = "5a" * 32


def parse(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_image_arguments(parser, required=False)
    add_volume_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.key").write_text(KEY + "\n")
    (tmp_path / "out.key").write_text(KEY.upper())
    return tmp_path


def test_volume_flags_become_request_entries(work: Path) -> None:
    args = parse(["--volume", "in=vol:in:/data/in:ro", "--volume", "out=./vol-out:/data/out/:ephemeral,ro",
                  "--volume", "new=new:/data/new", "--volume-key", "in=in.key", "--volume-key", "out=out.key",
                  "--volume-key", "new=new.key", "--volume-create", "new", "--tag-store", "tags.json"])
    inp, out, new = volumes_from_args(args)
    assert inp == {"name": "in", "host_dir": str(work / "vol:in"), "mount": "/data/in", "key": KEY,
                   "expected_tag": None, "policy": "rollback-protected", "tag_store": str(work / "tags.json"),
                   "create": False, "read_only": True}
    assert (out["host_dir"], out["mount"], out["policy"], out["tag_store"], out["read_only"]) == (
        str(work / "vol-out"), "/data/out", "ephemeral", None, True)
    assert new["create"] and len(new["key"]) == 64  # --volume-create wrote a new key file, mode 0600
    assert (work / "new.key").read_text().strip() == new["key"]
    assert oct(os.stat(work / "new.key").st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("argv, fragment", [
    (["--volume", "out"], "is not NAME=HOST_DIR:MOUNT"),
    (["--volume", "out=vol"], "has no absolute mount path"),
    (["--volume", "out=vol:data"], "has no absolute mount path"),
    (["--volume", "out=:/data"], "has no host directory"),
    (["--volume", "out=a:/x", "--volume", "out=b:/y"], "names 'out' twice"),
    (["--volume", "out=a:/x"], "volume 'out' has no key"),
    (["--volume", "out=a:/x", "--volume-key", "other=out.key"], "no --volume has that name"),
    (["--volume", "out=a:/x", "--volume-key", "out=missing.key"], "cannot read the key file of volume 'out'"),
    (["--volume", "out=a:/x", "--volume-key", "out=in.key", "--volume-key", "out=in.key"], "names 'out' twice"),
    (["--volume", "out=a:/x", "--volume-key", "out=in.key"], "no --tag-store was given"),
    (["--volume", "out=a:/x:ro", "--volume-key", "out=in.key", "--volume-create", "out"], "cannot be created"),
    (["--volume-create", "ghost"], "no --volume has that name"),
])
def test_each_mistake_is_named(work: Path, argv: List[str], fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        volumes_from_args(parse(argv))
    assert fragment in caught.value.cause
    assert KEY not in caught.value.cause + caught.value.remedy


def test_a_key_file_without_a_key_is_refused(work: Path) -> None:
    (work / "bad.key").write_text("not hex")
    with pytest.raises(UsageError, match="does not hold 64 hex digits"):
        volumes_from_args(parse(["--volume", "v=a:/x:ephemeral", "--volume-key", "v=bad.key"]))


def test_a_working_directory_inside_a_mount_must_exist_here(work: Path) -> None:
    args = parse(["--cwd", "/data/out/sub", "--volume", "out=a:/data/out:ephemeral", "--volume-key", "out=in.key"])
    with pytest.raises(UsageError, match="inside the volume mounted at /data/out"):
        job_from_args(args, volumes_from_args(args))


def test_the_launch_request_carries_the_volume_key(work: Path) -> None:
    import json

    args = parse(["--volume", "out=vol:/data/out:ephemeral", "--volume-key", "out=out.key"])
    doc = json.loads(job_from_args(args, volumes_from_args(args)).request())
    assert doc["volumes"][0]["key"] == KEY and doc["volumes"][0]["mount"] == "/data/out"
