"""Which CAS a client talks to and which key it pins (the CLI's side; no server code).

Resolution of the pin for an address, first match wins:
1. `--cas-fingerprint` or CITADEL_CAS_FINGERPRINT (remembered for the address after a successful call);
2. `~/.config/citadel/known_cas.json`, written by 1;
3. for a loopback address only: the fingerprint file of the local CAS state directory
   (CITADEL_CAS_STATE_DIR or ~/.local/share/citadel/cas), i.e. the CAS this user runs here.
There is no trust on first use: an unknown CAS without a pin is an error that says where to find it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

from citadel.attest.client import CasError, is_loopback, normalize_fingerprint, parse_cas_address
from citadel.cas.auth import config_dir

DEFAULT_ADDR = "https://127.0.0.1:8443"


@dataclass(frozen=True)
class Endpoint:
    url: str  # canonical https://host:port
    fingerprint: str
    source: str  # where the pin came from
    explicit: bool  # given by flag or environment (remember it)


def canonical(addr: str) -> str:
    host, port = parse_cas_address(addr)
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def known_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    return config_dir(environ) / "known_cas.json"


def _known(environ: Mapping[str, str]) -> Dict[str, str]:
    try:
        doc = json.loads(known_path(environ).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def remember(endpoint: Endpoint, environ: Optional[Mapping[str, str]] = None) -> None:
    env = os.environ if environ is None else environ
    known = _known(env)
    if known.get(endpoint.url) == endpoint.fingerprint:
        return
    known[endpoint.url] = endpoint.fingerprint
    path = known_path(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def local_state_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("CITADEL_CAS_STATE_DIR"):
        return Path(environ["CITADEL_CAS_STATE_DIR"])
    base = environ.get("XDG_DATA_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "citadel" / "cas"


def resolve(addr: Optional[str], fingerprint: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Endpoint:
    env = os.environ if environ is None else environ
    url = canonical(addr or env.get("CITADEL_CAS_ADDR") or DEFAULT_ADDR)
    given = fingerprint or env.get("CITADEL_CAS_FINGERPRINT")
    if given:
        return Endpoint(url, normalize_fingerprint(given), "given", True)
    known = _known(env).get(url)
    if known:
        return Endpoint(url, normalize_fingerprint(known), str(known_path(env)), False)
    host, _ = parse_cas_address(url)
    local = local_state_dir(env) / "tls" / "fingerprint"
    if is_loopback(host) and local.is_file():
        return Endpoint(url, normalize_fingerprint(local.read_text()), str(local), False)
    raise CasError(
        f"no fingerprint is pinned for the CAS at {url}",
        "pass --cas-fingerprint (print it with `citadel cas fingerprint` on the CAS's machine); "
        f"it is remembered in {known_path(env)}",
    )
