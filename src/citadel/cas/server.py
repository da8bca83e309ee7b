"""Run the CAS: state directory, TLS identity, database, then uvicorn over TLS.

One worker (the default) serves from a socket bound here, so `--port 0` works and the printed
address is the real one. With `--workers N` uvicorn forks N processes that share the port; each
builds its own context from the settings passed in CITADEL_CAS_SETTINGS.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Callable, Dict, Optional, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI

from citadel.cas import logs
from citadel.cas.app import create_app
from citadel.cas.errors import StateError
from citadel.cas.settings import CasSettings
from citadel.cas.tls import TlsFiles, ensure_tls

SETTINGS_ENV = "CITADEL_CAS_SETTINGS"
ReadyCallback = Callable[[str, TlsFiles], None]


def prepare_tls(settings: CasSettings) -> TlsFiles:
    state = settings.state_dir
    if state.exists() and not state.is_dir():
        raise StateError(f"the state directory {str(state)!r} is a file", "give --state-dir a directory")
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StateError(f"cannot create the state directory {str(state)!r}: {exc.strerror or exc}",
                         "give --state-dir a directory you can write to") from None
    return ensure_tls(settings.state_dir, cert=settings.tls_cert, key=settings.tls_key, sans=settings.tls_sans)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except socket.gaierror as exc:
        raise StateError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "give --host an IP address of this machine (e.g. 127.0.0.1 or 0.0.0.0) or its name") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            remedy = "pick another --port, or stop what is using it"
        elif exc.errno == errno.EACCES:
            remedy = "ports below 1024 need privileges: pick --port 1024 or above"
        else:
            remedy = "check --host is an address of this machine, and --port"
        raise StateError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", remedy) from None
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def serve(
    settings: CasSettings,
    *,
    on_ready: Optional[ReadyCallback] = None,
    extra_routers: Sequence[APIRouter] = (),
) -> None:
    """Serve until interrupted. `on_ready(url, tls)` runs once the port is bound."""
    logs.setup(settings.log_level)
    if settings.workers > 1:
        _serve_workers(settings, on_ready, extra_routers)
        return
    sock = _bind(settings.host, settings.port)  # first: a busy port or a bad --host must leave no new state behind
    try:
        tls = prepare_tls(settings)
        app = create_app(settings, extra_routers=extra_routers)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_options(tls)))
    if on_ready:
        on_ready(url_for(settings.host, port), tls)
    server.run(sockets=[sock])


def _uvicorn_options(tls: TlsFiles) -> Dict[str, Any]:
    return dict(
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        proxy_headers=False,
    )


def _serve_workers(
    settings: CasSettings, on_ready: Optional[ReadyCallback], extra_routers: Sequence[APIRouter]
) -> None:
    """`--workers N`: uvicorn forks N processes that bind the fixed port themselves."""
    if settings.port == 0 or extra_routers:
        raise StateError("--workers needs a fixed --port", "give --port")
    tls = prepare_tls(settings)
    os.environ[SETTINGS_ENV] = settings.to_env()
    if on_ready:
        on_ready(url_for(settings.host, settings.port), tls)
    uvicorn.run(
        "citadel.cas.server:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        **_uvicorn_options(tls),
    )


def app_from_env() -> FastAPI:
    """The app factory uvicorn's worker processes call (settings come from CITADEL_CAS_SETTINGS)."""
    settings = CasSettings.from_env(os.environ[SETTINGS_ENV])
    logs.setup(settings.log_level)
    return create_app(settings)
