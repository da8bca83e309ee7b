"""Volume commit capabilities: what lets one attested engine commit one volume's tag.

A capability is made for each rollback-protected volume of a release and travels only inside the
release (sealed to the engine's ephemeral key), so only the engine that passed that attestation
holds it. It is the CAS's own authenticated encryption (envelope.py, under the master key's KEK)
of its claims, with a context of its own:

    token  = base64( Keyring.seal(canonical_json(claims), context=b"citadel/cas/volume-capability/v1") )
    claims = {"v": 1, "cfg": config id, "vol": volume name, "inst": the volume row's instance,
              "gen": the volume's commit count at release, "att": hex(SHA-256(nonce)[:16]),
              "pf": platform name or fingerprint, "at": issue time (unix seconds)}

Nothing is stored: any replica with the master key checks it. It stays valid while the volume row
it names exists (a deleted and re-created session has new rows, so old capabilities die with it)
and while the session still mounts the volume in that service (checked at every commit).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict

from citadel.cas.audit import canonical_json
from citadel.cas.envelope import Keyring
from citadel.cas.errors import Forbidden, StateError

CAPABILITY_CONTEXT = b"citadel/cas/volume-capability/v1"
VERSION = 1
MAX_TOKEN = 2048  # base64 characters


@dataclass(frozen=True)
class Capability:
    config_id: str
    volume: str
    instance: str
    generation: int  # commits the CAS had recorded when the release was made
    attestation: str  # first 16 bytes of SHA-256(nonce), hex: names the attestation in the audit log
    platform: str
    issued_at: float


def attestation_id(nonce: bytes) -> str:
    return hashlib.sha256(nonce).digest()[:16].hex()


def issue(keyring: Keyring, cap: Capability) -> str:
    claims = {
        "v": VERSION,
        "cfg": cap.config_id,
        "vol": cap.volume,
        "inst": cap.instance,
        "gen": cap.generation,
        "att": cap.attestation,
        "pf": cap.platform,
        "at": cap.issued_at,
    }
    return base64.b64encode(keyring.seal(canonical_json(claims), context=CAPABILITY_CONTEXT)).decode()


def _invalid() -> Forbidden:
    return Forbidden(
        "the volume capability is not one this CAS issued (or it was changed)",
        "commit with the token the CAS released to this engine for this volume",
        code="invalid_capability",
    )


def verify(keyring: Keyring, token: str, config_id: str, volume: str) -> Capability:
    """The capability's claims, if this CAS issued it for this config id and volume; else Forbidden."""
    try:
        blob = base64.b64decode(token, validate=True)
        claims: Dict[str, Any] = json.loads(keyring.open(blob, context=CAPABILITY_CONTEXT))
        cap = Capability(
            str(claims["cfg"]),
            str(claims["vol"]),
            str(claims["inst"]),
            int(claims["gen"]),
            str(claims["att"]),
            str(claims["pf"]),
            float(claims["at"]),
        )
        if claims["v"] != VERSION:
            raise ValueError("version")
    except (binascii.Error, ValueError, KeyError, TypeError, StateError):
        raise _invalid() from None
    if cap.config_id != config_id or cap.volume != volume:
        raise Forbidden(
            f"the capability was released for volume {cap.volume!r} of {cap.config_id!r}, "
            f"not for volume {volume!r} of {config_id!r}",
            "commit each volume with its own token from the release",
            code="capability_mismatch",
        )
    return cap
