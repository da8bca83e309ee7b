"""The CAS as `citadel cas serve` runs it, plus two trivial endpoints for the benchmark's baseline.

POST /bench/nonce and POST /bench/echo take the same requests as /v1/attest/nonce and /v1/attest
(the echo parses the same AttestIn body) and answer at once, so the difference between the two
runs is the attestation work, not HTTP, TLS or JSON.

usage: python bench/cas/server.py STATE_DIR [DB_URL] [WORKERS]
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

from fastapi import APIRouter

from citadel.cas import logs
from citadel.cas.app import create_app
from citadel.cas.schemas import AttestIn, AttestOut, NonceOut
from citadel.cas.server import serve
from citadel.cas.settings import CasSettings

router = APIRouter(prefix="/bench")
_RELEASE = base64.b64encode(os.urandom(600)).decode()


@router.post("/nonce", response_model=NonceOut)
async def nonce() -> NonceOut:
    return NonceOut(nonce=base64.b64encode(os.urandom(48)).decode(), expires_in=60)


@router.post("/echo", response_model=AttestOut)
async def echo(body: AttestIn) -> AttestOut:
    return AttestOut(release=_RELEASE)


def factory():  # type: ignore[no-untyped-def]
    settings = CasSettings.from_env(os.environ["CITADEL_CAS_SETTINGS"])
    logs.setup(settings.log_level)
    return create_app(settings, extra_routers=[router])


def main() -> None:
    state = Path(sys.argv[1])
    db_url = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    operator = os.environ["BENCH_OPERATOR"]
    settings = CasSettings.build(state_dir=state, db_url=db_url, port=0, operators=[operator], log_level="warning")

    def ready(url: str, tls) -> None:  # type: ignore[no-untyped-def]
        print(f"citadel CAS listening on {url}", flush=True)
        print(f"TLS fingerprint (clients pin this): sha256:{tls.fingerprint}", flush=True)

    if workers == 1:
        serve(settings, on_ready=ready, extra_routers=[router])
        return
    import socket

    import uvicorn

    from citadel.cas.server import prepare_tls

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings.model_copy(update={"port": port})
    create_app(settings).state.ctx.close()  # migrate once before the workers start
    os.environ["CITADEL_CAS_SETTINGS"] = settings.to_env()
    tls = prepare_tls(settings)
    ready(f"https://127.0.0.1:{port}", tls)
    sys.path.insert(0, str(Path(__file__).parent))
    uvicorn.run(
        "server:factory",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
    )


if __name__ == "__main__":
    main()
