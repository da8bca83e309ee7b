"""TPM end to end, for real: a software TPM (swtpm over TCP), a real CAS over TLS (SQLite and
PostgreSQL), the CLI registering the TPM's attestation key, and the engine's own attestation code
(`attest_and_fetch` with `collect_evidence("tpm", ...)`) quoting PCR 23 = the engine measurement.

swtpm comes from Debian (scripts/test.sh installs it); the fixture fails, never skips, without it.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest

from citadel.attest import binding, client
from citadel.attest.collect import collect_evidence
from citadel.attest.collect.tpm import engine_pcr_value, read_ak_public_pem
from citadel.cas.admin_client import AdminClient
from citadel.cas.auth import default_client_key_path, load_or_create_client_key
from tests.integration.attest import conftest as attest_fixtures
from tests.integration.attest.conftest import Swtpm

from .server import CITADEL, CasServer

start_swtpm = attest_fixtures.start_swtpm  # the swtpm fixture of tests/integration/attest, reused here
ZERO_PCR = "00" * 32  # PCRs 0-7 of a TPM no firmware extended (swtpm)


def _admin(deployment: Any) -> AdminClient:
    key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(deployment.alice)}))
    return AdminClient(deployment.server.url, deployment.server.fingerprint, key)


@pytest.fixture(scope="module")
def measurement(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The hw-mode engine measurement, from `citadel measure --mode hw` (the manifest rebuilt in a
    private cache, so engine files being edited elsewhere do not matter)."""
    home = tmp_path_factory.mktemp("measure-home")
    env = CasServer(home / "unused", home).env(CITADEL_CACHE_DIR=str(home / "cache"))
    result = subprocess.run(
        CITADEL + ["measure", "--mode", "hw", "--rebuild", "--json"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["settings"]["CITADEL_MODE"] == "hw"
    return str(doc["measurement"])


def _policy(name: str, measurement: str, *, pcr0: str = ZERO_PCR, extra: str = "") -> str:
    return f"""\
name: {name}
version: "1"
services:
  - name: app
    command: app.py --token $$citadel:token$$
    image:
      key: $$citadel:image_key$$
    attestation:
      tee: [tpm]
      measurements: [{measurement}]
      tpm:
        pcrs:
          0: ["{pcr0}"]
{extra}secrets:
  - {{name: token, kind: ascii, size: 20}}
  - {{name: image_key, kind: binary, size: 32}}
"""


def _provider(tpm: Any, measurement: str) -> Callable[[str, bytes], bytes]:
    def provide(kind: str, report_data: bytes) -> bytes:
        assert kind == "tpm"
        return collect_evidence("tpm", report_data, measurement=measurement, tpm=tpm.address)

    return provide


def _refusal(deployment: Any, config_id: str, provider: Callable[[str, bytes], bytes]) -> client.AttestationRefused:
    server = deployment.server
    with pytest.raises(client.AttestationRefused) as info:
        client.attest_and_fetch(server.url, config_id, server.fingerprint, provider, kind="tpm")
    return info.value


@dataclass
class Registered:
    """A swtpm whose AK the operator registered, and the platform's name."""

    tpm: Swtpm
    name: str

    @property
    def address(self) -> str:
        return self.tpm.address


@pytest.fixture
def registered(deployment: Any, start_swtpm: Callable[..., Swtpm], tmp_path: Path) -> Registered:
    """A swtpm whose AK the operator registered with `citadel platform add --kind tpm --tpm ...`."""
    tpm = start_swtpm()
    name = f"tpm-{tmp_path.name[-24:]}".replace("_", "-")
    result = deployment.server.cli(["platform", "add", name, "--kind", "tpm", "--tpm", tpm.address, "--json"])
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["kind"] == "tpm" and row["platform"] == f"ak:{row['fingerprint']}"
    assert row["ak_pem"] == read_ak_public_pem(tpm.address).decode()
    return Registered(tpm, name)


def _create(deployment: Any, text: str) -> None:
    with _admin(deployment) as admin:
        admin.create_session(text)


def test_tpm_attestation_releases_the_configuration(deployment: Any, registered: Registered, measurement: str) -> None:
    _create(deployment, _policy("tpm-ok", measurement))
    server = deployment.server
    provider = _provider(registered, measurement)
    config = client.attest_and_fetch(server.url, "tpm-ok/app", server.fingerprint, provider, kind="tpm")
    assert config.argv[:2] == ["app.py", "--token"] and len(config.argv[2]) == 20
    assert config.image_key is not None and len(config.image_key) == 32
    again = client.attest_and_fetch(server.url, "tpm-ok/app", server.fingerprint, provider, kind="tpm")
    assert again.image_key == config.image_key

    with _admin(deployment) as admin:
        entries = admin.audit_page(limit=1000)["entries"]
    allowed = [e for e in entries if e["event"] == "attest" and e["subject"] == "tpm-ok/app"]
    assert allowed and all(e["outcome"] == "allowed" for e in allowed)
    facts = allowed[-1]["details"]
    assert facts["kind"] == "tpm" and facts["platform"] == registered.name
    assert facts["measurements"]["pcr23"] == engine_pcr_value(bytes.fromhex(measurement)).hex()
    assert facts["debug"] is True  # a TPM cannot rule out a debugger; tpm evidence needs no `debug`


def test_pcr23_of_another_engine_is_refused(deployment: Any, registered: Registered, measurement: str) -> None:
    _create(deployment, _policy("tpm-pcr", measurement))
    other = "0f" * 32
    refused = _refusal(deployment, "tpm-pcr/app", _provider(registered, other))
    assert refused.code == "measurement_not_accepted"
    assert "PCR 23 does not match the engine measurement" in refused.cause


def test_boot_pcr_not_pinned_is_refused(deployment: Any, registered: Registered, measurement: str) -> None:
    _create(deployment, _policy("tpm-boot", measurement, pcr0="11" * 32))
    refused = _refusal(deployment, "tpm-boot/app", _provider(registered, measurement))
    assert refused.code == "measurement_not_accepted" and "PCR 0 not accepted" in refused.cause


def test_unregistered_tpm_is_refused(
    deployment: Any,
    registered: Registered,
    start_swtpm: Callable[..., Swtpm],
    measurement: str,
) -> None:
    _create(deployment, _policy("tpm-unreg", measurement))
    stranger = start_swtpm()  # another TPM: another endorsement seed, another AK
    refused = _refusal(deployment, "tpm-unreg/app", _provider(stranger, measurement))
    assert refused.code == "unknown_platform" and "not registered" in refused.cause


def test_platforms_restrict_tpm_evidence(deployment: Any, registered: Registered, measurement: str) -> None:
    name = registered.name
    _create(deployment, _policy("tpm-mine", measurement, extra=f"      platforms: [{name}]\n"))
    _create(deployment, _policy("tpm-theirs", measurement, extra="      platforms: [somewhere-else]\n"))
    server = deployment.server
    provider = _provider(registered, measurement)
    client.attest_and_fetch(server.url, "tpm-mine/app", server.fingerprint, provider, kind="tpm")
    assert _refusal(deployment, "tpm-theirs/app", provider).code == "platform_not_accepted"


def _post(deployment: Any, config_id: str, nonce: bytes, evidence: bytes, public: bytes) -> Dict[str, Any]:
    with client.CasClient(deployment.server.url, deployment.server.fingerprint) as cas:
        status, answer = cas.transport.request(
            "POST",
            "/v1/attest",
            {
                "config_id": config_id,
                "kind": "tpm",
                "nonce": client.b64(nonce),
                "public_key": client.b64(public),
                "evidence": client.b64(evidence),
            },
        )
    return {"status": status, **(answer if isinstance(answer, dict) else {})}


def _fresh(deployment: Any, tpm: Any, measurement: str, bind_key: Optional[bytes] = None) -> tuple:
    with client.CasClient(deployment.server.url, deployment.server.fingerprint) as cas:
        nonce = cas.nonce()
    private, public = binding.generate_key_pair()
    evidence = collect_evidence(
        "tpm", binding.report_data(nonce, bind_key or public), measurement=measurement, tpm=tpm.address
    )
    return nonce, private, public, evidence


def test_replayed_nonce_is_refused(deployment: Any, registered: Registered, measurement: str) -> None:
    _create(deployment, _policy("tpm-replay", measurement))
    nonce, private, public, evidence = _fresh(deployment, registered, measurement)
    first = _post(deployment, "tpm-replay/app", nonce, evidence, public)
    assert first["status"] == 200, first
    plain = binding.open_sealed(
        private, client.unb64(first["release"], "release"), context=binding.release_context(nonce, "tpm-replay/app")
    )
    assert client.parse_release(plain, "tpm-replay/app").image_key is not None
    second = _post(deployment, "tpm-replay/app", nonce, evidence, public)
    assert second["status"] == 403 and second["error"]["code"] == "replayed_nonce"


def test_quote_bound_to_another_key_is_refused(deployment: Any, registered: Registered, measurement: str) -> None:
    _create(deployment, _policy("tpm-bind", measurement))
    nonce, _private, public, evidence = _fresh(deployment, registered, measurement, bind_key=b"\x07" * 32)
    answer = _post(deployment, "tpm-bind/app", nonce, evidence, public)
    assert answer["status"] == 403 and answer["error"]["code"] == "binding_mismatch"


def test_removed_tpm_platform_is_no_longer_accepted(deployment: Any, registered: Registered, measurement: str) -> None:
    _create(deployment, _policy("tpm-removed", measurement))
    server = deployment.server
    provider = _provider(registered, measurement)
    client.attest_and_fetch(server.url, "tpm-removed/app", server.fingerprint, provider, kind="tpm")
    listed = server.cli(["platform", "list"])
    name = registered.name
    assert listed.returncode == 0 and f"{name}\ttpm\tak:" in listed.stdout
    assert server.cli(["platform", "remove", name]).returncode == 0
    assert _refusal(deployment, "tpm-removed/app", provider).code == "unknown_platform"


def test_tpm_platform_from_a_pem_file_and_bad_input(
    deployment: Any,
    start_swtpm: Callable[..., Swtpm],
    tmp_path: Path,
) -> None:
    tpm = start_swtpm()
    pem = tmp_path / "ak.pem"
    pem.write_bytes(read_ak_public_pem(tpm.address))
    server = deployment.server
    added = server.cli(["platform", "add", "from-pem", "--kind", "tpm", "--ak-pem", str(pem)])
    assert added.returncode == 0, added.stderr
    assert "TPM attestation key ak:" in added.stdout and "not protected" in added.stdout
    again = server.cli(["platform", "add", "from-pem-again", "--kind", "tpm", "--ak-pem", str(pem)])
    assert again.returncode == 1 and "already registered" in again.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    bad = server.cli(["platform", "add", "garbage", "--kind", "tpm", "--ak-pem", str(garbage)])
    assert bad.returncode == 1 and "PEM public key" in bad.stderr
    wrong = server.cli(["platform", "add", "mixed", "--tpm", tpm.address])
    assert wrong.returncode == 2 and "--kind tpm" in wrong.stderr
    by_bob = server.cli(["platform", "add", "bobs", "--kind", "tpm", "--ak-pem", str(pem)], home=deployment.bob)
    assert by_bob.returncode == 1 and "not an operator" in by_bob.stderr


def test_ak_pinned_in_the_trust_file_is_accepted(
    start_swtpm: Callable[..., Swtpm],
    tmp_path: Path,
    measurement: str,
) -> None:
    """An operator may pin AKs in `--trust` instead of registering them; they are reported by id."""
    tpm = start_swtpm()
    pem = read_ak_public_pem(tpm.address).decode()
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"tpm": {"trusted_aks": [pem]}}))
    home = tmp_path / "home"
    home.mkdir()
    server = CasServer(tmp_path / "state", home, extra_args=["--trust", str(trust)]).start()
    try:
        key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(home)}))
        with AdminClient(server.url, server.fingerprint, key) as admin:
            admin.create_session(_policy("pinned", measurement))
            config = client.attest_and_fetch(
                server.url, "pinned/app", server.fingerprint, _provider(tpm, measurement), kind="tpm"
            )
            assert config.image_key is not None
            entry = [e for e in admin.audit_page(limit=100)["entries"] if e["event"] == "attest"][-1]
        assert entry["outcome"] == "allowed" and entry["details"]["platform"].startswith("ak:")
    finally:
        server.stop()
