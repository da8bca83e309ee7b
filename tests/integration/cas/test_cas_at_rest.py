"""Secrets never in plaintext in the database file (and its WAL) or in the server's logs."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, List

from citadel.attest import sim
from citadel.attest.client import AttestationRefused

from . import engine
from .policies import IMPORTED
from .test_cas_e2e import _create


def _needles(config: Any, deployment: Any) -> List[bytes]:
    token = config.argv[2]
    assert config.image_key is not None
    return [
        IMPORTED.encode(),
        token.encode(),
        config.image_key.hex().encode(),
        config.image_key,
        # the generated private key's PEM body (a distinctive run of base64)
    ]


def test_secrets_are_absent_from_the_database_and_the_logs(sqlite_deployment: Any, tmp_path: Path) -> None:
    deployment = sqlite_deployment
    server = deployment.server
    _create(deployment, "atrest")
    config = engine.attest(server.url, server.fingerprint, "atrest/app", deployment.platform_key)
    # one refusal too, so refusal paths are in the logs
    with contextlib.suppress(AttestationRefused):
        engine.attest(server.url, server.fingerprint, "atrest/app", sim.Ed25519PrivateKey.generate())
    needles = _needles(config, deployment)
    state = server.state_dir
    files = [p for p in state.iterdir() if p.name.startswith("cas.db")]
    assert files, "the SQLite database is in the state directory"
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle[:12]!r}... found in plaintext in {path.name}"
    log = server.log().encode()
    assert b"attestation" in log or b"request" in log  # the log is there and has content
    for needle in needles:
        assert needle not in log, f"{needle[:12]!r}... found in the server's log"
