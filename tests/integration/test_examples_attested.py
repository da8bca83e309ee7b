"""The reference's examples, each run attested: a real CAS (SQLite, loopback, TLS, pinned) releases the
image key, and for the cairo drawing the output volume's key, only to the measured engine.

Each example is sealed as its README seals it (with `site` made from the test environment's packages,
as the local-key tests do), the owner pins the engine's measurement and the image's tag in a session,
and the real `citadel run --cas URL --config-id SESSION/SERVICE --image IMAGE` runs the example's script.
The cairo picture goes into a CAS-managed volume, which the owner exports with
`citadel volume export --cas ... --config-id ... --volume ...`.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator, Tuple

import pytest

from citadel.seal.image import SealedImage
from tests.conftest import REPO, citadel_cmd
from tests.integration.cas.conftest import Deployment, _deploy
from tests.integration.engine_harness import KEY
from tests.integration.test_engine_cas import (  # noqa: F401 - fixtures
    cache,
    create_session,
    files_holding,
    measurement,
    run,
    run_env,
)
from tests.integration.test_example_cairo import PNG_SIGNATURE, SIZE, close, decode_rgba8, expected_gradient, pixel
from tests.integration.test_example_cairo import make_site as make_cairo_site
from tests.integration.test_example_numpy_session import REFERENCE
from tests.integration.test_example_numpy_session import make_site as make_numpy_site


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from _deploy(tmp_path_factory, "sqlite", None)


def seal_example(work: Path, example: str, make_site: Callable[[Path], object], deployment: Deployment,
                 cache: Path) -> Tuple[Path, str]:  # noqa: F811
    """Copy examples/EXAMPLE, make its `site`, and seal `app` with `site` as a python path under KEY."""
    shutil.copytree(REPO / "examples" / example, work)
    make_site(work)
    key_file = work / "image.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    image = work / "example.img"
    sealed = subprocess.run(citadel_cmd() + ["seal", str(work / "app"), "-o", str(image), "--python-path",
                                             str(work / "site"), "--key-file", str(key_file)],
                            capture_output=True, text=True, env=run_env(deployment, cache), timeout=300)
    assert sealed.returncode == 0, sealed.stderr
    return image, SealedImage.open(str(image), KEY).tag


def session_policy(name: str, command: str, engine: str, tag: str, volumes: bool = False) -> str:
    mounts = "    volumes:\n      - {name: results, path: /data/out}\n" if volumes else ""
    declared = "volumes:\n  - name: results\n" if volumes else ""
    return f"""\
name: {name}
version: "1"
services:
  - name: app
    command: {command}
    image:
      key: $$citadel:image_key$$
      tag: {tag}
    attestation:
      tee: [sim]
      measurements: [{engine}]
      tolerate: [sim]
{mounts}{declared}secrets:
  - {{name: image_key, kind: binary, value: "{KEY.hex()}"}}
"""


@pytest.mark.slow  # with the CAS and the engine measurement it sets up, ~5 s
def test_numpy_session_runs_attested_and_shows_the_reference_values(
        deployment: Deployment, cache: Path, measurement: str, tmp_path: Path) -> None:  # noqa: F811
    image, tag = seal_example(tmp_path / "numpy-session", "numpy-session", make_numpy_site, deployment, cache)
    name = f"numpy{secrets.token_hex(4)}"
    create_session(deployment, session_policy(name, "session.py", measurement, tag))
    done = run(deployment, cache, image, f"{name}/app", env=run_env(deployment, cache, CITADEL_VERSION="1"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == REFERENCE
    assert lines[3:7] == ["(3, 5)", "2", "'int64'", "8"]  # shape, ndim, dtype, itemsize
    assert f"citadel: attested to {deployment.server.url} as {name}/app (sim evidence)" in done.stderr
    assert "Traceback" not in done.stderr


def test_cairo_drawing_runs_attested_into_a_cas_volume_the_owner_exports(
        deployment: Deployment, cache: Path, measurement: str, tmp_path: Path) -> None:  # noqa: F811
    image, tag = seal_example(tmp_path / "cairo-drawing", "cairo-drawing", make_cairo_site, deployment, cache)
    name = f"cairo{secrets.token_hex(4)}"
    create_session(deployment, session_policy(name, "draw.py", measurement, tag, volumes=True))
    store = tmp_path / "vol-out"
    done = run(deployment, cache, image, f"{name}/app", volumes=[f"results={store}"],
               env=run_env(deployment, cache, CITADEL_VERSION="1"))
    assert done.returncode == 0, done.stderr
    assert "wrote /data/out/example.png (256x256)" in done.stdout.splitlines()
    assert f"citadel: attested to {deployment.server.url} as {name}/app (sim evidence)" in done.stderr
    assert (store / "manifest").is_file(), "the CAS-managed volume was created at this first run"
    assert files_holding(PNG_SIGNATURE, [store], 0) == [], "the host stores only ciphertext"

    results = tmp_path / "results"
    exported = deployment.server.cli(["volume", "export", str(store), str(results), "--config-id", f"{name}/app",
                                      "--volume", "results"])
    assert exported.returncode == 0, exported.stderr
    png = (results / "example.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    header, rows = decode_rgba8(png)  # checks every chunk's CRC and IHDR's depth and colour type
    assert (header.width, header.height) == (SIZE, SIZE) == (256, 256)
    assert close(pixel(rows, 0, 0), expected_gradient(0))
    assert close(pixel(rows, 0, SIZE - 1), expected_gradient(SIZE - 1))
