"""The FastAPI application: routers, error rendering, request metrics and logs.

`create_app(settings)` opens the state (database, master key, writer) and returns the ASGI app;
`citadel cas serve` runs it on uvicorn with TLS (server.py). Routes stay thin: they parse,
call a service, and shape the answer; CasServiceError subclasses become {"error": {...}}.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from citadel import __version__
from citadel.cas.errors import CasServiceError
from citadel.cas.metrics import Metrics
from citadel.cas.routers import attest, audit, health, platforms, sessions, volumes
from citadel.cas.services.context import CasContext, build_context
from citadel.cas.settings import CasSettings
from citadel.errors import CitadelError

log = logging.getLogger("citadel.cas.http")
MAX_BODY = 6 * 1024 * 1024


class ObserveMiddleware:
    """Pure ASGI: bounds request bodies, counts and times requests, logs one JSON line per request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
                await _too_large(send)
                self._observe(scope, 413, started)
                return
        seen = [0]

        async def bounded_receive() -> Dict[str, Any]:
            message = await receive()
            seen[0] += len(message.get("body", b""))
            if seen[0] > MAX_BODY:
                return {"type": "http.disconnect"}
            return message

        async def observed_send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, bounded_receive, observed_send)
        finally:
            self._observe(scope, status[0] or 500, started)

    def _observe(self, scope: Dict[str, Any], status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.requests.labels(scope["method"], route, str(status)).inc()
        self.metrics.request_seconds.labels(route).observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            client = scope.get("client") or ("", 0)
            log.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "client": client[0],
                    }
                },
            )


async def _too_large(send: Any) -> None:
    body = b'{"error":{"kind":"error","code":"too_large","cause":"request body too large","remedy":""}}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CasServiceError)
    return JSONResponse(exc.body(), status_code=exc.http_status)


def _state_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CitadelError)
    log.error("state error", extra={"fields": {"cause": exc.cause}})
    return JSONResponse(
        {"error": {"kind": "error", "code": "unavailable", "cause": exc.cause, "remedy": exc.remedy}},
        status_code=503,
    )


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues: List[Dict[str, Any]] = [
        {"path": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg"))} for e in exc.errors()[:20]
    ]
    first = issues[0] if issues else {"path": "", "message": "invalid request"}
    return JSONResponse(
        {
            "error": {
                "kind": "error",
                "code": "invalid_request",
                "cause": f"{first['path']}: {first['message']}",
                "remedy": "see the API's OpenAPI document at /openapi.json",
                "issues": issues,
            }
        },
        status_code=422,
    )


def create_app(
    settings: CasSettings, *, context: Optional[CasContext] = None, extra_routers: Sequence[APIRouter] = ()
) -> FastAPI:
    ctx = context or build_context(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()

    app = FastAPI(
        title="Citadel CAS",
        version=__version__,
        lifespan=lifespan,
        description="Configuration and Attestation Service: policies (sessions), attestation, "
        "configuration release. Administrative calls are signed (docs/cas.md).",
    )
    app.state.ctx = ctx
    for router in (
        health.router,
        attest.router,
        sessions.router,
        platforms.router,
        audit.router,
        volumes.router,
        *extra_routers,
    ):
        app.include_router(router)
    app.add_exception_handler(CasServiceError, _service_error)
    app.add_exception_handler(CitadelError, _state_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(ObserveMiddleware, metrics=ctx.metrics)
    return app
