"""The engine's CAS flow, piece by piece (engine/cas.py): the target and its pin, sim evidence, the
program and environment the release names, and the volumes' binder."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from citadel.attest import binding, sim
from citadel.attest.client import ReleasedConfig, parse_release
from citadel.engine import cas
from citadel.engine.request import VolumeSpec, parse_request
from citadel.engine.settings import parse_settings
from citadel.engine.tee import ModeDecision
from citadel.errors import UsageError

PIN = "6d" * 32
OTHER_PIN = "0f" * 32
MEASUREMENT = "ab" * 32
TOKEN = base64.b64encode(b"capability").decode()


def request(**cas_fields: Any) -> Any:
    fields = {"addr": "https://127.0.0.1:8443", "config_id": "hello/app", "fingerprint": PIN}
    fields.update(cas_fields)
    doc = {"version": 1, "image": "/img", "key": None, "argv": [], "cwd": "/work",
           "cas": {k: v for k, v in fields.items() if v is not None},
           "host_env": {"LANG": "C.UTF-8", "PASSED": "yes", "IGNORED": "no"}, "host_args": ["--host"]}
    return parse_request(json.dumps(doc).encode())


def release(**fields: Any) -> ReleasedConfig:
    doc: Dict[str, Any] = {
        "version": 1, "config_id": "hello/app", "session": "hello", "service": "app", "session_hash": "5e" * 32,
        "image": {"key": "11" * 32, "tag": "22" * 32}, "argv": ["app.py", "--policy"], "module": None,
        "environment": {"POLICY": "1", "PASSED": "the policy's value wins"}, "pwd": None,
        "files": [{"path": "/etc/app.conf", "content": base64.b64encode(b"secret=1").decode()}],
        "host_environment": ["PASSED", "LANG", "ABSENT"], "host_arguments": False, "volumes": [],
    }
    doc.update(fields)
    return parse_release(json.dumps(doc).encode(), "hello/app")


def test_the_target_comes_from_the_request_and_the_measured_pin() -> None:
    settings = parse_settings({"CITADEL_CAS_FINGERPRINT": PIN})
    target = cas.cas_target(request(), settings)
    assert (target.addr, target.config_id, target.fingerprint) == ("https://127.0.0.1:8443", "hello/app", PIN)
    from_settings = parse_settings({"CITADEL_CAS_FINGERPRINT": PIN, "CITADEL_CAS_ADDR": "cas:9443",
                                    "CITADEL_CONFIG_ID": "hello/app"})
    target = cas.cas_target(request(addr=None, config_id=None, fingerprint=None), from_settings)
    assert (target.addr, target.config_id) == ("https://cas:9443", "hello/app")


def test_the_pin_must_be_a_measured_setting() -> None:
    with pytest.raises(UsageError, match="CITADEL_CAS_FINGERPRINT .* is not set"):
        cas.cas_target(request(), parse_settings({}))  # a pin in the request alone is not measured


@pytest.mark.parametrize("setting, value, fragment", [
    ("CITADEL_CAS_FINGERPRINT", OTHER_PIN, "cas.fingerprint"),
    ("CITADEL_CAS_ADDR", "https://elsewhere:8443", "cas.addr"),
    ("CITADEL_CONFIG_ID", "other/app", "cas.config_id"),
])
def test_request_and_settings_must_agree(setting: str, value: str, fragment: str) -> None:
    settings = parse_settings({"CITADEL_CAS_FINGERPRINT": PIN, setting: value})
    with pytest.raises(UsageError, match=f"the launch request's {fragment} .* differs from {setting}"):
        cas.cas_target(request(), settings)


def test_missing_parts_are_named() -> None:
    settings = parse_settings({"CITADEL_CAS_FINGERPRINT": PIN})
    with pytest.raises(UsageError, match="no CAS address"):
        cas.cas_target(request(addr=None), settings)
    with pytest.raises(UsageError, match="no configuration is named"):
        cas.cas_target(request(config_id=None), settings)


def test_sim_evidence_is_signed_by_the_platform_key_and_reports_the_measurement(tmp_path: Path) -> None:
    key_path = tmp_path / "platform.key"
    key = sim.create_platform_key(key_path)
    settings = parse_settings({"CITADEL_PLATFORM_KEY": str(key_path)})
    kind, provider, collateral = cas.evidence_source(ModeDecision("sim", None, None, ()), settings, MEASUREMENT)
    assert (kind, collateral) == ("sim", None)
    report = binding.report_data(b"n" * 48, b"k" * 32)
    verified = sim.SimVerifier([sim.public_bytes(key)]).verify(provider("sim", report), at=dt.datetime.now())
    assert verified.report_data == report and verified.measurements == {"engine": MEASUREMENT}


def test_a_missing_platform_key_says_how_to_register(tmp_path: Path) -> None:
    settings = parse_settings({"CITADEL_PLATFORM_KEY": str(tmp_path / "absent.key")})
    with pytest.raises(sim.PlatformKeyError) as caught:
        cas.evidence_source(ModeDecision("sim", None, None, ()), settings, MEASUREMENT)
    assert str(tmp_path / "absent.key") in caught.value.cause
    assert "citadel platform add" in caught.value.remedy


def test_hw_mode_collects_the_tees_evidence_lazily() -> None:
    settings = parse_settings({"CITADEL_TPM": "tcp:127.0.0.1:9"})
    kind, provider, collateral = cas.evidence_source(ModeDecision("hw", "tpm", None, ()), settings, MEASUREMENT)
    assert (kind, collateral) == ("tpm", None) and callable(provider)
    kind, _provider, collateral = cas.evidence_source(ModeDecision("hw", "snp", None, ()), settings, MEASUREMENT)
    assert (kind, collateral) == ("snp", {})  # filled with the certificate table when collected


def test_the_program_is_the_policys_and_host_arguments_pass_only_when_allowed() -> None:
    req = request()
    program = cas.program_request(req, release())
    assert (program.kind, program.argv, program.cwd, program.expected_tag) == (
        "script", ["app.py", "--policy"], "/work", "22" * 32)
    assert cas.program_request(req, release(host_arguments=True)).argv == ["app.py", "--policy", "--host"]
    module = cas.program_request(req, release(argv=["pkg.tool", "-v"], module="pkg.tool", pwd="/app"))
    assert (module.kind, module.module, module.argv, module.cwd) == ("module", "pkg.tool", ["pkg.tool", "-v"], "/app")


def test_the_environment_is_the_policys_plus_what_it_passes_through() -> None:
    assert cas.program_environment(request(), release()) == {
        "POLICY": "1", "PASSED": "the policy's value wins", "LANG": "C.UTF-8"}


def _volume(name: str, **fields: Any) -> Dict[str, Any]:
    entry = {"name": name, "mount": f"/data/{name}", "policy": "rollback-protected", "key": "33" * 32,
             "expected_tag": None, "generation": 0, "token": TOKEN}
    entry.update(fields)
    return entry


def _spec(name: str) -> VolumeSpec:
    return VolumeSpec(name=name, host_dir=f"/srv/{name}", mount="", key=None)


class _Store:
    def __init__(self) -> None:
        self.swaps: List[tuple] = []

    def on_commit(self, name: str) -> Any:
        return lambda old, new: self.swaps.append((name, old, new))


def test_the_binder_gives_what_the_cas_released() -> None:
    config = release(volumes=[_volume("results", expected_tag="44" * 32),
                              _volume("scratch", policy="ephemeral", token=None)])
    store = _Store()
    bind = cas.cas_binder(config, store, [_spec("results"), _spec("scratch")])  # type: ignore[arg-type]
    results = bind(_spec("results"))
    assert (results.key, results.expected_tag, results.mount, results.create) == (
        bytes.fromhex("33" * 32), "44" * 32, "/data/results", True)
    assert results.on_commit is not None
    results.on_commit("44" * 32, "55" * 32)
    assert store.swaps == [("results", "44" * 32, "55" * 32)]
    scratch = bind(_spec("scratch"))
    assert (scratch.expected_tag, scratch.on_commit, scratch.mount) == (None, None, "/data/scratch")


def test_every_volume_of_the_session_needs_a_host_directory_and_no_other_is_mounted() -> None:
    config = release(volumes=[_volume("results")])
    with pytest.raises(UsageError, match="mounts volume 'results' at /data/results, but no host directory"):
        cas.cas_binder(config, _Store(), [])  # type: ignore[arg-type]
    bind = cas.cas_binder(config, _Store(), [_spec("results"), _spec("extra")])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="mounts no volume 'extra'"):
        bind(_spec("extra"))
