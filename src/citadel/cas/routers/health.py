"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from citadel.cas.deps import Ctx
from citadel.cas.schemas import Status
from citadel.cas.storage import db as dbmod

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status, summary="The process is up")
async def live() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz",
    response_model=Status,
    responses={503: {"model": Status}},
    summary="The database answers, its schema is current, and the audit writer runs",
)
def ready(ctx: Ctx) -> Response:
    detail: Dict[str, Any] = {"writer": not ctx.writer.closed}
    try:
        detail["schema_current"] = dbmod.at_head(ctx.engine)
    except SQLAlchemyError as exc:
        detail["database"] = type(exc).__name__
    ok = detail.get("schema_current") is True and not ctx.writer.closed
    return JSONResponse(
        Status(status="ready" if ok else "not ready", detail=detail).model_dump(),
        status_code=200 if ok else 503,
    )


@router.get("/metrics", summary="Prometheus metrics of this process", response_class=Response)
def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
