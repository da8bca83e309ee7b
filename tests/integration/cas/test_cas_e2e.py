"""End to end: a real CAS over TLS on loopback, on SQLite and on PostgreSQL, driven by the CLI
(as people use it) and by the engine's client library (as the engine uses it)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, List

import pytest

from citadel.attest import client, sim
from citadel.cas import envelope, nonces
from citadel.cas.admin_client import AdminClient
from citadel.cas.auth import default_client_key_path, load_or_create_client_key

from . import engine
from .policies import IMPORTED, TAG, policy


def _admin(deployment: Any, home: Path) -> AdminClient:
    key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(home)}))
    return AdminClient(deployment.server.url, deployment.server.fingerprint, key)


def _create(deployment: Any, name: str, **kw: Any) -> str:
    with _admin(deployment, deployment.alice) as admin:
        return str(admin.create_session(policy(name, **kw))["hash"])


def test_session_lifecycle_with_the_cli(deployment: Any, tmp_path: Path) -> None:
    server = deployment.server
    path = tmp_path / "life.yaml"
    path.write_text(policy("life"))
    created = server.cli(["session", "create", str(path), "--json"])
    assert created.returncode == 0, created.stderr
    first = json.loads(created.stdout)["hash"]

    shown = server.cli(["session", "show", "life"])
    assert shown.returncode == 0 and first in shown.stdout and IMPORTED not in shown.stdout

    no_pred = server.cli(["session", "update", str(path)])
    assert no_pred.returncode == 1 and "predecessor" in no_pred.stderr

    path.write_text(policy("life") + "predecessor: " + "0" * 64 + "\n")
    wrong = server.cli(["session", "update", str(path)])
    assert wrong.returncode == 1 and "changed meanwhile" in wrong.stderr

    path.write_text(policy("life") + f"predecessor: {first}\n")
    by_bob = server.cli(["session", "update", str(path)], home=deployment.bob)
    assert by_bob.returncode == 1 and "may not update" in by_bob.stderr

    good = server.cli(["session", "update", str(path), "--json"])
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["generation"] == 2

    listed = server.cli(["session", "list"])
    assert "life" in listed.stdout
    assert "life" not in server.cli(["session", "list"], home=deployment.bob).stdout
    assert server.cli(["session", "delete", "life"]).returncode == 0
    assert server.cli(["session", "show", "life"]).returncode == 1


def test_malformed_policy_is_refused_with_a_pointer(deployment: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(policy("bad", tolerate="[sim, debg]"))
    result = deployment.server.cli(["session", "create", str(path)])
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "tolerate" in text)
    assert result.returncode == 1
    assert f"{path}:{line}:" in result.stderr and "debg" in result.stderr


def test_attestation_releases_the_configuration(deployment: Any) -> None:
    server = deployment.server
    _create(deployment, "rel")

    def provider(kind: str, report: bytes) -> bytes:
        return sim.make_evidence(deployment.platform_key, report, {"engine": "ab" * 32})

    config = client.attest_and_fetch(server.url, "rel/app", server.fingerprint, provider, kind="sim")
    assert config.argv[:2] == ["app.py", "--token"] and len(config.argv[2]) == 24
    assert config.environment == {"API_KEY": IMPORTED}
    assert config.files == {"/etc/app.conf": f"password={IMPORTED}".encode()}
    assert config.image_tag == TAG and config.image_key is not None and len(config.image_key) == 32
    again = client.attest_and_fetch(server.url, "rel/app", server.fingerprint, provider, kind="sim")
    assert again.image_key == config.image_key and again.argv == config.argv


def _stale_nonce(deployment: Any) -> bytes:
    keyring = envelope.Keyring(envelope.load_master_key(deployment.server.state_dir / "master.key", create=False))
    import time

    return nonces.issue(keyring, time.time() - 3600)


def _flip_last(evidence: bytes) -> bytes:
    return evidence[:-1] + bytes([evidence[-1] ^ 1])


REFUSALS = [
    ("wrong_measurement", "ref", dict(measurement="00" * 32), "measurement_not_accepted"),
    ("unregistered_platform", "ref", dict(platform="other"), "unknown_platform"),
    ("tampered_evidence", "ref", dict(tamper=_flip_last), "evidence_invalid"),
    ("evidence_bound_to_another_key", "ref", dict(bind_key=b"\x09" * 32), "binding_mismatch"),
    ("session_not_tolerating_sim", "strict", {}, "sim_not_tolerated"),
    ("debug_not_tolerated", "ref", dict(debug=True), "debug_not_tolerated"),
    ("stale_nonce", "ref", dict(nonce="stale"), "stale_nonce"),
    ("unknown_session", "nope", {}, "unknown_session"),
]


@pytest.fixture(scope="module")
def refusal_sessions(deployment: Any) -> None:
    _create(deployment, "ref")
    _create(deployment, "strict", tolerate="[]")


@pytest.mark.parametrize(("session", "knobs", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_their_reason_and_are_audited(
    deployment: Any, refusal_sessions: None, session: str, knobs: dict, code: str
) -> None:
    server = deployment.server
    knobs = dict(knobs)
    key = sim.Ed25519PrivateKey.generate() if knobs.pop("platform", None) else deployment.platform_key
    if knobs.get("nonce") == "stale":
        knobs["nonce"] = _stale_nonce(deployment)
    with pytest.raises(client.AttestationRefused) as info:
        engine.attest(server.url, server.fingerprint, f"{session}/app", key, **knobs)
    assert info.value.code == code and info.value.cause and info.value.remedy
    with _admin(deployment, deployment.alice) as admin:
        last = admin.audit_page(after=0, limit=1000)["entries"][-1]
    assert (last["event"], last["outcome"], last["reason"]) == ("attest", "refused", code)


def test_replayed_nonce_is_refused(deployment: Any, refusal_sessions: None) -> None:
    server = deployment.server
    with client.CasClient(server.url, server.fingerprint) as cas:
        nonce = cas.nonce()
    engine.attest(server.url, server.fingerprint, "ref/app", deployment.platform_key, nonce=nonce)
    with pytest.raises(client.AttestationRefused) as info:
        engine.attest(server.url, server.fingerprint, "ref/app", deployment.platform_key, nonce=nonce)
    assert info.value.code == "replayed_nonce"


def test_two_concurrent_updates_exactly_one_wins(deployment: Any) -> None:
    first = _create(deployment, "race")
    barrier = threading.Barrier(2)
    outcomes: List[str] = []

    def update(i: int) -> None:
        text = policy("race", extra=f"volumes: [{{name: v{i}}}]\n") + f"predecessor: {first}\n"
        with _admin(deployment, deployment.alice) as admin:
            barrier.wait()
            try:
                admin.update_session("race", text)
                outcomes.append("won")
            except client.CasRequestFailed as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=update, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale_predecessor", "won"]


def test_platforms_only_by_operators(deployment: Any) -> None:
    other = sim.public_bytes(sim.Ed25519PrivateKey.generate()).hex()
    result = deployment.server.cli(["platform", "add", "evil", "--public-key", other], home=deployment.bob)
    assert result.returncode == 1 and "not an operator" in result.stderr
    listed = deployment.server.cli(["platform", "list", "--json"], home=deployment.bob)
    assert [p["name"] for p in json.loads(listed.stdout)] == ["host-1"]


def test_audit_log_verifies(deployment: Any) -> None:
    server = deployment.server
    for index in range(3):  # audited changes of its own: the test must not depend on the others' order
        _create(deployment, f"audited-{index}")
    args = ["cas", "audit", "verify", "--state-dir", str(server.state_dir), "--json"]
    if server.db_url:
        args += ["--db-url", server.db_url]
    result = _run_local(server, args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["entries"] >= 3 and summary["head_authenticated"] is True


def _run_local(server: Any, args: List[str]) -> Any:
    import subprocess

    from .server import CITADEL

    return subprocess.run(CITADEL + args, capture_output=True, text=True, env=server.env(), timeout=60)


def test_health_readiness_and_metrics(deployment: Any) -> None:
    server = deployment.server
    with client.CasTransport(server.url, server.fingerprint) as transport:
        assert transport.request("GET", "/healthz")[0] == 200
        status, ready = transport.request("GET", "/readyz")
        assert status == 200 and ready["status"] == "ready"
        transport.request("POST", "/v1/attest/nonce")
        conn = transport._connection()
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    assert "citadel_cas_attestations_total" in text and "citadel_cas_http_requests_total" in text
