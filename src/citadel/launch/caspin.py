"""Which CAS key `citadel run` pins for the engine (launcher side, standard library only).

The same rules as the other client commands (`citadel.cas.clientconf.resolve`, docs/cas.md,
"TLS and pinning"), first match wins:

1. ``--cas-fingerprint`` or CITADEL_CAS_FINGERPRINT (remembered for the address, like the other
   commands, once the engine got past the connection);
2. ``~/.config/citadel/known_cas.json`` (address -> pin), written by 1;
3. for a loopback address only, the fingerprint file of the local CAS state directory
   (CITADEL_CAS_STATE_DIR or ~/.local/share/citadel/cas): the CAS this user runs here.

Written again here, without `cryptography` or the CAS client, because importing those costs
`citadel run` about 70 ms before the engine even starts; the engine's own parsers
(`citadel.engine.settings`) give the canonical address and fingerprint, so both agree with
clientconf (tests/unit/launch/test_cas_pin.py compares them). The pin becomes the engine's
CITADEL_CAS_FINGERPRINT setting, which is part of its measurement.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, NamedTuple, Optional

from citadel.engine.settings import parse_cas_addr, parse_fingerprint
from citadel.errors import UsageError

DEFAULT_ADDR = "https://127.0.0.1:8443"


class PinnedCas(NamedTuple):
    url: str  # canonical https://host:port
    fingerprint: str  # 64 lowercase hex digits
    source: str  # where the pin came from
    explicit: bool  # given by flag or environment (remember it)


def config_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "citadel")


def known_path(env: Mapping[str, str]) -> str:
    return os.path.join(config_dir(env), "known_cas.json")


def local_state_dir(env: Mapping[str, str]) -> str:
    if env.get("CITADEL_CAS_STATE_DIR"):
        return env["CITADEL_CAS_STATE_DIR"]
    base = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "citadel", "cas")


def _known(env: Mapping[str, str]) -> Dict[str, str]:
    try:
        with open(known_path(env), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def _is_loopback(url: str) -> bool:
    host = url[len("https://"):].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_pin(addr: Optional[str], fingerprint: Optional[str], env: Optional[Mapping[str, str]] = None
                ) -> PinnedCas:
    """The CAS address (canonical) and the pin for it; UsageError when nothing pins it."""
    environ = os.environ if env is None else env
    url = parse_cas_addr("--cas", addr or environ.get("CITADEL_CAS_ADDR") or DEFAULT_ADDR)
    given = fingerprint or environ.get("CITADEL_CAS_FINGERPRINT")
    if given:
        return PinnedCas(url, parse_fingerprint("--cas-fingerprint", given), "given", True)
    known = _known(environ).get(url)
    if known:
        return PinnedCas(url, parse_fingerprint(known_path(environ), known), known_path(environ), False)
    local = os.path.join(local_state_dir(environ), "tls", "fingerprint")
    if _is_loopback(url) and os.path.isfile(local):
        with open(local, encoding="ascii", errors="replace") as fh:
            text = fh.read(256).strip()
        return PinnedCas(url, parse_fingerprint(local, text), local, False)
    raise UsageError(f"no fingerprint is pinned for the CAS at {url}",
                     "pass --cas-fingerprint (print it with `citadel cas fingerprint` on the CAS's machine); "
                     f"it is remembered in {known_path(environ)}")


def remember(pinned: PinnedCas, env: Optional[Mapping[str, str]] = None) -> None:
    """Record an explicitly given pin in known_cas.json (what clientconf.remember does)."""
    environ = os.environ if env is None else env
    known = _known(environ)
    if known.get(pinned.url) == pinned.fingerprint:
        return
    known[pinned.url] = pinned.fingerprint
    path = known_path(environ)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(known, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def platform_key_path(env: Mapping[str, str]) -> str:
    """The sim platform key (absolute): $CITADEL_PLATFORM_KEY, else ~/.config/citadel/platform.key.

    Resolved here because the engine's clean environment has no XDG_CONFIG_HOME (and its own
    working directory may differ); the same rule as `citadel.attest.sim.default_platform_key_path`.
    """
    given = env.get("CITADEL_PLATFORM_KEY")
    if given:
        return os.path.abspath(given)
    return os.path.abspath(os.path.join(config_dir(env), "platform.key"))
