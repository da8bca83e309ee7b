"""`citadel run` attested by a real CAS: the whole flow with real processes, on SQLite and PostgreSQL.

A real CAS (`citadel cas serve` on a loopback port, TLS, pinned), the real `citadel` console script
starting the real engine, a sealed app. The engine attests (sim evidence signed by a registered
platform key), receives its configuration and runs the policy's program: its arguments, its
environment (secrets substituted, host variables only where the policy names them) and an injected
file served from memory. Refusals (another measurement, another CAS, another image) end with the
CAS's reason in two lines and the documented exit status.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import pytest

from citadel.cas.admin_client import AdminClient
from citadel.cas.auth import default_client_key_path, load_or_create_client_key
from citadel.seal.image import SealedImage
from tests.conftest import citadel_cmd
from tests.integration.cas.conftest import Deployment, _deploy
from tests.integration.cas.pgcluster import PostgresCluster, PostgresMissing
from tests.integration.cas.server import CasServer
from tests.integration.engine_harness import KEY, sealed_app

INJECTED = "/etc/citadel-engine-cas-test/app.conf"

APP = """
import json, os, sys
out = {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
path = os.environ.get("INJECTED")
if path:
    with open(path) as fh:
        out["injected"] = fh.read()
    out["injected_mode"] = oct(os.stat(path).st_mode & 0o777)
    try:
        open(path, "a")
    except PermissionError as exc:
        out["write"] = exc.strerror
    try:
        os.remove(path)
    except PermissionError:
        out["remove"] = "refused"
    if os.environ.get("MODE") == "write-uncaught":
        open(path, "w")
print(json.dumps(out))
"""


# --- fixtures and helpers (test_engine_cas_volumes.py and test_engine_cas_tpm.py use them too) ------------
@pytest.fixture(scope="session")
def engine_pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster().start()
    except PostgresMissing as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("engine_pg_cluster").create_database(f"engine_cas_{os.getpid()}")
    yield from _deploy(tmp_path_factory, request.param, url)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's engine cache: the engine manifest is built once, from the files installed now."""
    return tmp_path_factory.mktemp("engine-cache")


def run_env(deployment: Deployment, cache: Path, **extra: str) -> Dict[str, str]:
    """The environment of a user on this machine: alice's HOME, sim mode, the registered platform key."""
    settings = {"CITADEL_CACHE_DIR": str(cache), "CITADEL_MODE": "sim", "LANG": "C.UTF-8",
                "CITADEL_PLATFORM_KEY": str(deployment.platform_key_path)}
    settings.update(extra)
    return deployment.server.env(**settings)


def measure(deployment: Deployment, cache: Path, *, fingerprint: Optional[str] = None, mode: str = "sim",
            server: Optional[CasServer] = None) -> str:
    """`citadel measure --json` with the pin `citadel run` will use."""
    cas = server or deployment.server
    done = subprocess.run(citadel_cmd() + ["measure", "--mode", mode, "--cas", cas.url, "--cas-fingerprint",
                                           fingerprint or cas.fingerprint, "--json"],
                          capture_output=True, text=True, env=run_env(deployment, cache), timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["settings"]["CITADEL_CAS_FINGERPRINT"] == (fingerprint or cas.fingerprint).split(":")[-1]
    return str(doc["measurement"])


def run(deployment: Deployment, cache: Path, image: Path, config_id: str, *args: str,
        env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None, volumes: Iterable[str] = (),
        fingerprint: Optional[str] = None, cas_url: Optional[str] = None) -> subprocess.CompletedProcess:
    """The real `citadel run --cas URL --cas-fingerprint FP --config-id ID --image IMAGE [--volume ...] [-- ARGS]`."""
    server = deployment.server
    command = citadel_cmd() + ["run", "--cas", cas_url or server.url, "--cas-fingerprint",
                               fingerprint or server.fingerprint, "--config-id", config_id, "--image", str(image)]
    for volume in volumes:
        command += ["--volume", volume]
    if args:
        command += ["--", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env or run_env(deployment, cache),
                          cwd=str(cwd) if cwd else None, timeout=120)


def create_session(deployment: Deployment, text: str) -> None:
    key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(deployment.alice)}))
    with AdminClient(deployment.server.url, deployment.server.fingerprint, key) as admin:
        admin.create_session(text)


