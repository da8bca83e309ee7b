"""Volume endpoints: engines commit tags with the capability their release carried; owners (signed
requests, the session's access policy) fetch a volume's key and latest tag and commit their imports.

All are plain `def`: each runs one short database transaction (in FastAPI's thread pool).
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Union

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from citadel.cas.deps import Caller, Ctx
from citadel.cas.schemas import ErrorOut
from citadel.cas.services import volumes

router = APIRouter(tags=["volumes"])
_ERRORS: Dict[Union[int, str], Dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422)}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class EngineCommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_id: str = Field(max_length=300, description="SESSION/SERVICE, as attested")
    volume: str = Field(max_length=128, description="the volume's name")
    old_tag: str = Field(max_length=64, description='the tag the engine\'s state is based on ("" for a new volume)')
    new_tag: str = Field(max_length=64, description="the tag of the state to record")
    token: str = Field(max_length=2048, description="the volume's capability from the release (base64)")


class EngineStateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_id: str = Field(max_length=300)
    volume: str = Field(max_length=128)
    token: str = Field(max_length=2048)


class OwnerCommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    old_tag: str = Field(max_length=64, description='the tag the owner\'s change is based on ("" for a new volume)')
    new_tag: str = Field(max_length=64)
    base_generation: Optional[int] = Field(
        None, ge=0, le=2**62, description="the commit count the key request reported (tells races from rollbacks)"
    )


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access: Literal["read", "update"] = Field(description="read: show or export; update: create or import")
    service: Optional[str] = Field(None, pattern=_NAME, description="check that this service mounts the volume")


class CommitOut(BaseModel):
    volume: str
    tag: str
    generation: int = Field(description="commits the CAS has recorded for the volume")
    repeated: bool = Field(description="the CAS already held this tag (a retried request)")


class StateOut(BaseModel):
    volume: str
    tag: Optional[str] = Field(description="the latest recorded tag; null if never committed")
    generation: int


class VolumeKeyOut(BaseModel):
    session: str
    volume: str
    update_policy: str
    mount: Optional[str] = Field(description="the mount path (the service's, or the volume's default)")
    key: str = Field(description="the volume key, 64 hex digits")
    tag: Optional[str] = Field(description="the latest recorded tag; null if never committed (or ephemeral)")
    generation: int


@router.post(
    "/v1/volumes/commit",
    response_model=CommitOut,
    responses=_ERRORS,
    summary="An engine records a volume's new tag: compare-and-swap from the tag it opened (capability)",
)
def engine_commit(body: EngineCommitIn, ctx: Ctx) -> CommitOut:
    result = volumes.commit_by_engine(ctx, body.config_id, body.volume, body.old_tag, body.new_tag, body.token)
    return CommitOut(volume=body.volume, tag=result.tag, generation=result.generation, repeated=result.repeated)


@router.post(
    "/v1/volumes/state",
    response_model=StateOut,
    responses=_ERRORS,
    summary="An engine asks for a volume's latest recorded tag (capability)",
)
def engine_state(body: EngineStateIn, ctx: Ctx) -> StateOut:
    tag, generation = volumes.state_for_engine(ctx, body.config_id, body.volume, body.token)
    return StateOut(volume=body.volume, tag=tag, generation=generation)


@router.post(
    "/v1/sessions/{name}/volumes/{volume}/key",
    response_model=VolumeKeyOut,
    responses=_ERRORS,
    summary="An owner fetches a volume's key and latest tag (read or update access; audited)",
)
def owner_key(
    body: KeyIn,
    caller: Caller,
    ctx: Ctx,
    name: str = Path(pattern=_NAME, max_length=128),
    volume: str = Path(pattern=_NAME, max_length=128),
) -> VolumeKeyOut:
    grant = volumes.owner_grant(ctx, caller, name, volume, body.access, body.service)
    return VolumeKeyOut(
        session=name,
        volume=volume,
        update_policy=grant.mount.update_policy,
        mount=grant.mount.mount or None,
        key=grant.key.hex(),
        tag=grant.tag,
        generation=grant.generation,
    )


@router.post(
    "/v1/sessions/{name}/volumes/{volume}/commit",
    response_model=CommitOut,
    responses=_ERRORS,
    summary="An owner records a volume's new tag (update access): compare-and-swap",
)
def owner_commit(
    body: OwnerCommitIn,
    caller: Caller,
    ctx: Ctx,
    name: str = Path(pattern=_NAME, max_length=128),
    volume: str = Path(pattern=_NAME, max_length=128),
) -> CommitOut:
    result = volumes.commit_by_owner(ctx, caller, name, volume, body.old_tag, body.new_tag, body.base_generation)
    return CommitOut(volume=volume, tag=result.tag, generation=result.generation, repeated=result.repeated)
