"""Volumes from the CAS, end to end: the host names only where a volume is stored; its key, mount path
and latest tag come from the release, and every commit is the CAS's compare-and-swap, so a host
that hands the engine an older copy is refused. A real CAS (SQLite), the real `citadel run`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from citadel.seal.image import SealedImage
from tests.conftest import citadel_cmd
from tests.integration.cas.conftest import Deployment, _deploy
from tests.integration.engine_harness import KEY, sealed_app
from tests.integration.test_engine_cas import (  # noqa: F401 - fixtures
    cache,
    create_session,
    files_holding,
    measure,
    measurement,
    run,
    run_env,
    two_lines,
)

MARKER = "visits-recorded-inside-the-volume"

APP = f"""
import json, os
path = "/data/out/visits.txt"
count = 0
if os.path.exists(path):
    with open(path) as fh:
        count = int(fh.read().split()[0])
with open(path, "w") as fh:
    fh.write(f"{{count + 1}} {MARKER}\\n")
print(json.dumps({{"count": count + 1, "listing": sorted(os.listdir("/data/out"))}}))
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from _deploy(tmp_path_factory, "sqlite", None)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_app(tmp_path_factory.mktemp("volume-app"), {"app.py": APP})


def _policy(name: str, engine: str, tag: str) -> str:
    return f"""\
name: {name}
version: "1"
services:
  - name: app
    command: app.py
    image:
      key: $$citadel:image_key$$
      tag: {tag}
    attestation:
      tee: [sim]
      measurements: [{engine}]
      tolerate: [sim]
    volumes:
      - {{name: results, path: /data/out}}
volumes:
  - name: results
secrets:
  - {{name: image_key, kind: binary, value: "{KEY.hex()}"}}
"""


def test_a_volume_from_the_cas_keeps_its_state_and_refuses_rollback(
        deployment: Deployment, cache: Path, image: Path, measurement: str, tmp_path: Path) -> None:  # noqa: F811
    create_session(deployment, _policy("vols", measurement, SealedImage.open(str(image), KEY).tag))
    store = tmp_path / "vol-results"

    def visit() -> subprocess.CompletedProcess:
        return run(deployment, cache, image, "vols/app", volumes=[f"results={store}"])

    first = visit()
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"count": 1, "listing": ["visits.txt"]}
    assert (store / "manifest").is_file(), "the volume was created at its first run"
    assert files_holding(MARKER.encode(), [store], 0) == [], "the host stores only ciphertext"
    second = visit()
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["count"] == 2

    older = tmp_path / "older-copy"
    shutil.copytree(store, older)
    third = visit()
    assert third.returncode == 0 and json.loads(third.stdout)["count"] == 3
    shutil.rmtree(store)
    shutil.copytree(older, store)  # the host hands the engine the state of two runs ago
    rolled_back = visit()
    assert rolled_back.returncode == 74, rolled_back.stderr
    error, _hint = two_lines(rolled_back)
    assert "is not at its latest state" in error
    assert rolled_back.stdout == ""


def test_the_host_must_say_where_each_volume_of_the_session_is(
        deployment: Deployment, cache: Path, image: Path, measurement: str, tmp_path: Path) -> None:  # noqa: F811
    create_session(deployment, _policy("vols-where", measurement, SealedImage.open(str(image), KEY).tag))
    missing = run(deployment, cache, image, "vols-where/app")
    assert missing.returncode == 64, missing.stderr
    error, hint = two_lines(missing)
    assert "mounts volume 'results' at /data/out, but no host directory was given" in error
    assert "--volume results=HOST_DIR" in hint
    unknown = run(deployment, cache, image, "vols-where/app",
                  volumes=[f"results={tmp_path / 'r'}", f"other={tmp_path / 'o'}"])
    assert unknown.returncode == 64 and "mounts no volume 'other'" in two_lines(unknown)[0]
    mount_given = subprocess.run(
        citadel_cmd() + ["run", "--cas", deployment.server.url, "--cas-fingerprint", deployment.server.fingerprint,
                         "--config-id", "vols-where/app", "--image", str(image),
                         "--volume", f"results={tmp_path / 'r'}:/data/out"],
        capture_output=True, text=True, env=run_env(deployment, cache), timeout=60)
    assert mount_given.returncode == 2
    assert "the session's policy names the mount path" in mount_given.stderr
