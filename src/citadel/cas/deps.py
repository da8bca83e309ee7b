"""FastAPI dependencies: the context of this CAS, and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from citadel.cas.auth import verify_request
from citadel.cas.services.context import CasContext


async def get_ctx(request: Request) -> CasContext:
    return request.app.state.ctx


Ctx = Annotated[CasContext, Depends(get_ctx)]


async def authenticate(request: Request, ctx: Ctx) -> str:
    """The caller's identity from the request signature (auth.py); 401 if absent or wrong."""
    body = await request.body()
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    path = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    return verify_request(request.headers.get("authorization"), request.method, path, body, now=ctx.clock())


Caller = Annotated[str, Depends(authenticate)]
