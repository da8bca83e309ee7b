"""Verify one piece of evidence with the verifier of its kind; name the registered platform it came from.

- `sim` is checked against the sim platforms registered in the database (by key fingerprint).
- `tpm` is checked against the attestation keys (AKs) of registered TPM platforms (by the AK the
  quote names), plus any the operator pinned in the trust file: an AK nobody registered is
  `unknown_platform`, before any signature is checked.
- `sgx`, `tdx`, `snp` come from `citadel.attest.registry.verifier_for(kind, **trust)` with the trust
  anchors of `--trust FILE`, and are verified at the request's time with collateral read from the
  CAS's collateral cache (`--collateral DIR`, `registry.load_collateral`). Nothing is ever fetched:
  when the cache has nothing for this evidence, the collateral the request carried is used (every
  part of it is verified against the pinned roots, at the current time), else none (an SGX/TDX TCB
  then stays unevaluated, which a session must tolerate; SEV-SNP cannot verify without its VCEK).
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, cast

from sqlalchemy import Table, bindparam, select

from citadel.attest.evidence import KINDS, VerifiedEvidence, Verifier
from citadel.attest.sim import SimVerifier
from citadel.cas.errors import Refused
from citadel.cas.storage import repo
from citadel.cas.storage.models import PlatformRow
from citadel.cas.storage.repo import Db
from citadel.errors import CitadelError, UsageError, VerificationError

ED25519_KEY = 32
# loader checks meaning "the cache has nothing for this evidence" (anything else is refused)
_NOT_IN_CACHE = ("collateral.missing", "snp.collateral")
_REGISTER_TPM = "an operator registers it: `citadel platform add NAME --kind tpm --tpm tcp:HOST:PORT` (or --ak-pem)"

_PLATFORMS = cast(Table, PlatformRow.__table__)
_TPM_BY_FP = select(_PLATFORMS.c.name, _PLATFORMS.c.public_pem).where(
    _PLATFORMS.c.kind == "tpm", _PLATFORMS.c.fingerprint == bindparam("fp")
)
_TPM_ALL = (
    select(_PLATFORMS.c.name, _PLATFORMS.c.public_pem).where(_PLATFORMS.c.kind == "tpm").order_by(_PLATFORMS.c.name)
)
MAX_TPM_CANDIDATES = 256


def tpm_ak(db: Db, fingerprint: str) -> Optional[Tuple[str, str]]:
    """(name, AK PEM) of the registered TPM platform whose AK has this fingerprint, or None."""
    found = db.execute(_TPM_BY_FP, {"fp": fingerprint}).first()
    return (str(found[0]), str(found[1])) if found else None


def tpm_aks(db: Db) -> List[Tuple[str, str]]:
    """(name, AK PEM) of registered TPM platforms (for quotes that do not name their AK)."""
    return [(str(n), str(p)) for n, p in db.execute(_TPM_ALL.limit(MAX_TPM_CANDIDATES)).all()]


class PlatformLookup(Mapping):
    """fingerprint -> raw Ed25519 key of registered sim platforms, read from the database on demand."""

    def __init__(self, db: Db) -> None:
        self._db = db
        self.names: Dict[str, str] = {}
        self._keys: Dict[str, Optional[bytes]] = {}

    def __getitem__(self, fingerprint: str) -> bytes:
        if fingerprint not in self._keys:
            found = repo.platform_by_fingerprint(self._db, fingerprint)
            key = bytes.fromhex(found[1]) if found else None
            self._keys[fingerprint] = key if key is not None and len(key) == ED25519_KEY else None  # sim rows only
            if found and self._keys[fingerprint] is not None:
                self.names[fingerprint] = found[0]
        key = self._keys[fingerprint]
        if key is None:
            raise KeyError(fingerprint)
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, v in self._keys.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for v in self._keys.values() if v is not None)


def _invalid(kind: str, exc: VerificationError) -> Refused:
    code = "unknown_platform" if exc.check == "platform" else "evidence_invalid"
    return Refused(code, f"{kind} evidence rejected: {exc.cause}", exc.remedy)


class VerifierFactory:
    def __init__(self, trust: Mapping[str, Mapping[str, Any]], collateral: Optional[Path] = None) -> None:
        self._trust = {k: dict(v) for k, v in trust.items()}
        self._collateral = collateral
        self._cache: Dict[str, Verifier] = {}

    def verify(
        self,
        kind: str,
        evidence: bytes,
        *,
        at: dt.datetime,
        db: Db,
        request_collateral: Optional[Mapping[str, Any]] = None,
    ) -> Tuple[VerifiedEvidence, str]:
        """The verified evidence and the name of the registered platform it came from ("" if none).

        Raises Refused: unsupported_kind, unknown_platform, or evidence_invalid naming the check.
        """
        if kind not in KINDS:
            raise Refused("unsupported_kind", f"evidence kind {kind!r} is unknown", f"use one of {', '.join(KINDS)}")
        try:
            if kind == "sim":
                lookup = PlatformLookup(db)
                ev = SimVerifier(lookup).verify(evidence, at=at)
                return ev, lookup.names.get(ev.platform, "")
            if kind == "tpm":
                verifier, names = self._tpm(evidence, db)
                ev = verifier.verify(evidence, at=at)  # freshness: the CAS checks the report data binding
                return ev, names.get(ev.platform, "")
            verifier = self._hardware(kind, self._trust.get(kind, {}))
            collateral = self._collateral_for(kind, evidence, request_collateral)
            return verifier.verify(evidence, at=at, collateral=collateral), ""
        except VerificationError as exc:
            raise _invalid(kind, exc) from None

    def _collateral_for(
        self, kind: str, evidence: bytes, request: Optional[Mapping[str, Any]]
    ) -> Optional[Mapping[str, Any]]:
        """The cache's collateral for this evidence; else the request's; else None."""
        if self._collateral is not None:
            registry = importlib.import_module("citadel.attest.registry")
            try:
                found: Optional[Mapping[str, Any]] = registry.load_collateral(kind, self._collateral, evidence)
                return found
            except VerificationError as exc:
                if exc.check not in _NOT_IN_CACHE:
                    raise
            except UsageError:
                pass  # the cache directory went away, or the kind takes no collateral
        return request

    def _tpm(self, evidence: bytes, db: Db) -> Tuple[Verifier, Dict[str, str]]:
        """A TpmVerifier trusting the registered AK the quote names (or all registered, if it names none)."""
        from citadel.attest.tpm.container import parse_container
        from citadel.attest.tpm.verify import ak_fingerprint, load_ak

        container = parse_container(evidence)
        trust = dict(self._trust.get("tpm", {}))
        pinned = trust.pop("trusted_aks", [])
        pinned_list: List[Any] = [pinned] if isinstance(pinned, (str, bytes)) else list(pinned)
        candidates: List[Tuple[str, str]] = [("", p if isinstance(p, str) else p.decode()) for p in pinned_list]
        if container.ak_pem is not None:
            fingerprint = ak_fingerprint(load_ak(container.ak_pem, check="tpm.container"))
            found = tpm_ak(db, fingerprint)
            candidates = ([found] if found else []) + [
                c for c in candidates if ak_fingerprint(load_ak(c[1])) == fingerprint
            ]
            if not candidates:
                raise Refused(
                    "unknown_platform",
                    f"the TPM attestation key ak:{fingerprint[:16]}... is not registered with this CAS",
                    _REGISTER_TPM,
                )
        else:
            candidates = tpm_aks(db) + candidates
            if not candidates:
                raise Refused("unknown_platform", "no TPM platform is registered with this CAS", _REGISTER_TPM)
        names = {f"ak:{ak_fingerprint(load_ak(pem))}": name for name, pem in candidates if name}
        return self._hardware("tpm", {**trust, "trusted_aks": [pem for _, pem in candidates]}, cache=False), names

    def _hardware(self, kind: str, trust: Mapping[str, Any], *, cache: bool = True) -> Verifier:
        if cache and kind in self._cache:
            return self._cache[kind]
        try:
            registry = importlib.import_module("citadel.attest.registry")
            verifier: Verifier = registry.verifier_for(kind, **trust)
        except ImportError:
            raise Refused(
                "unsupported_kind",
                f"this CAS has no verifier for {kind} evidence",
                "install a Citadel release with hardware verifiers",
            ) from None
        except CitadelError as exc:
            raise Refused(
                "unsupported_kind",
                f"the {kind} verifier is not configured: {exc.cause}",
                exc.remedy or "give its trust anchors in the CAS's --trust file",
            ) from None
        if cache:
            self._cache[kind] = verifier
        return verifier
