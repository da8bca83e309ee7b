"""Platforms operators register (sim: an Ed25519 platform key; tpm: a TPM's attestation key) and operators."""

from __future__ import annotations

from typing import Any, Dict, Sequence

from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import IntegrityError

from citadel.attest.sim import platform_fingerprint
from citadel.attest.tpm.verify import ak_fingerprint, load_ak
from citadel.cas.audit import AuditRecord, now_text
from citadel.cas.errors import CasServiceError, Conflict, Forbidden, NotFound
from citadel.cas.services.context import CasContext
from citadel.cas.storage import repo
from citadel.cas.storage.models import PlatformRow
from citadel.errors import VerificationError


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
    """Register a sim platform: the raw Ed25519 public key its engines sign sim evidence with."""
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
        public_pem=None,
        added_by=caller,
        added_at=ctx.clock(),
    )
    return _insert(ctx, caller, row, {"kind": "sim", "fingerprint": fingerprint})


def add_tpm(ctx: CasContext, caller: str, name: str, ak_pem: str) -> PlatformRow:
    """Register a TPM platform: the public key of its Citadel attestation key (AK), PEM.

    Sessions that accept tpm evidence accept quotes signed by registered AKs only. Registering is
    the operator's statement that this AK lives in this machine's TPM (docs/evidence-collection.md).
    """
    require_operator(ctx, caller)
    try:
        key = load_ak(ak_pem.encode("ascii", "replace"))
    except VerificationError:
        raise CasServiceError(
            "the attestation key is not a PEM public key (RSA or ECC SubjectPublicKeyInfo)",
            "let `citadel platform add NAME --kind tpm --tpm tcp:HOST:PORT` read it from the TPM",
            code="bad_platform_key",
        ) from None
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fingerprint = ak_fingerprint(key)
    row = PlatformRow(
        name=name,
        kind="tpm",
        public_key="",
        fingerprint=fingerprint,
        public_pem=pem,
        added_by=caller,
        added_at=ctx.clock(),
    )
    return _insert(ctx, caller, row, {"kind": "tpm", "fingerprint": fingerprint, "platform": f"ak:{fingerprint}"})


def _insert(ctx: CasContext, caller: str, row: PlatformRow, details: Dict[str, Any]) -> PlatformRow:
    try:
        with ctx.sessions.begin() as db:
            if repo.get_platform(db, row.name) is not None or repo.platform_by_fingerprint(db, row.fingerprint):
                raise _exists(row.name)
            repo.add_platform(db, row)
            repo.append_audit(
                db,
                ctx.keyring,
                [AuditRecord(0, now_text(), "platform.add", caller, row.name, "done", "", details)],
            )
    except IntegrityError:
        raise _exists(row.name) from None
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
                    {"kind": row.kind, "fingerprint": row.fingerprint},
                )
            ],
        )
