"""`citadel run` in hw mode with a TPM, attested by a real CAS: a real software TPM (swtpm over TCP)
whose attestation key the operator registered, the engine measurement extended into PCR 23 and
quoted over the CAS's nonce and the engine's key, the configuration released to that engine only.

`CITADEL_TEE_ROOT` points TEE detection at a directory holding a stand-in `dev/tpmrm0`, so the engine
decides on hw mode with a TPM; the evidence itself comes from swtpm (CITADEL_TPM=tcp:127.0.0.1:PORT)
and is verified by the CAS, so the stand-in cannot make evidence pass. swtpm comes from Debian
(scripts/test.sh installs it); the fixture fails, never skips, without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import pytest

from citadel.seal.image import SealedImage
from tests.integration.attest.conftest import Swtpm, start_swtpm  # noqa: F401 - the swtpm fixture
from tests.integration.cas.conftest import Deployment, _deploy
from tests.integration.engine_harness import KEY, sealed_app
from tests.integration.test_engine_cas import (  # noqa: F401 - fixtures
    INJECTED,
    audit_entries,
    cache,
    create_session,
    measure,
    run,
    run_env,
    two_lines,
)

ZERO_PCR = "00" * 32  # PCRs 0-7 of a TPM no firmware extended (swtpm)

APP = """
import json, os, sys
with open(os.environ["INJECTED"]) as fh:
    print(json.dumps({"argv": sys.argv[1:], "env": sorted(os.environ), "injected": fh.read()}))
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from _deploy(tmp_path_factory, "sqlite", None)


@pytest.fixture
def tpm(deployment: Deployment, start_swtpm: Callable[..., Swtpm], tmp_path: Path) -> Swtpm:  # noqa: F811
    tpm = start_swtpm()
    name = f"tpm-{tmp_path.name[-20:]}".replace("_", "-")
    added = deployment.server.cli(["platform", "add", name, "--kind", "tpm", "--tpm", tpm.address])
    assert added.returncode == 0, added.stderr
    return tpm


def _policy(name: str, measurement: str, tag: str) -> str:
    return f"""\
name: {name}
version: "1"
services:
  - name: app
    command: app.py --quoted
    environment:
      INJECTED: {INJECTED}
    image:
      key: $$citadel:image_key$$
      tag: {tag}
    attestation:
      tee: [tpm]
      measurements: [{measurement}]
      tpm:
        pcrs:
          0: ["{ZERO_PCR}"]
    inject_files:
      - path: {INJECTED}
        content: "released to a TPM-attested engine"
secrets:
  - {{name: image_key, kind: binary, value: "{KEY.hex()}"}}
"""


def test_hw_mode_with_a_tpm_attests_and_runs(deployment: Deployment, cache: Path, tpm: Swtpm,  # noqa: F811
                                             tmp_path: Path) -> None:
    image = sealed_app(tmp_path, {"app.py": APP})
    measurement = measure(deployment, cache, mode="hw")
    assert measurement != measure(deployment, cache, mode="sim")
    create_session(deployment, _policy("tpm-run", measurement, SealedImage.open(str(image), KEY).tag))
    tee_root = tmp_path / "tee"
    (tee_root / "dev").mkdir(parents=True)
    (tee_root / "dev" / "tpmrm0").touch()
    env = run_env(deployment, cache, CITADEL_MODE="hw", CITADEL_TEE_ROOT=str(tee_root), CITADEL_TPM=tpm.address,
                  CITADEL_VERSION="1")
    done = run(deployment, cache, image, "tpm-run/app", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"argv": ["--quoted"], "env": ["INJECTED"],
                                       "injected": "released to a TPM-attested engine"}
    assert "citadel: CITADEL_MODE=hw (tpm)" in done.stderr
    assert "(tpm evidence)" in done.stderr and "simulation mode" not in done.stderr
    allowed = audit_entries(deployment, "tpm-run/app")
    assert [(e["outcome"], e["details"]["kind"]) for e in allowed] == [("allowed", "tpm")]

    # the same policy refuses the same engine in sim mode (its kind and its measurement differ)
    sim = run(deployment, cache, image, "tpm-run/app", env=run_env(deployment, cache))
    assert sim.returncode == 77, sim.stderr
    assert "(tee_not_accepted)" in two_lines(sim)[0]
