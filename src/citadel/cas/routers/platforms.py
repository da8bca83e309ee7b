"""Registered platforms (sim: Ed25519 platform keys; tpm: TPM attestation keys): operators add and
remove them; any client may list them."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from citadel.cas.deps import Caller, Ctx
from citadel.cas.errors import CasServiceError
from citadel.cas.schemas import ErrorOut, PlatformOut
from citadel.cas.services import platforms
from citadel.cas.storage.models import PlatformRow

router = APIRouter(prefix="/v1/platforms", tags=["platforms"])
MAX_PEM = 8192


class PlatformAddIn(BaseModel):
    """A sim platform's Ed25519 key (`public_key`), or a TPM platform's attestation key (`ak_pem`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    kind: Literal["sim", "tpm"] = Field("sim", description="sim (default) or tpm")
    public_key: Optional[str] = Field(None, max_length=128, description="sim: raw Ed25519 public key, hex")
    ak_pem: Optional[str] = Field(
        None, max_length=MAX_PEM, description="tpm: the attestation key, PEM SubjectPublicKeyInfo"
    )


class PlatformKeyOut(PlatformOut):
    ak_pem: Optional[str] = Field(None, description="tpm: the registered attestation key (PEM)")
    platform: str = Field(description="the platform id evidence reports: the fingerprint (sim), ak:<fingerprint> (tpm)")


class PlatformKeyListOut(BaseModel):
    platforms: List[PlatformKeyOut]


_ERRORS: Dict[Union[int, str], Dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409)}


def _out(row: PlatformRow) -> PlatformKeyOut:
    return PlatformKeyOut(
        name=row.name,
        kind=row.kind,
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        added_by=row.added_by,
        added_at=row.added_at,
        ak_pem=row.public_pem,
        platform=f"ak:{row.fingerprint}" if row.kind == "tpm" else row.fingerprint,
    )


@router.get("", response_model=PlatformKeyListOut, responses=_ERRORS, summary="Registered platforms")
def listing(caller: Caller, ctx: Ctx) -> PlatformKeyListOut:
    return PlatformKeyListOut(platforms=[_out(r) for r in platforms.listing(ctx)])


@router.post(
    "",
    status_code=201,
    response_model=PlatformKeyOut,
    responses=_ERRORS,
    summary="Register a sim platform's Ed25519 key or a TPM's attestation key (operators)",
)
def add(body: PlatformAddIn, caller: Caller, ctx: Ctx) -> PlatformKeyOut:
    if body.kind == "tpm":
        if body.ak_pem is None or body.public_key is not None:
            raise CasServiceError(
                "a tpm platform is registered with `ak_pem` (and no public_key)",
                "send the AK's PEM public key: `citadel platform add NAME --kind tpm --tpm tcp:HOST:PORT`",
                code="bad_platform_key",
            )
        return _out(platforms.add_tpm(ctx, caller, body.name, body.ak_pem))
    if body.public_key is None or body.ak_pem is not None:
        raise CasServiceError(
            "a sim platform is registered with `public_key` (and no ak_pem)",
            "send the raw Ed25519 public key in hex: `citadel platform add NAME --key PATH`",
            code="bad_platform_key",
        )
    return _out(platforms.add(ctx, caller, body.name, body.public_key))


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses=_ERRORS,
    summary="Remove a platform (operators)",
)
def remove(
    caller: Caller, ctx: Ctx, name: str = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", max_length=128)
) -> Response:
    platforms.remove(ctx, caller, name)
    return Response(status_code=204)
