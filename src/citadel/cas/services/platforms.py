"""Simulation-mode platforms (registered by operators) and the operators themselves."""

from __future__ import annotations

from typing import Sequence

from sqlalchemy.exc import IntegrityError

from citadel.attest.sim import platform_fingerprint
from citadel.cas.audit import AuditRecord, now_text
from citadel.cas.errors import CasServiceError, Conflict, Forbidden, NotFound
from citadel.cas.services.context import CasContext
from citadel.cas.storage import repo
from citadel.cas.storage.models import PlatformRow


def require_operator(ctx: CasContext, caller: str) -> None:
    with ctx.readers() as db:
        if not repo.is_operator(db, caller):
            raise Forbidden(
                f"{caller[:24]}... is not an operator of this CAS",
                "operators are named with `citadel cas serve --operator ID` (ID from `citadel session whoami`)",
            )


def is_operator(ctx: CasContext, caller: str) -> bool:
    with ctx.readers() as db:
        return repo.is_operator(db, caller)


def add(ctx: CasContext, caller: str, name: str, public_key_hex: str) -> PlatformRow:
    require_operator(ctx, caller)
    try:
        raw = bytes.fromhex(public_key_hex)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise CasServiceError(
            "a sim platform key is 32 bytes (raw Ed25519 public key) in hex",
            "let `citadel platform add NAME --key PATH` read it from the key file",
            code="bad_platform_key",
        )
    fingerprint = platform_fingerprint(raw)
    row = PlatformRow(
        name=name,
        kind="sim",
        public_key=raw.hex(),
        fingerprint=fingerprint,
        added_by=caller,
        added_at=ctx.clock(),
    )
    try:
        with ctx.sessions.begin() as db:
            if repo.get_platform(db, name) is not None or repo.platform_by_fingerprint(db, fingerprint):
                raise _exists(name)
            repo.add_platform(db, row)
            repo.append_audit(
                db,
                ctx.keyring,
                [
                    AuditRecord(
                        0,
                        now_text(),
                        "platform.add",
                        caller,
                        name,
                        "done",
                        "",
                        {"kind": "sim", "fingerprint": fingerprint},
                    )
                ],
            )
    except IntegrityError:
        raise _exists(name) from None
    return row


def _exists(name: str) -> Conflict:
    return Conflict(
        f"platform {name!r} or its key is already registered",
        "`citadel platform list` shows the registered platforms",
        code="exists",
    )


def listing(ctx: CasContext) -> Sequence[PlatformRow]:
    with ctx.readers() as db:
        return repo.list_platforms(db)


def remove(ctx: CasContext, caller: str, name: str) -> None:
    require_operator(ctx, caller)
    with ctx.sessions.begin() as db:
        row = repo.get_platform(db, name)
        if row is None:
            raise NotFound(f"platform {name!r} is not registered", "`citadel platform list` shows them")
        repo.remove_platform(db, name)
        repo.append_audit(
            db,
            ctx.keyring,
            [
                AuditRecord(
                    0,
                    now_text(),
                    "platform.remove",
                    caller,
                    name,
                    "done",
                    "",
                    {"fingerprint": row.fingerprint},
                )
            ],
        )
