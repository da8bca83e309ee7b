"""The API's request and response bodies (pydantic), separate from the tables (storage/models.py)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field

MAX_POLICY = 1024 * 1024
MAX_EVIDENCE_B64 = 4 * 1024 * 1024


class ErrorDetail(BaseModel):
    kind: str = Field(description="`error`, or `refusal` for an attestation the CAS refused")
    code: str
    cause: str
    remedy: str = ""
    issues: Optional[List[Dict[str, Any]]] = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class Status(BaseModel):
    status: str
    detail: Dict[str, Any] = Field(default_factory=dict)


class NonceOut(BaseModel):
    nonce: str = Field(description="base64 (standard, padded) of the 48-byte nonce")
    expires_in: float = Field(description="seconds the nonce stays valid")


class AttestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_id: str = Field(max_length=300, description="SESSION/SERVICE")
    kind: str = Field(max_length=16, description="sim, sgx, tdx, snp or tpm")
    nonce: str = Field(max_length=128, description="base64 of the nonce from /v1/attest/nonce")
    public_key: str = Field(max_length=128, description="base64 of the engine's ephemeral X25519 public key")
    evidence: str = Field(max_length=MAX_EVIDENCE_B64, description="base64 of the evidence")
    collateral: Optional[Dict[str, Any]] = Field(None, description="verification collateral, kind-specific")


class AttestOut(BaseModel):
    release: str = Field(description="base64 of the release sealed to public_key (docs/attestation-protocol.md)")


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(max_length=MAX_POLICY, description="the session policy, YAML text")
    source: str = Field("policy", max_length=200, description="file name shown in error messages")
    predecessor: Optional[str] = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="hash of the session replaced (update only)"
    )


class SessionInfoOut(BaseModel):
    name: str
    hash: str
    generation: int
    creator: str
    created_at: float
    updated_at: float


class SessionOut(SessionInfoOut):
    policy: Dict[str, Any] = Field(description="the policy with imported secret values hidden")


class SessionListOut(BaseModel):
    sessions: List[SessionInfoOut]


class PlatformIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    public_key: str = Field(max_length=128, description="raw Ed25519 public key, hex")


class PlatformOut(BaseModel):
    name: str
    kind: str
    fingerprint: str
    public_key: str
    added_by: str
    added_at: float


class PlatformListOut(BaseModel):
    platforms: List[PlatformOut]


class AuditEntryOut(BaseModel):
    seq: int
    at: str
    event: str
    actor: str
    subject: str
    outcome: str
    reason: str
    details: Dict[str, Any]
    hash: str


class AuditPageOut(BaseModel):
    entries: List[AuditEntryOut]
    head_seq: int
    head_hash: str


class WhoAmIOut(BaseModel):
    identity: str
    operator: bool
