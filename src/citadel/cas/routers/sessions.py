"""Sessions (policies): create, list, show, update, delete. Every call is signed (auth.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, Union

from fastapi import APIRouter, Path, Response

from citadel.cas.deps import Caller, Ctx
from citadel.cas.schemas import ErrorOut, PolicyIn, SessionInfoOut, SessionListOut, SessionOut, WhoAmIOut
from citadel.cas.services import platforms, sessions

router = APIRouter(prefix="/v1", tags=["sessions"])
_ERRORS: Dict[Union[int, str], Dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422)}
NamePath = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", max_length=128)


@router.get(
    "/whoami",
    response_model=WhoAmIOut,
    responses={401: {"model": ErrorOut}},
    summary="The caller's identity, as access policies name it",
)
def whoami(caller: Caller, ctx: Ctx) -> WhoAmIOut:
    return WhoAmIOut(identity=caller, operator=platforms.is_operator(ctx, caller))


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionInfoOut,
    responses=_ERRORS,
    summary="Create a session from a YAML policy",
)
def create(body: PolicyIn, caller: Caller, ctx: Ctx) -> SessionInfoOut:
    return SessionInfoOut(**asdict(sessions.create(ctx, caller, body.policy, body.source)))


@router.get("/sessions", response_model=SessionListOut, responses=_ERRORS, summary="The sessions the caller may read")
def listing(caller: Caller, ctx: Ctx) -> SessionListOut:
    return SessionListOut(sessions=[SessionInfoOut(**asdict(i)) for i in sessions.list_readable(ctx, caller)])


@router.get(
    "/sessions/{name}",
    response_model=SessionOut,
    responses=_ERRORS,
    summary="One session: its hash (the next update's predecessor) and its policy, secrets hidden",
)
def show(caller: Caller, ctx: Ctx, name: str = NamePath) -> SessionOut:
    info, policy = sessions.show(ctx, caller, name)
    return SessionOut(**asdict(info), policy=policy)


@router.put(
    "/sessions/{name}",
    response_model=SessionInfoOut,
    responses=_ERRORS,
    summary="Replace a session; the policy (or `predecessor`) must name the current hash",
)
def update(body: PolicyIn, caller: Caller, ctx: Ctx, name: str = NamePath) -> SessionInfoOut:
    info = sessions.update(ctx, caller, body.policy, body.source, body.predecessor, expected_name=name)
    return SessionInfoOut(**asdict(info))


@router.delete(
    "/sessions/{name}",
    status_code=204,
    response_class=Response,
    responses=_ERRORS,
    summary="Delete a session",
)
def delete(caller: Caller, ctx: Ctx, name: str = NamePath) -> Response:
    sessions.delete(ctx, caller, name)
    return Response(status_code=204)
