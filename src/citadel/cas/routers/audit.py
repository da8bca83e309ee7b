"""The audit log, for operators (`citadel cas audit verify` checks it in the database directly)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from citadel.cas.deps import Caller, Ctx
from citadel.cas.schemas import AuditEntryOut, AuditPageOut, ErrorOut
from citadel.cas.services import audit_view

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "",
    response_model=AuditPageOut,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    summary="Audit entries after a sequence number, oldest first (operators)",
)
def page(
    caller: Caller, ctx: Ctx, after: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000)
) -> AuditPageOut:
    entries, head_seq, head_hash = audit_view.page(ctx, caller, after, limit)
    return AuditPageOut(
        entries=[
            AuditEntryOut(
                seq=r.seq,
                at=r.at,
                event=r.event,
                actor=r.actor,
                subject=r.subject,
                outcome=r.outcome,
                reason=r.reason,
                details=r.details,
                hash=h,
            )
            for r, h in entries
        ],
        head_seq=head_seq,
        head_hash=head_hash,
    )
