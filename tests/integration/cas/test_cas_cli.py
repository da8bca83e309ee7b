"""The CLI around the CAS: local validation, schema, fingerprint, pinning, audit tampering."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from .policies import policy
from .server import CITADEL
from .test_cas_e2e import _create


def _citadel(server: Any, args: list, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(CITADEL + args, capture_output=True, text=True, env=server.env(), timeout=60, **kw)


def test_validate_points_at_every_problem(sqlite_deployment: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy("v", tolerate="[simm]", measurement="zz"))
    result = _citadel(sqlite_deployment.server, ["session", "validate", str(path)])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("citadel: error:")]
    assert len(errors) == 2 and all(f"{path}:" in e for e in errors)
    path.write_text(policy("v"))
    ok = _citadel(sqlite_deployment.server, ["session", "validate", str(path)])
    assert ok.returncode == 0 and "valid policy" in ok.stdout


def test_schema_is_json_schema(sqlite_deployment: Any) -> None:
    result = _citadel(sqlite_deployment.server, ["session", "schema"])
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/") and "services" in schema["properties"]


def test_fingerprint_matches_the_served_key(sqlite_deployment: Any) -> None:
    server = sqlite_deployment.server
    result = _citadel(server, ["cas", "fingerprint", "--state-dir", str(server.state_dir)])
    assert result.stdout.strip() == server.fingerprint


def test_a_wrong_pin_is_refused_before_anything_is_sent(sqlite_deployment: Any) -> None:
    server = sqlite_deployment.server
    result = subprocess.run(
        CITADEL + ["session", "list", "--cas", server.url, "--cas-fingerprint", "00" * 32],
        capture_output=True,
        text=True,
        env=server.env(),
        timeout=60,
    )
    assert result.returncode == 77 and "not the pinned" in result.stderr


def test_an_unpinned_cas_is_refused_with_a_remedy(sqlite_deployment: Any, tmp_path: Path) -> None:
    server = sqlite_deployment.server
    env = server.env(HOME=str(tmp_path))
    result = subprocess.run(
        CITADEL + ["session", "list", "--cas", server.url], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode != 0 and "--cas-fingerprint" in result.stderr


def test_the_pin_is_remembered_after_first_use(sqlite_deployment: Any, tmp_path: Path) -> None:
    server = sqlite_deployment.server
    home = tmp_path / "carol"
    home.mkdir()
    first = server.cli(["session", "list"], home=home)
    assert first.returncode == 0, first.stderr
    again = server.cli(["session", "list"], home=home, pin=False)
    assert again.returncode == 0, again.stderr


def test_audit_verify_detects_a_changed_entry(sqlite_deployment: Any, tmp_path: Path) -> None:
    server = sqlite_deployment.server
    _create(sqlite_deployment, "tamper")
    copy = tmp_path / "copy"
    copy.mkdir()
    source = sqlite3.connect(server.state_dir / "cas.db")
    target = sqlite3.connect(copy / "cas.db")
    source.backup(target)
    source.close()
    target.execute("UPDATE audit_log SET outcome = 'refused' WHERE seq = 2")
    target.commit()
    target.close()
    args = [
        "cas",
        "audit",
        "verify",
        "--state-dir",
        str(copy),
        "--master-key-file",
        str(server.state_dir / "master.key"),
    ]
    result = _citadel(server, args)
    assert result.returncode == 3 and "entry 2" in result.stderr
