"""Simulation-mode platforms: operators add and remove them; any client may list them."""

from __future__ import annotations

from typing import Any, Dict, Union

from fastapi import APIRouter, Path, Response

from citadel.cas.deps import Caller, Ctx
from citadel.cas.schemas import ErrorOut, PlatformIn, PlatformListOut, PlatformOut
from citadel.cas.services import platforms
from citadel.cas.storage.models import PlatformRow

router = APIRouter(prefix="/v1/platforms", tags=["platforms"])
_ERRORS: Dict[Union[int, str], Dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409)}


def _out(row: PlatformRow) -> PlatformOut:
    return PlatformOut(
        name=row.name,
        kind=row.kind,
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        added_by=row.added_by,
        added_at=row.added_at,
    )


@router.get("", response_model=PlatformListOut, responses=_ERRORS, summary="Registered sim platforms")
def listing(caller: Caller, ctx: Ctx) -> PlatformListOut:
    return PlatformListOut(platforms=[_out(r) for r in platforms.listing(ctx)])


@router.post(
    "",
    status_code=201,
    response_model=PlatformOut,
    responses=_ERRORS,
    summary="Register a sim platform's Ed25519 key (operators)",
)
def add(body: PlatformIn, caller: Caller, ctx: Ctx) -> PlatformOut:
    return _out(platforms.add(ctx, caller, body.name, body.public_key))


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses=_ERRORS,
    summary="Remove a sim platform (operators)",
)
def remove(
    caller: Caller, ctx: Ctx, name: str = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", max_length=128)
) -> Response:
    platforms.remove(ctx, caller, name)
    return Response(status_code=204)
