"""The CAS's settings, validated once at start (flags of `citadel cas serve`, or the environment)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field, ValidationError, field_validator

from citadel.cas.auth import IDENTITY
from citadel.cas.errors import StateError
from citadel.cas.storage.db import sqlite_url

DEFAULT_PORT = 8443
HARDWARE_KINDS = ("sgx", "tdx", "snp", "tpm")


def default_state_dir() -> Path:
    if os.environ.get("CITADEL_CAS_STATE_DIR"):
        return Path(os.environ["CITADEL_CAS_STATE_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "citadel" / "cas"


class CasSettings(BaseModel):
    state_dir: Path = Field(default_factory=default_state_dir)
    db_url: Optional[str] = None  # None: SQLite file cas.db in the state directory
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    tls_sans: List[str] = Field(default_factory=list)
    master_key_file: Optional[Path] = None  # None: master.key in the state directory
    operators: List[str] = Field(default_factory=list)
    nonce_ttl: float = Field(60.0, gt=0, le=3600)
    workers: int = Field(1, ge=1, le=64)
    log_level: str = "info"
    trust: Dict[str, Dict[str, Any]] = Field(default_factory=dict)  # per evidence kind: verifier arguments
    collateral: Optional[Path] = None  # the collateral cache directory (Intel PCS / AMD KDS files)

    @field_validator("operators")
    @classmethod
    def _identities(cls, value: List[str]) -> List[str]:
        for item in value:
            if not IDENTITY.match(item):
                raise ValueError(f"{item!r} is not a client identity (ed25519:<64 hex>)")
        return value

    @field_validator("collateral")
    @classmethod
    def _collateral_dir(cls, value: Optional[Path]) -> Optional[Path]:
        if value is not None and not value.is_dir():
            raise ValueError(f"{str(value)!r} is not a directory (fill one with `citadel collateral fetch`)")
        return value.resolve() if value is not None else None

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log level is debug, info, warning or error")
        return value.lower()

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.state_dir)

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.state_dir / "master.key"

    @classmethod
    def build(cls, **values: Any) -> CasSettings:
        """Validate, turning pydantic's report into one StateError naming the setting."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StateError(f"setting {where}: {first['msg']}", "see `citadel cas serve --help`") from None

    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls, text: str) -> CasSettings:
        return cls(**json.loads(text))


def load_trust(path: Optional[Path]) -> Dict[str, Dict[str, Any]]:
    """The verifiers' trust anchors: a JSON object {kind: {argument: value}} (docs/cas.md)."""
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StateError(
            f"cannot read the trust file {str(path)!r}: {exc}",
            "give a JSON object mapping evidence kinds to verifier settings",
        ) from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise StateError(
            f"the trust file {str(path)!r} is not an object of objects",
            'for example {"sgx": {"root": "/etc/citadel/intel-root.pem"}, "tpm": {"trusted_aks": ["<PEM>"]}}',
        )
    for kind, arguments in doc.items():
        check_trust(kind, arguments, path)
    return doc


def check_trust(kind: str, arguments: Dict[str, Any], path: Path) -> None:
    """Build the verifier once, so a bad trust file stops the CAS at start, not each attestation."""
    from citadel.attest import registry
    from citadel.errors import CitadelError

    if kind not in HARDWARE_KINDS:
        raise StateError(
            f"the trust file {str(path)!r} configures {kind!r}, which is not a hardware evidence kind",
            f"use {', '.join(HARDWARE_KINDS)} (sim platforms are registered with `citadel platform add`)",
        )
    try:
        registry.verifier_for(kind, **arguments)
    except TypeError as exc:
        raise StateError(
            f"the trust file's {kind!r} arguments do not fit its verifier: {exc}", "see docs/cas.md, --trust"
        ) from None
    except CitadelError as exc:
        raise StateError(
            f"the trust file's {kind!r} anchors are unusable: {exc.cause}", "fix the trust file (docs/cas.md, --trust)"
        ) from None
