"""Which verifier checks which evidence kind.

`sim` is checked here against the platforms registered in the database (looked up by key
fingerprint, on the request's connection). Every hardware kind (sgx, tdx, snp, tpm) comes from
`citadel.attest.registry.verifier_for(kind, **trust)`, with the trust anchors the operator
configured for that kind (`--trust FILE`); a new verifier plugs in there without any change here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Dict, Iterator, Optional, Tuple

from citadel.attest.evidence import KINDS, Verifier
from citadel.attest.sim import SimVerifier
from citadel.cas.errors import Refused
from citadel.cas.storage import repo
from citadel.cas.storage.repo import Db
from citadel.errors import CitadelError


class PlatformLookup(Mapping):
    """fingerprint -> raw Ed25519 key of registered sim platforms, read from the database on demand."""

    def __init__(self, db: Db) -> None:
        self._db = db
        self.names: Dict[str, str] = {}
        self._keys: Dict[str, Optional[bytes]] = {}

    def __getitem__(self, fingerprint: str) -> bytes:
        if fingerprint not in self._keys:
            found = repo.platform_by_fingerprint(self._db, fingerprint)
            self._keys[fingerprint] = bytes.fromhex(found[1]) if found else None
            if found:
                self.names[fingerprint] = found[0]
        key = self._keys[fingerprint]
        if key is None:
            raise KeyError(fingerprint)
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, v in self._keys.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for v in self._keys.values() if v is not None)


class VerifierFactory:
    def __init__(self, trust: Mapping[str, Mapping[str, Any]]) -> None:
        self._trust = {k: dict(v) for k, v in trust.items()}
        self._cache: Dict[str, Verifier] = {}

    def for_kind(self, kind: str, db: Db) -> Tuple[Verifier, Dict[str, str]]:
        """The verifier for `kind`, and (filled as it verifies) names of platforms by fingerprint."""
        if kind not in KINDS:
            raise Refused("unsupported_kind", f"evidence kind {kind!r} is unknown", f"use one of {', '.join(KINDS)}")
        if kind == "sim":
            lookup = PlatformLookup(db)
            return SimVerifier(lookup), lookup.names
        if kind not in self._cache:
            self._cache[kind] = self._hardware(kind)
        return self._cache[kind], {}

    def _hardware(self, kind: str) -> Verifier:
        try:
            registry = importlib.import_module("citadel.attest.registry")
        except ImportError:
            registry = None
        if registry is None or not hasattr(registry, "verifier_for"):
            raise Refused(
                "unsupported_kind",
                f"this CAS has no verifier for {kind} evidence",
                "install a Citadel release with hardware verifiers",
            )
        try:
            return registry.verifier_for(kind, **self._trust.get(kind, {}))
        except CitadelError as exc:
            raise Refused(
                "unsupported_kind",
                f"the {kind} verifier is not configured: {exc.cause}",
                exc.remedy or "give its trust anchors in the CAS's --trust file",
            ) from None
