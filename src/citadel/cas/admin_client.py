"""The administrative API as Python calls, over a pinned TLS connection with signed requests.

Used by `citadel session ...` and `citadel platform ...`; standard library + `cryptography` only.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citadel.attest.client import CasTransport
from citadel.cas.auth import sign_headers


class AdminClient:
    def __init__(self, url: str, fingerprint: str, key: Ed25519PrivateKey, *, timeout: float = 60.0) -> None:
        self.transport = CasTransport(
            url,
            fingerprint,
            timeout=timeout,
            signer=lambda method, path, body: sign_headers(key, method, path, body),
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def whoami(self) -> Dict[str, Any]:
        return self.transport.call("GET", "/v1/whoami")

    def create_session(self, policy: str, source: str = "policy") -> Dict[str, Any]:
        return self.transport.call("POST", "/v1/sessions", {"policy": policy, "source": source})

    def update_session(
        self, name: str, policy: str, source: str = "policy", predecessor: Optional[str] = None
    ) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"policy": policy, "source": source}
        if predecessor:
            doc["predecessor"] = predecessor
        return self.transport.call("PUT", f"/v1/sessions/{quote(name, safe='')}", doc)

    def show_session(self, name: str) -> Dict[str, Any]:
        return self.transport.call("GET", f"/v1/sessions/{quote(name, safe='')}")

    def list_sessions(self) -> List[Dict[str, Any]]:
        return list(self.transport.call("GET", "/v1/sessions")["sessions"])

    def delete_session(self, name: str) -> None:
        self.transport.call("DELETE", f"/v1/sessions/{quote(name, safe='')}", ok=(204,))

    def add_platform(self, name: str, public_key_hex: str) -> Dict[str, Any]:
        return self.transport.call("POST", "/v1/platforms", {"name": name, "public_key": public_key_hex})

    def list_platforms(self) -> List[Dict[str, Any]]:
        return list(self.transport.call("GET", "/v1/platforms")["platforms"])

    def remove_platform(self, name: str) -> None:
        self.transport.call("DELETE", f"/v1/platforms/{quote(name, safe='')}", ok=(204,))

    def audit_page(self, after: int = 0, limit: int = 100) -> Dict[str, Any]:
        return self.transport.call("GET", f"/v1/audit?after={int(after)}&limit={int(limit)}")
