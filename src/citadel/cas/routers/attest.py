"""Attestation endpoints (unauthenticated: the evidence is the credential).

Both are `async`: the attestation's work is short CPU work and an awaited batched commit, so it
runs on the event loop without a thread hop per request.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter

from citadel.cas.deps import Ctx
from citadel.cas.schemas import AttestIn, AttestOut, ErrorOut, NonceOut
from citadel.cas.services import attestation

router = APIRouter(prefix="/v1/attest", tags=["attestation"])


@router.post("/nonce", response_model=NonceOut, summary="A fresh nonce to bind into evidence")
async def nonce(ctx: Ctx) -> NonceOut:
    value, ttl = attestation.issue_nonce(ctx)
    return NonceOut(nonce=base64.b64encode(value).decode(), expires_in=ttl)


@router.post(
    "",
    response_model=AttestOut,
    responses={403: {"model": ErrorOut}},
    summary="Verify evidence and release the service's configuration, sealed to the engine's key",
)
async def attest(body: AttestIn, ctx: Ctx) -> AttestOut:
    request = attestation.AttestRequest(
        body.config_id, body.kind, body.nonce, body.public_key, body.evidence, body.collateral
    )
    sealed = await attestation.attest_async(ctx, request)
    return AttestOut(release=base64.b64encode(sealed).decode())