def audit_entries(deployment: Deployment, subject: str) -> List[Dict[str, Any]]:
    key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(deployment.alice)}))
    with AdminClient(deployment.server.url, deployment.server.fingerprint, key) as admin:
        entries = admin.audit_page(limit=1000)["entries"]
    return [e for e in entries if e["event"] == "attest" and e["subject"] == subject]


def two_lines(result: subprocess.CompletedProcess) -> List[str]:
    """The engine's error: exactly a cause line and a hint line, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("citadel: ")]
    assert [line.split(":", 2)[1] for line in lines] == [" error", " hint"], result.stderr
    return lines


def policy(name: str, measurement: str, tag: str, api_key: str, *, host_arguments: bool = False,
           host_environment: Sequence[str] = ("PASSED", "MODE"),
           command: str = "app.py --from-policy $$citadel:token$$",
           extra_service: str = "", extra: str = "") -> str:
    return f"""\
name: {name}
version: "1"
services:
  - name: app
    command: {command}
    environment:
      POLICY_VAR: from the policy
      SECRET_ENV: key=$$citadel:api_key$$
      INJECTED: {INJECTED}
    host_environment: [{", ".join(host_environment)}]
    host_arguments: {"true" if host_arguments else "false"}
    image:
      key: $$citadel:image_key$$
      tag: {tag}
    attestation:
      tee: [sim]
      measurements: [{measurement}]
      tolerate: [sim]
    inject_files:
      - path: {INJECTED}
        content: "password=$$citadel:api_key$$"
{extra_service}secrets:
  - {{name: token, kind: ascii, size: 24}}
  - {{name: api_key, kind: ascii, value: {api_key}}}
  - {{name: image_key, kind: binary, value: "{KEY.hex()}"}}
{extra}"""


def files_holding(needle: bytes, roots: Iterable[Path], since: float) -> List[str]:
    """Every regular file under ``roots`` changed since ``since`` whose bytes contain ``needle``."""
    found = []
    for root in roots:
        for directory, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(directory, name)
                try:
                    info = os.lstat(path)
                    if not os.path.isfile(path) or info.st_mtime < since - 1 or info.st_size > 64 << 20:
                        continue
                    with open(path, "rb") as fh:
                        if needle in fh.read():
                            found.append(path)
                except OSError:
                    continue
    return found


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_app(tmp_path_factory.mktemp("app"), {"app.py": APP})


@pytest.fixture(scope="module")
def tag(image: Path) -> str:
    return SealedImage.open(str(image), KEY).tag


@pytest.fixture(scope="module")
def measurement(deployment: Deployment, cache: Path) -> str:
    return measure(deployment, cache)


def _session(deployment: Deployment, measurement: str, tag: str, **knobs: Any) -> tuple:
    name = f"s{secrets.token_hex(6)}"
    api_key = f"imported-{secrets.token_hex(12)}"
    create_session(deployment, policy(name, measurement, tag, api_key, **knobs))
    return f"{name}/app", api_key


# --- the flow ---------------------------------------------------------------------------------------
def test_an_attested_run_gets_its_program_environment_and_files_from_the_cas(
        deployment: Deployment, cache: Path, image: Path, tag: str, measurement: str, tmp_path: Path) -> None:
    config_id, api_key = _session(deployment, measurement, tag)
    started = time.time()
    env = run_env(deployment, cache, PASSED="from the host", HOST_ONLY="never passed", CITADEL_VERSION="1")
    done = run(deployment, cache, image, config_id, "host-arg", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    token = out["argv"][1]
    assert out["argv"] == ["--from-policy", token] and len(token) == 24, "host arguments are ignored by default"
    assert out["env"] == {"POLICY_VAR": "from the policy", "SECRET_ENV": f"key={api_key}", "INJECTED": INJECTED,
                          "PASSED": "from the host"}, "exactly the policy's variables and the ones it passes"
    assert out["injected"] == f"password={api_key}"
    assert (out["injected_mode"], out["remove"]) == ("0o444", "refused")
    assert "read-only" in out["write"]
    assert out["cwd"] == str(tmp_path)
    assert f"citadel: attested to {deployment.server.url} as {config_id} (sim evidence)" in done.stderr
    assert f"citadel: measurement: {measurement}" in done.stderr
    assert not os.path.exists(INJECTED)
    roots = [tmp_path, deployment.alice, cache, Path(tempfile.gettempdir())]
    for secret in (api_key.encode(), token.encode()):
        assert files_holding(secret, roots, started) == [], "a released secret reached the host's disk"
    allowed = audit_entries(deployment, config_id)
    assert [e["outcome"] for e in allowed] == ["allowed"]
    assert allowed[0]["details"]["measurements"]["engine"] == measurement


def test_host_arguments_and_variables_pass_only_where_the_policy_says(
        deployment: Deployment, cache: Path, image: Path, tag: str, measurement: str) -> None:
    config_id, _ = _session(deployment, measurement, tag, host_arguments=True, host_environment=["LANG"])
    env = run_env(deployment, cache, PASSED="not this time")
    done = run(deployment, cache, image, config_id, "one", "--two", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["argv"][2:] == ["one", "--two"]
    assert set(out["env"]) == {"POLICY_VAR", "SECRET_ENV", "INJECTED", "LANG"}


def test_writing_an_injected_file_uncaught_ends_the_run(
        deployment: Deployment, cache: Path, image: Path, tag: str, measurement: str) -> None:
    config_id, api_key = _session(deployment, measurement, tag)
    done = run(deployment, cache, image, config_id, env=run_env(deployment, cache, MODE="write-uncaught"))
    assert done.returncode == 73, done.stderr
    error, hint = two_lines(done)
    assert error.startswith("citadel: error: files the session's policy injects are read-only")
    assert INJECTED in error and "at app.py line 18" in error
    assert "updating the session's policy" in hint
    assert api_key not in done.stderr


def test_another_measurement_is_refused_with_the_cas_reason_and_audited(
        deployment: Deployment, cache: Path, image: Path, tag: str) -> None:
    config_id, api_key = _session(deployment, "0f" * 32, tag)
    done = run(deployment, cache, image, config_id)
    assert done.returncode == 77, done.stderr
    error, hint = two_lines(done)
    assert error.startswith(f"citadel: error: the CAS at {deployment.server.url} refused to release {config_id} "
                            "(measurement_not_accepted): ")
    assert hint.startswith("citadel: hint: ")
    assert done.stdout == "" and api_key not in done.stderr
    refused = audit_entries(deployment, config_id)
    assert [(e["outcome"], e["reason"]) for e in refused] == [("refused", "measurement_not_accepted")]


def test_an_image_other_than_the_policys_is_refused(
        deployment: Deployment, cache: Path, image: Path, measurement: str) -> None:
    config_id, _ = _session(deployment, measurement, "cd" * 32)
    done = run(deployment, cache, image, config_id)
    assert done.returncode == 65, done.stderr
    error, _hint = two_lines(done)
    assert "is not the expected cdcdcdcdcdcdcdcd" in error and done.stdout == ""


def test_without_a_platform_key_the_engine_says_how_to_register(
        deployment: Deployment, cache: Path, image: Path, tag: str, measurement: str, tmp_path: Path) -> None:
    config_id, _ = _session(deployment, measurement, tag)
    env = run_env(deployment, cache, CITADEL_PLATFORM_KEY=str(tmp_path / "nowhere.key"))
    done = run(deployment, cache, image, config_id, env=env)
    assert done.returncode == 78, done.stderr
    error, hint = two_lines(done)
    assert str(tmp_path / "nowhere.key") in error and "citadel platform add" in hint


def test_an_unreachable_cas_is_status_75(deployment: Deployment, cache: Path, image: Path) -> None:
    done = run(deployment, cache, image, "any/app", cas_url="https://127.0.0.1:9")
    assert done.returncode == 75, done.stderr
    error, _hint = two_lines(done)
    assert "cannot reach the CAS at https://127.0.0.1:9" in error
