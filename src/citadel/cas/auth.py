"""Who is asking: requests signed with the client's Ed25519 key (no passwords, no tokens).

The CLI makes a key pair on first use (`~/.config/citadel/client.key`, mode 0600). The client's
identity is `ed25519:` + SHA-256 of the raw public key in hex; access policies name identities.
Each administrative request carries

    Authorization: Citadel-Ed25519 key=<b64 raw public key>, ts=<unix seconds>, nonce=<b64 16 bytes>,
                   sig=<b64 signature>

where the signature covers SIGN_LABEL, the method, the path with its query, ts, nonce and the
SHA-256 of the body, one per line (see `canonical_request`). The server accepts ts within
MAX_SKEW seconds of its clock. Requests travel inside TLS pinned to the CAS, so a signature is
never seen by anyone who could replay it elsewhere. Mutual TLS was not chosen because Python's ssl
module cannot accept arbitrary self-made client certificates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from citadel.cas.errors import Unauthenticated
from citadel.errors import CitadelError

SCHEME = "Citadel-Ed25519"
SIGN_LABEL = b"citadel-request-v1"
MAX_SKEW = 300
IDENTITY = re.compile(r"^ed25519:[0-9a-f]{64}$")
_PARAM = re.compile(r"(\w+)=([A-Za-z0-9+/=]+)")


def identity_of(public_raw: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public_raw).hexdigest()


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def canonical_request(method: str, path: str, ts: str, nonce: str, body: bytes) -> bytes:
    return b"\n".join(
        [
            SIGN_LABEL,
            method.upper().encode(),
            path.encode(),
            ts.encode(),
            nonce.encode(),
            hashlib.sha256(body).hexdigest().encode(),
        ]
    )


def sign_headers(
    key: Ed25519PrivateKey, method: str, path: str, body: bytes, now: Optional[float] = None
) -> Dict[str, str]:
    ts = str(int(time.time() if now is None else now))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sig = key.sign(canonical_request(method, path, ts, nonce, body))
    value = (
        f"{SCHEME} key={base64.b64encode(public_raw(key)).decode()}, ts={ts}, nonce={nonce}, "
        f"sig={base64.b64encode(sig).decode()}"
    )
    return {"Authorization": value}


def verify_request(header: Optional[str], method: str, path: str, body: bytes, *, now: float) -> str:
    """Return the caller's identity, or raise Unauthenticated naming what is wrong."""
    remedy = "use the citadel CLI (it signs requests with ~/.config/citadel/client.key)"
    if not header or not header.startswith(SCHEME + " "):
        raise Unauthenticated("this request is not signed", remedy)
    params = dict(_PARAM.findall(header[len(SCHEME) + 1 :]))
    try:
        key_raw = base64.b64decode(params["key"], validate=True)
        sig = base64.b64decode(params["sig"], validate=True)
        ts, nonce = params["ts"], params["nonce"]
        moment = int(ts)
    except (KeyError, ValueError, binascii.Error):
        raise Unauthenticated("the request's signature header is malformed", remedy) from None
    if abs(now - moment) > MAX_SKEW:
        raise Unauthenticated(
            f"the request's time is {int(moment - now)} s off the CAS's clock",
            "set the client's clock (NTP); requests are valid for 5 minutes",
        )
    try:
        Ed25519PublicKey.from_public_bytes(key_raw).verify(sig, canonical_request(method, path, ts, nonce, body))
    except (InvalidSignature, ValueError):
        raise Unauthenticated("the request's signature does not verify", remedy) from None
    return identity_of(key_raw)


class ClientKeyError(CitadelError):
    """The client key file cannot be used."""


def default_client_key_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("CITADEL_CLIENT_KEY"):
        return Path(env["CITADEL_CLIENT_KEY"])
    return config_dir(env) / "client.key"


def config_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "citadel"


def load_or_create_client_key(path: Path) -> Tuple[Ed25519PrivateKey, bool]:
    """The client's signing key; made (mode 0600) on first use. Returns (key, created)."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made concurrently by another process: use that one
            return load_or_create_client_key(path)
        except OSError as exc:
            raise ClientKeyError(
                f"cannot make the client key {str(path)!r}: {exc.strerror or exc}",
                "set CITADEL_CLIENT_KEY (or pass --client-key) to a path in a directory you can write to",
            ) from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return key, True
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ClientKeyError(
            f"cannot use the client key {str(path)!r}: {getattr(exc, 'strerror', None) or exc}",
            "move it away to make a new one (your identity changes), or fix CITADEL_CLIENT_KEY",
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ClientKeyError(
            f"the client key {str(path)!r} is not an Ed25519 key",
            "move it away to make a new one, or fix CITADEL_CLIENT_KEY",
        )
    return loaded, False
