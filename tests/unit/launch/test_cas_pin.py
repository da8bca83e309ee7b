"""`citadel run` pins the CAS key by the same rules as the other client commands (citadel.cas.clientconf),
without importing the CAS client; both resolvers are run on the same files and must agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import pytest

from citadel.cas import clientconf
from citadel.errors import CitadelError, UsageError
from citadel.launch.caspin import platform_key_path, remember, resolve_pin

PIN = "6d" * 32
KNOWN = "4e" * 32
LOCAL = "1a" * 32


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    home = tmp_path / "home"
    (home / ".config" / "citadel").mkdir(parents=True)
    (home / ".config" / "citadel" / "known_cas.json").write_text(
        json.dumps({"https://cas.example:9443": f"sha256:{KNOWN}", "https://127.0.0.1:8443": KNOWN}))
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    (state / "tls" / "fingerprint").write_text(LOCAL + "\n")
    return {"HOME": str(home), "CITADEL_CAS_STATE_DIR": str(state)}


@pytest.mark.parametrize("addr, given, expected, source", [
    ("https://cas.example:9443", PIN, PIN, "given"),
    ("cas.example:9443/", None, KNOWN, "known_cas.json"),
    ("https://127.0.0.1:8443", None, KNOWN, "known_cas.json"),
    ("https://127.0.0.1:9000", None, LOCAL, "fingerprint"),
    ("https://localhost:9000", None, LOCAL, "fingerprint"),
    ("https://[::1]:9000", None, LOCAL, "fingerprint"),
    (None, None, KNOWN, "known_cas.json"),  # the default address
])
def test_the_same_pin_as_the_other_client_commands(env: Dict[str, str], addr: Optional[str],
                                                    given: Optional[str], expected: str, source: str) -> None:
    ours = resolve_pin(addr, given, env)
    theirs = clientconf.resolve(addr, given, env)
    assert (ours.url, ours.fingerprint, ours.explicit) == (theirs.url, theirs.fingerprint, theirs.explicit)
    assert ours.fingerprint == expected and ours.source.endswith(source)


def test_the_environment_gives_the_address_and_the_pin(env: Dict[str, str]) -> None:
    env.update({"CITADEL_CAS_ADDR": "https://10.0.0.7:8443", "CITADEL_CAS_FINGERPRINT": f"sha256:{PIN}"})
    pinned = resolve_pin(None, None, env)
    assert (pinned.url, pinned.fingerprint, pinned.explicit) == ("https://10.0.0.7:8443", PIN, True)


def test_no_trust_on_first_use(env: Dict[str, str]) -> None:
    with pytest.raises(UsageError) as ours:
        resolve_pin("https://10.0.0.7:8443", None, env)
    with pytest.raises(CitadelError) as theirs:
        clientconf.resolve("https://10.0.0.7:8443", None, env)
    assert ours.value.cause == theirs.value.cause == "no fingerprint is pinned for the CAS at https://10.0.0.7:8443"
    assert "--cas-fingerprint" in ours.value.remedy


def test_a_remembered_pin_is_found_by_both(env: Dict[str, str]) -> None:
    remember(resolve_pin("https://10.0.0.7:8443", f"sha256:{PIN}", env), env)
    assert resolve_pin("https://10.0.0.7:8443", None, env).fingerprint == PIN
    assert clientconf.resolve("https://10.0.0.7:8443", None, env).fingerprint == PIN


def test_the_platform_key_path_follows_the_sim_module(env: Dict[str, str], tmp_path: Path) -> None:
    from citadel.attest.sim import default_platform_key_path

    assert platform_key_path(env) == str(default_platform_key_path(env))
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    assert platform_key_path(env) == str(default_platform_key_path(env))
    env["CITADEL_PLATFORM_KEY"] = "/keys/platform.key"
    assert platform_key_path(env) == "/keys/platform.key"
